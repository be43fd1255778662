package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/stats"
)

// Response memory budget of the grpc engine: the relay's (proxy/relay,
// budget.go) for the grpc-go server and client, with the same limits
// (relay.conn_response_buffer, relay.response_buffer, docs/config.md).
//
// A unary answer is received whole from the cluster (its Milvus status
// decides whether another cluster is tried) and handed to grpc-go's
// server, which queues it until the client's flow control lets it out. A
// client that does not read, or grants no window, would make the proxy
// hold every answer it asks for. The budget bounds that memory by
// back-pressure on the cluster, never by buffering more:
//
//   - The bytes of answers handed to grpc-go and not yet written to the
//     client's socket (or dropped with their stream) are charged to the
//     client connection and to a process-wide total. grpc-go frees an
//     answer's buffers exactly then (its writer releases a message once
//     its last byte is written, or when the stream is cleaned up), so a
//     zero-length buffer of ours at the end of the answer, whose pool is
//     the call's charge, is released at that moment (grpcRespAcct.Put).
//   - A call's answer is received only when the budget admits it: the
//     call sends its request, waits for the answer's headers (a Milvus
//     server sends them with the first message, so the cluster's work is
//     not held up), then waits for admission before it reads the message.
//     Until then the cluster can send only the call's stream window
//     (relay.backend_stream_window, the initial window of the clusters'
//     grpc-go connections: BackendDialOptionsFor), and the rest waits in the
//     cluster. The connection's window keeps flowing (grpc-go returns it
//     on receipt): other clients' calls on the same connection go on.
//   - Admission: the connection's charges, plus one estimated answer per
//     call of it receiving now (at most grpcMaxReceiving), are under its
//     budget and the process's charges under the process-wide one; or no
//     call of the connection is
//     receiving and its charges are under its budget, so that one answer
//     larger than the budget still completes and a connection always
//     moves once its client reads, whatever the other connections hold.
//     Waiting calls are admitted oldest first.
//
//   - A connection over its budget, with calls waiting for admission, or
//     with as many calls in flight as the estimate of its answers allows
//     (openLocked), holds its new calls before they are sent (start): they
//     would only wait too, each with a stream window of answer, and the
//     cluster need not compute answers its client does not read.
//   - The common call skips the wait for headers: while the connection's
//     charges and estimated answers in flight are under half its budget,
//     and the process's under half its own, up to grpcMaxEarly calls of
//     the connection are admitted before they are sent (start) and
//     read their answers as they come, as grpc-go's Invoke does.
//
// A connection so holds at most its budget plus about one answer (up to
// grpcMaxReceiving + grpcMaxEarly when the answers grow suddenly past the
// estimate: a decaying maximum of the last ones, the budget at first),
// plus one stream window per call in flight (grpcMinSent for answers as
// large as the budget).
//
// grpc-go would compress an answer to a client that compressed its
// request into a buffer of its own, out of the budget's sight; the grpc
// engine answers uncompressed, as the relay does.
//
// The connection is found from the call's context: a stats.Handler
// (grpcBudgetStats) puts it there in TagConn, and grpc-go derives every
// stream's context from the connection's (grpc.StatsHandler).

// grpcRespBudget is the process-wide budget of the grpc engine and the
// connections with calls waiting because of it.
type grpcRespBudget struct {
	limit     int64
	connLimit int64
	minEst    int64 // the least an answer is estimated at (one stream window)
	used      atomic.Int64
	held      atomic.Int64 // calls waiting for admission now
	mem       relay.MemoryReturn
	event     func(RelayEvent) // nil: nothing to tell
	// tail is the backing of every end-of-answer buffer: they are empty
	// (nothing reads or writes it), but grpc-go's buffers call their pool
	// only for capacities above 1 KiB (mem.IsBelowBufferPoolingThreshold).
	tail *[]byte

	mu      sync.Mutex
	waiting map[*grpcConnBudget]struct{} // connections with waiting calls
}

func newGRPCRespBudget(lim RelayLimits, event func(RelayEvent)) *grpcRespBudget {
	tail := make([]byte, 0, 2<<10)
	return &grpcRespBudget{
		limit: lim.ResponseBuffer, connLimit: int64(lim.ConnResponseBuffer),
		minEst: int64(lim.BackendStreamWindow), event: event, tail: &tail,
		waiting: map[*grpcConnBudget]struct{}{},
	}
}

// grpcConnBudget is one client connection's budget.
type grpcConnBudget struct {
	g     *grpcRespBudget
	limit int64

	mu        sync.Mutex
	used      int64         // bytes charged and not released
	est       int64         // estimated size of the next answer: a decaying maximum
	receiving int           // admitted calls reading their answer
	early     int           // calls admitted before their answer's headers (start)
	sent      int           // calls sent and not yet done (start to done)
	waiters   []*grpcWaiter // calls waiting for admission, oldest first
	gate      []*grpcWaiter // calls waiting to be sent (start)
	closed    bool          // the connection ended: its charges left the total
	// peaked is set once a call of the connection waited.
	peaked bool
}

// grpcWaiter is one call waiting for admission.
type grpcWaiter struct {
	ready    chan struct{} // closed when admitted
	admitted bool          // under the connection's mu
}

func (g *grpcRespBudget) newConn() *grpcConnBudget {
	// The first answer is assumed as large as the budget: a client that
	// opens with a burst of big answers must not have them all admitted
	// at once.
	return &grpcConnBudget{g: g, limit: g.connLimit, est: max(g.connLimit, g.minEst)}
}

// grpcMaxReceiving bounds the calls of one connection reading their
// answers at once, whatever the estimate: a client whose small answers
// brought it down cannot then have a burst of large ones all admitted.
// Only the transfer is counted (the cluster computed the answer already),
// which on a cluster's connection takes a fraction of the call.
// grpcMaxEarly bounds the calls admitted before their answer's headers
// (start): as many as an SDK commonly has in flight on its one
// connection, so that they skip the wait for headers (a goroutine and a
// wake-up more per call), and few enough that such a burst of answers
// larger than estimated stays near the budget.
const (
	grpcMaxReceiving = 4
	grpcMaxEarly     = 8
)

// admitsLocked reports whether the connection's next call may receive its
// answer (under b.mu).
func (b *grpcConnBudget) admitsLocked() bool {
	if b.receiving < grpcMaxReceiving && b.used+int64(b.receiving+b.early)*b.est < b.limit && b.g.used.Load() < b.g.limit {
		return true
	}
	return b.receiving == 0 && b.used < b.limit
}

// admit waits until the budget lets the call read its answer; nil means
// it may, and received must follow. It fails only when ctx ends.
func (b *grpcConnBudget) admit(ctx context.Context) error {
	b.mu.Lock()
	if b.closed || (len(b.waiters) == 0 && b.admitsLocked()) {
		b.receiving++
		b.mu.Unlock()
		return nil
	}
	w := &grpcWaiter{ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.peaked = true
	b.g.hold(b)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	if w.admitted {
		// Admitted as the call ended: give the turn on.
		b.receiving--
		b.wakeLocked()
		b.mu.Unlock()
		return ctx.Err()
	}
	for i, x := range b.waiters {
		if x == w {
			b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
			break
		}
	}
	b.g.resumed(b, b.idleLocked())
	// The head may have been waiting behind us.
	b.wakeLocked()
	b.mu.Unlock()
	return ctx.Err()
}

// openLocked reports whether a new call of the connection may be sent
// (under b.mu): none waits for admission, its charges are under its
// budget, and it has fewer calls in flight than 8 times the answers its
// budget could take, by the estimate (grpcMinSent at least).
func (b *grpcConnBudget) openLocked() bool {
	return b.closed || (len(b.waiters) == 0 && b.used < b.limit &&
		int64(b.sent) < max(grpcMinSent, 8*b.limit/b.est))
}

// grpcMinSent is the least number of calls a connection may have in
// flight while it is under its budget: with small answers (the common
// case) the estimate allows many more (8 MiB / 64 KiB answers: 1024,
// max_concurrent_streams); with answers as large as the budget (a new
// connection's first estimate) a burst of calls past this many is held
// before it is sent, each holding no stream window of answer.
const grpcMinSent = 32

// start is called before a call is sent; it fails only when ctx ends
// first (the call was not sent), else done must follow. A connection over
// its budget, with calls waiting for admission, or with as many calls in
// flight as its budget could take answers of, holds its new calls before
// they are sent, oldest first:
// they would only wait for admission too, each holding a stream window
// of answer, and the cluster need not compute answers the client does
// not read. Then a call is admitted at once (early) when the connection
// and the process are far under their budgets (half, with one more
// estimated answer per call so admitted): the common call reads its
// answer as soon as it comes (grpc-go's Invoke), with no wait for the
// answer's headers first.
func (b *grpcConnBudget) start(ctx context.Context) (early bool, err error) {
	b.mu.Lock()
	if !b.openLocked() || len(b.gate) > 0 {
		w := &grpcWaiter{ready: make(chan struct{})}
		b.gate = append(b.gate, w)
		b.peaked = true
		b.g.hold(b)
		b.mu.Unlock()
		select {
		case <-w.ready:
		case <-ctx.Done():
		}
		b.mu.Lock()
		if !w.admitted {
			for i, x := range b.gate {
				if x == w {
					b.gate = append(b.gate[:i], b.gate[i+1:]...)
					break
				}
			}
			b.g.resumed(b, b.idleLocked())
			b.mu.Unlock()
			return false, ctx.Err()
		}
		if err := ctx.Err(); err != nil {
			// Let through as the call ended: give the turn on.
			b.sent--
			b.wakeLocked()
			b.mu.Unlock()
			return false, err
		}
	} else {
		b.sent++
	}
	early = !b.closed && len(b.waiters) == 0 && b.early < grpcMaxEarly &&
		b.used+int64(b.receiving+b.early+1)*b.est <= b.limit/2 && b.g.used.Load() < b.g.limit/2
	if early {
		b.early++
	}
	b.mu.Unlock()
	return early, nil
}

// idleLocked reports whether no call of b waits (under b.mu).
func (b *grpcConnBudget) idleLocked() bool { return len(b.waiters) == 0 && len(b.gate) == 0 }

// done ends a call that start let through; n bytes of answer are charged
// to a. early is start's answer, admitted whether admit let it read.
func (b *grpcConnBudget) done(a *grpcRespAcct, n int64, early, admitted bool) {
	b.mu.Lock()
	b.sent--
	if early {
		b.early--
	}
	if admitted {
		b.receiving--
	}
	if n > 0 {
		a.n += n
		b.used += n
		// A decaying maximum: large answers are remembered for a while
		// after small ones.
		b.est = max(n, b.est-b.est/8, b.g.minEst)
		if !b.closed {
			b.g.mem.Charged(b.g.used.Add(n))
		}
	}
	b.wakeLocked()
	b.mu.Unlock()
}

// release gives back n bytes charged to the connection.
func (b *grpcConnBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	closed := b.closed
	b.wakeLocked()
	b.mu.Unlock()
	if !closed {
		b.g.uncharge(n)
	}
}

// admitFront admits the calls at the front of q while can says so,
// counting each in *count, and returns how many it admitted.
func admitFront(q *[]*grpcWaiter, count *int, can func() bool) int {
	n := 0
	for n < len(*q) && can() {
		w := (*q)[n]
		w.admitted = true
		*count++
		close(w.ready)
		n++
	}
	if n > 0 {
		clear((*q)[:n])
		*q = (*q)[n:]
	}
	return n
}

// wakeLocked admits the waiting calls the budget lets in now, oldest
// first, then lets the held new calls be sent if the connection is open
// (under b.mu).
func (b *grpcConnBudget) wakeLocked() {
	n := admitFront(&b.waiters, &b.receiving, func() bool { return b.closed || b.admitsLocked() })
	m := admitFront(&b.gate, &b.sent, b.openLocked)
	for i := 0; i < n+m; i++ {
		b.g.resumed(b, i == n+m-1 && b.idleLocked())
	}
}

// close takes the charges of a connection that ended out of the total
// (grpc-go may never free the answers it still queued for it), and gives
// memory back a moment later if the connection held calls.
func (b *grpcConnBudget) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	used, peaked := b.used, b.peaked
	b.wakeLocked() // their contexts end with the connection; let them go
	b.mu.Unlock()
	b.g.uncharge(used)
	if peaked {
		// A moment for its calls to end and free their answers.
		time.AfterFunc(time.Second, func() { b.g.mem.ConnLeft(b.g.used.Load()) })
	}
}

// uncharge takes n bytes off the total; the connections with waiting
// calls are retried when the total goes back under its budget.
func (g *grpcRespBudget) uncharge(n int64) {
	if left := g.used.Add(-n); left < g.limit && left+n >= g.limit {
		g.resumeAll()
	}
}

// hold records a newly waiting call of b (under b.mu).
func (g *grpcRespBudget) hold(b *grpcConnBudget) {
	g.held.Add(1)
	g.mu.Lock()
	g.waiting[b] = struct{}{}
	g.mu.Unlock()
	if g.event != nil {
		g.event(RelayStreamHeld)
	}
}

// resumed records a waiting call of b admitted or gone; last says b has
// no more (under b.mu).
func (g *grpcRespBudget) resumed(b *grpcConnBudget, last bool) {
	g.held.Add(-1)
	if last {
		g.mu.Lock() // lock order: b.mu, then g.mu
		delete(g.waiting, b)
		g.mu.Unlock()
	}
	if g.event != nil {
		g.event(RelayStreamResumed)
	}
}

// resumeAll retries every connection with waiting calls.
func (g *grpcRespBudget) resumeAll() {
	g.mu.Lock()
	bs := make([]*grpcConnBudget, 0, len(g.waiting))
	for b := range g.waiting {
		bs = append(bs, b)
	}
	g.mu.Unlock()
	for _, b := range bs {
		b.mu.Lock()
		b.wakeLocked()
		b.mu.Unlock()
	}
}

// grpcRespAcct is one call's charges against its connection's budget: the
// answers received for it (a call may try several clusters). When the
// call returns an answer the charges ride on it to grpc-go, as the pool
// of an empty buffer at its end; grpc-go frees that buffer, calling Put,
// once the answer was written or dropped.
type grpcRespAcct struct {
	b *grpcConnBudget
	n int64 // under b.mu until the call ends
}

// finish settles the charges of a call that ended with resp (nil on
// error): they go with the answer to grpc-go, or are released now.
func (a *grpcRespAcct) finish(resp *frame) {
	b := a.b
	b.mu.Lock()
	n := a.n
	b.mu.Unlock()
	if n == 0 {
		return
	}
	if resp == nil || !resp.Give || len(resp.Tail) > 0 {
		// Not an answer whose buffers move to grpc-go with nothing
		// after ours (local answers and errors): released now.
		a.n = 0
		b.release(n)
		return
	}
	resp.Data = append(resp.Data, mem.NewBuffer(b.g.tail, a))
}

// Get implements mem.BufferPool; grpc-go does not call it on a buffer's
// pool.
func (a *grpcRespAcct) Get(int) *[]byte {
	b := make([]byte, 0, 2<<10)
	return &b
}

// Put implements mem.BufferPool: grpc-go freed the end of the answer.
func (a *grpcRespAcct) Put(*[]byte) {
	b := a.b
	b.mu.Lock()
	n := a.n
	a.n = 0
	b.mu.Unlock()
	b.release(n)
}

// grpcBudgetStats puts each client connection's budget in its context and
// closes it when the connection ends (grpc.StatsHandler).
type grpcBudgetStats struct{ g *grpcRespBudget }

type connBudgetKey struct{}

func (h grpcBudgetStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connBudgetKey{}, h.g.newConn())
}

func (h grpcBudgetStats) HandleConn(ctx context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnEnd); ok {
		if b, ok := ctx.Value(connBudgetKey{}).(*grpcConnBudget); ok {
			b.close()
		}
	}
}

func (grpcBudgetStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (grpcBudgetStats) HandleRPC(context.Context, stats.RPCStats)                       {}

// grpcCallAcct returns the charges of a call of the grpc engine (nil
// without a budget: a call not from a client connection). An answer to a
// compressed request is sent uncompressed (see above).
func grpcCallAcct(ctx context.Context) *grpcRespAcct {
	b, ok := ctx.Value(connBudgetKey{}).(*grpcConnBudget)
	if !ok {
		return nil
	}
	if st, ok := grpc.ServerTransportStreamFromContext(ctx).(interface{ RecvCompress() string }); ok {
		if rc := st.RecvCompress(); rc != "" && rc != encoding.Identity {
			// Best effort: only fails once headers were sent.
			_ = grpc.SetSendCompressor(ctx, encoding.Identity)
		}
	}
	return &grpcRespAcct{b: b}
}

// ResponseBuffered reports the bytes of cluster answers the proxy holds
// now for its clients, charged against the response budgets
// (relay.conn_response_buffer, relay.response_buffer), and how many calls
// are held back because of them, whichever the engine.
func (s *Server) ResponseBuffered() (bytes, held int64) {
	if s.relay != nil {
		return s.relay.ResponseBuffered()
	}
	if s.gbudget == nil {
		return 0, 0
	}
	return s.gbudget.used.Load(), s.gbudget.held.Load()
}
