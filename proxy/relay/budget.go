package relay

import (
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Response memory budget of the relay engine.
//
// A unary answer is received whole before it is judged (its Milvus status
// decides whether another cluster is tried) and then written to the client
// under the client's flow control. A client that does not read — or grants
// no window — would make the proxy hold every answer it asks for. The
// budget bounds that memory by back-pressure on the cluster, never by
// buffering more: the bytes received for a client connection's calls and
// not yet handed to its socket are charged to the connection (and to a
// process-wide total), and while the connection, or the process, is over
// its budget the relay stops returning stream window (WINDOW_UPDATE,
// RFC 9113 section 6.9) for that connection's backend streams, so the
// cluster stops sending them. The backend connection's own window keeps
// flowing: it is shared with other clients' calls.
//
// Each backend stream may run ahead of the budget by the initial stream
// window the relay grants clusters (Limits.BackendStreamWindow), so a
// connection holds at most its budget plus one window per open call. One
// answer larger than the budget still completes: the connection's oldest
// backend stream is granted window while the connection's complete
// answers waiting for the client are under the budget, so that a large
// answer never waits for itself.
//
// Charges are released when the call ends (the answer was copied to the
// connection's output, or the client left); the output waiting for the
// socket counts against the connection's budget too. Resuming is driven
// by those releases, by the writer draining, and by the oldest stream
// changing.

// respBudget is the process-wide budget and the connections holding
// streams because of it.
type respBudget struct {
	limit int64
	used  atomic.Int64
	// held counts the backend streams held now (all connections).
	held atomic.Int64
	// mem gives memory back once a connection that held answers left.
	mem MemoryReturn
	// event reports a stream held or resumed (nil: nothing to tell).
	event func(ev Event)

	mu      sync.Mutex
	waiting map[*connBudget]struct{} // connections with held streams
}

func newRespBudget(limit int64, event func(Event)) *respBudget {
	return &respBudget{limit: limit, event: event, waiting: map[*connBudget]struct{}{}}
}

// connBudget is one client connection's budget.
type connBudget struct {
	g     *respBudget
	limit int64
	out   *connOut // its queued output counts too (nil in tests)

	mu      sync.Mutex
	used    int64      // bytes charged and not released
	partial int64      // of used: bytes of backend streams still receiving
	open    []*ustream // receiving backend streams, oldest first
	held    []*ustream // streams whose window is withheld
	// nheld is len(held), for the writer's lock-free look.
	nheld atomic.Int32
	// peaked is set once the connection held a stream back.
	peaked atomic.Bool
}

func newConnBudget(g *respBudget, limit int64, out *connOut) *connBudget {
	return &connBudget{g: g, limit: limit, out: out}
}

// respAcct is one client call's charges against its connection's budget.
// Its backend streams (a call may try several clusters) charge it; the
// call's end releases it.
type respAcct struct {
	b *connBudget
	n int64 // under b.mu
}

// register makes us one of the connection's receiving streams; unregister
// must follow when it ends.
func (a *respAcct) register(us *ustream) {
	b := a.b
	b.mu.Lock()
	us.acct = a
	us.registered = true
	b.open = append(b.open, us)
	b.mu.Unlock()
}

// unregister forgets a backend stream that ended (its bytes stay charged
// to the call until it ends). The next oldest stream may now move.
func (us *ustream) unregister() {
	a := us.acct
	if a == nil || !us.registered {
		return
	}
	b := a.b
	b.mu.Lock()
	us.registered = false
	b.partial -= us.partial
	us.partial = 0
	oldest := len(b.open) > 0 && b.open[0] == us
	b.open = removeStream(b.open, us)
	wasHeld := us.held
	if wasHeld {
		us.held = false
		b.held = removeStream(b.held, us)
		b.nheld.Store(int32(len(b.held)))
	}
	more := len(b.held) > 0
	b.mu.Unlock()
	if wasHeld {
		b.g.resumed()
	}
	if oldest && more {
		b.resume()
	}
}

func removeStream(s []*ustream, us *ustream) []*ustream {
	for i, x := range s {
		if x == us {
			copy(s[i:], s[i+1:])
			s[len(s)-1] = nil
			return s[:len(s)-1]
		}
	}
	return s
}

// charge counts n bytes received on us against its call.
func (us *ustream) charge(n int) {
	a := us.acct
	b := a.b
	b.mu.Lock()
	if !us.registered {
		// It ended (the client reset the call, which may be over and
		// released already): nothing more is charged.
		b.mu.Unlock()
		return
	}
	a.n += int64(n)
	b.used += int64(n)
	us.partial += int64(n)
	b.partial += int64(n)
	b.mu.Unlock()
	g := b.g
	g.mem.Charged(g.used.Add(int64(n)))
}

// release gives back everything the call was charged (the call ended).
func (a *respAcct) release() {
	b := a.b
	if b == nil {
		return
	}
	b.mu.Lock()
	n := a.n
	a.n = 0
	b.used -= n
	more := len(b.held) > 0
	b.mu.Unlock()
	if n == 0 {
		return
	}
	g := b.g
	if left := g.used.Add(-n); left < g.limit && left+n >= g.limit {
		g.resumeAll()
	} else if more {
		b.resume()
	}
}

// grant reports whether us may be given more window now; if not, us is
// held until resume finds room.
func (us *ustream) grant() bool {
	b := us.acct.b
	b.mu.Lock()
	if b.admits(us) {
		b.mu.Unlock()
		return true
	}
	if !us.held {
		us.held = true
		b.held = append(b.held, us)
		b.nheld.Store(int32(len(b.held)))
		b.peaked.Store(true)
		b.g.hold(b)
	}
	b.mu.Unlock()
	return false
}

// admits reports whether us may have more window (under b.mu): the
// connection and the process are under their budgets, or us is the
// connection's oldest receiving stream and the connection's complete
// answers are under its budget.
func (b *connBudget) admits(us *ustream) bool {
	var queued int64
	if b.out != nil {
		queued = b.out.queued.Load()
	}
	if b.used+queued < b.limit && b.g.used.Load() < b.g.limit {
		return true
	}
	return len(b.open) > 0 && b.open[0] == us && b.used-b.partial+queued < b.limit
}

// resume returns the withheld window of the held streams the budget admits
// now.
func (b *connBudget) resume() {
	b.mu.Lock()
	var wake []*ustream
	keep := b.held[:0]
	for _, us := range b.held {
		if b.admits(us) {
			us.held = false
			wake = append(wake, us)
		} else {
			keep = append(keep, us)
		}
	}
	clear(b.held[len(keep):])
	b.held = keep
	b.nheld.Store(int32(len(b.held)))
	if len(b.held) == 0 {
		b.g.mu.Lock() // lock order: b.mu, then g.mu
		delete(b.g.waiting, b)
		b.g.mu.Unlock()
	}
	b.mu.Unlock()
	for _, us := range wake {
		b.g.resumed()
		us.u.returnWindow(us)
	}
}

// hold records a newly held stream of b (under b.mu).
func (g *respBudget) hold(b *connBudget) {
	g.held.Add(1)
	g.mu.Lock()
	g.waiting[b] = struct{}{}
	g.mu.Unlock()
	if g.event != nil {
		g.event(EventStreamHeld)
	}
}

// resumed records a held stream that was resumed or ended.
func (g *respBudget) resumed() {
	g.held.Add(-1)
	if g.event != nil {
		g.event(EventStreamResumed)
	}
}

// Memory given back after a large release: the Go runtime returns freed
// memory to the OS only after a GC cycle, which a quiet proxy whose heap
// grew while a client held answers may not run for minutes (the periodic
// forced GC is every two minutes). When a client connection that made the
// proxy hold answers leaves, and at least freeAfter bytes of the budget's
// peak were released, the memory is given back at once
// (runtime.GC, then debug.FreeOSMemory), at most once per freeEvery: the
// cost is two GC cycles for a rare event, never on the path of a call.
const (
	freeAfter = 8 << 20
	freeEvery = 10 * time.Second
)

// MemoryReturn is that policy, for the response budgets of both engines
// (the grpc engine's is in package proxy): Charged records the budget's
// total after each charge, ConnLeft is called a moment after a client
// connection that held answers closed. The zero value is ready.
type MemoryReturn struct {
	// peak is the most used since memory was last given back, and
	// lastFree when that was (unix nanoseconds).
	peak, lastFree atomic.Int64
}

// Charged records used, the budget's total after a charge.
func (m *MemoryReturn) Charged(used int64) {
	if used > m.peak.Load() {
		m.peak.Store(used) // a racy maximum is close enough
	}
}

// ConnLeft gives memory back if at least freeAfter bytes of the peak were
// released (used is the budget's total now) and it was not done within
// freeEvery.
func (m *MemoryReturn) ConnLeft(used int64) {
	now := time.Now().UnixNano()
	if m.peak.Load()-used < freeAfter || now-m.lastFree.Load() < int64(freeEvery) {
		return
	}
	m.lastFree.Store(now)
	m.peak.Store(used)
	// Buffers pooled (sync.Pool, grpc's buffer pool) survive one GC in
	// the pool's victim cache: the first cycle moves them there, the
	// second (FreeOSMemory's) frees them and returns the memory.
	runtime.GC()
	debug.FreeOSMemory()
}

// connLeft is called a moment after a client connection closed, once its
// calls had time to end and release their charges.
func (g *respBudget) connLeft() { g.mem.ConnLeft(g.used.Load()) }

// resumeAll retries every connection with held streams (the process went
// back under its budget).
func (g *respBudget) resumeAll() {
	g.mu.Lock()
	bs := make([]*connBudget, 0, len(g.waiting))
	for b := range g.waiting {
		bs = append(bs, b)
	}
	g.mu.Unlock()
	for _, b := range bs {
		b.resume()
	}
}

// ResponseBuffered reports the bytes of cluster answers the relay holds
// now for its client connections (charged against the response budgets)
// and how many backend streams it holds back for them.
func (r *Server) ResponseBuffered() (bytes, heldStreams int64) {
	return r.budget.used.Load(), r.budget.held.Load()
}
