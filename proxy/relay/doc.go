// Package relay is the proxy's HTTP/2 engine: it speaks gRPC over HTTP/2
// itself on both sides — frames parsed and written with
// golang.org/x/net/http2's Framer and hpack — so that a call costs one
// read and one write per hop and, on the fast path, no goroutine
// hand-off at all. It owns the client connections (Server), the
// connections to the clusters (Pool), framing, flow control, the
// per-connection budgets and the edge validation of requests. It knows
// nothing of Milvus: where a call goes is decided by the proxy through
// Handler (package proxy, engine_relay.go and fast.go), which answers a
// Call with Call.Finish or returns from Handler.Unary; a fast-path
// attempt at a cluster is an Exchange (Pool.Bind, Exchange.Start). The
// message type both sides carry is rawmsg.Msg.
//
// # Files
//
//   - server.go: Server and its client connections (dconn) and streams
//     (Call): accept, handshake, the reader's frame handling, edge
//     checks, answers, drain.
//   - client.go: Pool and its cluster connections (uconn) and streams
//     (ustream): dial, keepalive, RoundTrip, the reader.
//   - h2.go: what both sides share: the frame writer (h2writer), the
//     client connection's output (connOut), flow control (flow), header
//     block reading and request validation (headerReader, checkRequest),
//     gRPC's timeout and message encodings.
//   - relay.go: the API the proxy uses (Handler, Call, Exchange).
//   - budget.go: the response budget: bytes of cluster answers held per
//     client connection and in all, enforced by withholding stream
//     window from the clusters.
//
// # Goroutines
//
// Every goroutine is owned by the struct that starts it and ends with it:
//
//   - accept loop: Server.Serve, one per listener; ends when Shutdown
//     closes the listener. Accept errors other than a closed listener
//     (EMFILE, ENFILE, ...) are retried with back-off, never fatal. It
//     starts one handshake goroutine per connection.
//   - client reader: handshake → dconn.serve, one per client connection;
//     it reads frames, does flow control, PING, SETTINGS and GOAWAY, and
//     runs Handler.StartUnary inline, so nothing on it may block. It ends
//     when the connection fails or is closed (dconn.close), after
//     HandshakeTimeout without the preface, or after IdleTimeout without
//     a call (graceful GOAWAY first).
//   - client writer: handshake → connOut.run, one per client connection:
//     the only goroutine that writes to the client's socket, under
//     WriteTimeout; others append frames to its buffer. A client that
//     stops reading is closed after WriteTimeout, or when its buffer
//     passes 4 × ConnOutputBuffer + 4 MiB. It ends when dconn.close
//     finishes it (after a linger of at most a second for what is
//     queued).
//   - workers: NewServer starts max(64, 16 × GOMAXPROCS) for unary calls
//     that may block (Handler.Unary); when all are busy, dispatch starts
//     a goroutine for the call instead of queueing. Shutdown stops them.
//   - stream handler: one goroutine per streaming call (runStream →
//     Handler.Stream); it ends with the call, which ends when the client
//     resets or leaves (the Call's context).
//   - fast-path answer: Call.Finish with a flush list starts one goroutine
//     only when the client's flow-control windows do not admit the answer
//     at once; it waits for credit and ends with the call.
//   - backend reader: uconn.start → uconn.readLoop, one per cluster
//     connection; it reads the cluster's answers and finishes fast-path
//     exchanges inline (Completion.ExchangeDone). It never writes to a
//     client socket: answers go to the client writer's buffer. It ends
//     when the connection fails (uconn.fail; Pool.Close fails all).
//   - PING acknowledgements: ackFlusher.run, one per Server and one per
//     Pool, started when a PING's acknowledgement is left in a
//     connection's buffer to ride with the next write (h2.go,
//     pingAckDelay); it flushes those still there after pingAckDelay to
//     twice that, and ends when none was left for two sweeps.
//   - backend keepalive: uconn.start → uconn.keepalive, one per cluster
//     connection; it pings a connection silent for the keepalive time and
//     fails it when nothing arrives within the timeout. It ends with the
//     connection.
//
// # Locks
//
// In the order they may be taken (outermost first); none is held across
// a network wait:
//
//  1. Server.mu (listeners, connections, draining) and Pool.mu (the
//     connections by cluster, keepalive times).
//  2. h2writer's lock (lock/unlock): serializes frame encoding on one
//     connection; the last writer out flushes for all queued behind it,
//     and a reader defers its flushes to the end of what it read (Flush),
//     so one read's answers leave in one write. On a client connection it
//     also guards connOut's buffer.
//  3. dconn.mu and uconn.mu: a connection's stream map, stream ids,
//     GOAWAY state. uconn.open takes the writer's lock, then uconn.mu.
//  4. flow.mu: connection and stream flow-control windows; DATA waits
//     here (flow.take) when the peer's window or the client's output
//     budget is exhausted — on a worker, never on a reader.
//  5. connBudget.mu (a client connection's response budget: charges,
//     receiving and held backend streams), then respBudget.mu (the
//     connections with held streams). uconn.open registers a stream
//     under uconn.mu; a resume returns window after releasing both, and
//     the client writer resumes outside the writer's lock.
//  6. Leaves: msgQueue.mu, Call.hookMu, connOut.deadlineMu,
//     ackFlusher.mu (taken under a writer's lock).
//
// # RFC 9113
//
// Implemented, and checked by h2spec (proxy's TestH2Spec: the relay
// passes all 145 cases of h2spec 2.2.1):
//
//   - the connection preface and SETTINGS exchange (sections 3.4, 6.5),
//     with out-of-range values a connection error;
//   - frame sizes (4.2): our SETTINGS_MAX_FRAME_SIZE is 16 KiB
//     (MaxFrameSize); a larger frame is a FRAME_SIZE_ERROR;
//   - header compression and header blocks (4.3, 6.2, 6.10): a block's
//     encoded bytes, CONTINUATION frames and time are bounded
//     (headerReader), SETTINGS_MAX_HEADER_LIST_SIZE is announced and
//     enforced;
//   - stream states and identifiers (5.1, 5.1.1): frames on idle or
//     closed streams, even or decreasing stream ids are connection
//     errors; SETTINGS_MAX_CONCURRENT_STREAMS is announced and enforced
//     (REFUSED_STREAM past it);
//   - flow control (5.2, 6.9) on both sides, with window overflow past
//     2^31−1 an error;
//   - error handling (5.4): connection errors end with GOAWAY and the
//     code, stream errors with RST_STREAM; the abuse of resets, PINGs,
//     SETTINGS and empty frames closes the connection with
//     ENHANCE_YOUR_CALM, as Go's net/http2 and grpc-go do;
//   - graceful shutdown (6.8): GOAWAY in two phases (the last stream id
//     after a PING round trip);
//   - HTTP semantics as gRPC needs them (8.1, 8.2, 8.3): request
//     pseudo-headers, lower-case names, no connection-specific fields,
//     te: trailers, content-length against DATA; a non-gRPC request is
//     answered 405 or 415 as grpc-go does, never forwarded.
//
// Deliberately not implemented: stream priorities (5.3; RFC 9113
// deprecates the scheme, and PRIORITY frames are read and checked for
// self-dependency only), server push (8.4; disabled towards the
// clusters with SETTINGS_ENABLE_PUSH 0, and a client's PUSH_PROMISE is a
// connection error), CONNECT (8.5), and HTTP/1.1 upgrade (3.2): clients
// speak HTTP/2 with prior knowledge, or TLS.
//
// # Budgets
//
// Limits bounds each client connection: concurrent streams, header list
// size, handshake, idle and write timeouts, output buffer, ping policy,
// rates of resets and control frames (DefaultLimits; the proxy exposes
// them as config keys). A request message's buffer grows with the bytes
// that arrive, not with its length prefix (msgAssembler); a unary stream
// with a second message is refused at once; compressed requests inflate
// up to the message size limit. The bytes of cluster answers held for a
// client connection are bounded by back-pressure on the clusters, not by
// buffering (budget.go: ConnResponseBuffer, ResponseBuffer,
// BackendStreamWindow). Refusals, closes and held streams are reported
// to the Observer.
package relay
