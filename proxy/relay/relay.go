package relay

import (
	"context"
	"log/slog"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/rawmsg"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// HeaderCluster names, on every response (and in the trailer of streams),
// the cluster that served it.
const HeaderCluster = "x-milvus-ha-cluster"

// Handler is what the relay asks of the proxy: the routing of each call.
// The relay owns the connections, the framing, flow control and the
// edge checks; the Handler decides where a call goes and what answer it
// gets.
type Handler interface {
	// StartUnary takes a complete unary request on the client
	// connection's reader goroutine, so it must not block: it answers
	// with c.Finish (from any goroutine, exactly once), or hands the
	// call to a worker with c.Dispatch. It owns req.
	StartUnary(c *Call, req *rawmsg.Msg, fl *Flush)
	// Unary runs a unary call on a worker goroutine, where it may block.
	// It returns the response (owned by the relay from then on) or the
	// error, and the cluster to name in HeaderCluster ("" for none). It
	// does not own req.
	Unary(c *Call, req *rawmsg.Msg) (resp *rawmsg.Msg, cluster string, err error)
	// Stream runs a streaming call on a goroutine of its own. Once it
	// has sent the client's header (started) it delivers the outcome
	// through cs itself; otherwise the relay answers with err, naming
	// cluster.
	Stream(c *Call, cs ClientStream) (cluster string, started bool, err error)
	// Health is the serving status for grpc.health.v1 and a channel
	// closed when it changes.
	Health() (healthpb.HealthCheckResponse_ServingStatus, <-chan struct{})
	// Draining reports whether the proxy is shutting down (health
	// watches end).
	Draining() bool
}

// Method is one method the relay serves besides grpc.health.v1.
type Method struct {
	Path   string // "/package.Service/Method"
	Stream bool   // a streaming method (Handler.Stream), else unary
}

// CallHook sees each call as it starts (and may change the
// metadata going on, as a grpc interceptor would); the function it
// returns is called once with the call's outcome.
type CallHook func(ctx context.Context, fullMethod string, md metadata.MD) (context.Context, func(error))

// ServerOptions configure a Server.
type ServerOptions struct {
	Handler Handler
	// Methods are the methods served; Call.Method is an index into it.
	// Any other :path is answered Unimplemented.
	Methods []Method
	// Service is the service grpc.health.v1 knows by name (besides "").
	Service        string
	Limits         Limits
	MaxMessageSize int
	// Creds, when set, make client connections TLS.
	Creds    credentials.TransportCredentials
	CallHook CallHook
	// Observer, when set, is told about refusals and closed connections.
	Observer Observer
	Logger   *slog.Logger
}

// Context is the call's context: cancelled when the client resets the
// stream or leaves, with the client's grpc-timeout as its deadline.
func (st *Call) Context() context.Context { return st.ctx }

// Method is the call's index in ServerOptions.Methods.
func (st *Call) Method() int { return st.method }

// Remote is the client's address.
func (st *Call) Remote() string { return st.d.remote }

// DB is the client's dbname header.
func (st *Call) DB() string { return st.mdDB }

// Identifier is the client's identifier header.
func (st *Call) Identifier() string { return st.ident }

// Forward is the client's metadata that goes on to the backend, as
// header fields (read-only).
func (st *Call) Forward() []hpack.HeaderField { return st.fwd }

// Metadata is Forward as gRPC metadata, for a grpc-go client stream.
func (st *Call) Metadata() metadata.MD { return fieldsMD(st.fwd) }

// Request is how the call goes on to a cluster: its context, path and
// forwarded metadata.
func (st *Call) Request() Request {
	return Request{Ctx: st.ctx, Path: st.d.r.paths[st.method], Forward: st.fwd, acct: &st.acct}
}

// Dispatch hands a unary call taken by Handler.StartUnary to a worker,
// which runs Handler.Unary.
func (st *Call) Dispatch(req *rawmsg.Msg) {
	st.msg.done = append(st.msg.done[:0], req)
	st.d.r.dispatch(st)
}

// Finish answers a call taken by Handler.StartUnary and ends it: resp
// (which it frees) or err, naming cluster in HeaderCluster when not "".
// With fl (on a connection's reader goroutine) it never blocks: the
// flush is left to fl, and an answer the client's windows do not admit
// waits for credit on a goroutine of its own. Without fl it may block.
func (st *Call) Finish(cluster string, resp *rawmsg.Msg, err error, fl *Flush) {
	d := st.d
	switch {
	case err != nil:
		d.respondErr(st, cluster, err)
	case fl == nil:
		d.respond(st, cluster, resp)
		resp.Free()
	case !d.respondNow(st, cluster, resp, fl):
		// The client's windows are full: a goroutine waits for credit.
		go func() {
			d.respond(st, cluster, resp)
			resp.Free()
			d.endUnary(st)
		}()
		return
	default:
		resp.Free()
	}
	d.endUnary(st)
}

// endUnary ends a call taken by Handler.StartUnary.
func (d *dconn) endUnary(st *Call) {
	d.endStream(st)
	d.r.active.Done()
}

// startUnary takes a complete unary request on the connection's reader
// goroutine: the Handler's fast path when it is a single uncompressed
// message, a worker otherwise.
func (d *dconn) startUnary(st *Call, fl *flushList) {
	if st.kind != kindUnary || len(st.msg.done) != 1 || st.msg.partial() || st.msg.done[0].Compressed {
		d.r.dispatch(st)
		return
	}
	req := st.msg.done[0]
	st.msg.done = st.msg.done[:0]
	d.r.h.StartUnary(st, req, fl)
}

// Flush is the flush list of the goroutine that reads a connection: what
// it writes on its way is flushed once, when it has handled what it read.
type Flush = flushList

// Exchange is one request and answer on a cluster connection, made for a
// client call without blocking: Pool.Bind picks the connection, Start
// sends. It lives in the caller's state (no allocation of its own) until
// its done function has run.
type Exchange struct {
	u    *uconn
	us   ustream
	ref  upRef // the backend stream, for the client's RST_STREAM
	call *Call
	done Completion
}

// Completion is told when an Exchange ends.
type Completion interface {
	// ExchangeDone runs exactly once per started Exchange, normally on
	// the cluster connection's reader goroutine, with its flush list; it
	// must not block.
	ExchangeDone(x *Exchange, fl *Flush)
}

// Bind picks for x a connection to cl that is open and has room for a
// stream. It reports false when there is none (getting one would mean
// dialing): the caller then makes the attempt the blocking way
// (RoundTrip).
func (r *Pool) Bind(x *Exchange, cl *topology.Cluster) bool {
	*x = Exchange{u: r.connNow(cl)}
	return x.u != nil
}

// Start sends req for call c on the connection Bind picked, without
// waiting for flow-control credit. It reports false when nothing was sent
// (no window, or the connection just closed): the caller then makes the
// attempt the blocking way. On true, done runs exactly once with the
// outcome (Result), normally on the cluster connection's reader goroutine
// with its flush list; a client's reset of c resets the backend stream
// too.
func (x *Exchange) Start(c *Call, req *rawmsg.Msg, fl *Flush, done Completion) bool {
	u := x.u
	x.call, x.done = c, done
	x.us = ustream{xch: x}
	r := c.Request()
	written, err := u.open(&r, &x.us, req, fl)
	if err != nil && !written {
		return false
	}
	x.ref = upRef{u: u, id: x.us.id}
	c.abortUp.Store(&x.ref)
	if err != nil {
		// Part of the request went out, then writing failed: the
		// connection is broken. Failing it ends every stream on it, this
		// one included, exactly once, through done, with "connection to
		// cluster lost" (Unavailable: a write's outcome is unknown, a read
		// moves on). Handing the call to a worker as well ended it twice
		// and could send it twice; ending it with the bare socket error
		// answered the client Unknown.
		u.fail(err, fl)
	}
	return true
}

func (x *Exchange) onDone(fl *flushList) {
	x.call.abortUp.Store(nil)
	x.done.ExchangeDone(x, fl)
}

// Result is the finished exchange's outcome: the response, or the error
// and whether the request may have been processed (sent).
func (x *Exchange) Result(cluster string) (resp *rawmsg.Msg, sent bool, err error) {
	return x.us.result(cluster)
}

// Refused reports whether the cluster refused the stream before
// processing it (REFUSED_STREAM, or past a GOAWAY's last stream id):
// sending it again is safe.
func (x *Exchange) Refused() bool { return x.us.refused }

// upRef names a backend stream a fast call waits on, so that a client's
// RST_STREAM can reset it too.
type upRef struct {
	u  *uconn
	id uint32
}

func (r *upRef) abort() { r.u.abort(r.id, http2.ErrCodeCancel, errStreamReset) }

// Forwardable reports whether a client metadata key goes on to the
// backend. Everything does (authorization, dbname, identifier, request
// ids, trace context, user-agent) except HTTP/2 pseudo-headers, hop-by-hop
// headers and the keys gRPC owns on each hop.
func Forwardable(k string) bool {
	if k == "" || k[0] == ':' {
		return false
	}
	switch k {
	case "content-type", "te", "host", "connection", "keep-alive",
		"proxy-connection", "transfer-encoding", "upgrade",
		"grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "grpc-message-type",
		"grpc-status", "grpc-message", "grpc-status-details-bin",
		"grpc-previous-rpc-attempts", "grpc-retry-pushback-ms":
		return false
	}
	return true
}
