package relay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// callCtx is a stream's context: its connection's context, the deadline
// the client's grpc-timeout gives, and the stream's own end (cancel).
//
// A context.WithTimeout per call costs a timer, a registration in the
// connection's context and four allocations, and most calls never need
// them: a call on the fast path is written to a cluster, answered and
// ended on reader goroutines that only ask Err and Deadline (the cluster
// enforces the deadline itself: it is forwarded as grpc-timeout). So Err
// and Deadline are answered from the parent, the clock and a flag, and
// the real context (context.WithDeadline or WithCancel of the parent) is
// made only when something waits on Done: a worker, a blocking send, a
// context derived from this one. From then on every method defers to it.
//
// It lives inside its dstream: no allocation of its own.
type callCtx struct {
	parent   context.Context
	deadline time.Time
	hasDL    bool

	mu       sync.Mutex
	real     atomic.Pointer[realCtx] // set once, under mu
	canceled atomic.Bool             // cancel ran before real was made
}

type realCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// init makes c a child of parent, with a deadline timeout from now when
// hasTimeout.
func (c *callCtx) init(parent context.Context, timeout time.Duration, hasTimeout bool) {
	c.parent = parent
	if hasTimeout {
		c.deadline, c.hasDL = time.Now().Add(timeout), true
	}
}

// materialize returns the real context, making it on first use.
func (c *callCtx) materialize() *realCtx {
	if r := c.real.Load(); r != nil {
		return r
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.real.Load(); r != nil {
		return r
	}
	r := &realCtx{}
	if c.hasDL {
		r.ctx, r.cancel = context.WithDeadline(c.parent, c.deadline)
	} else {
		r.ctx, r.cancel = context.WithCancel(c.parent)
	}
	if c.canceled.Load() {
		r.cancel()
	}
	c.real.Store(r)
	return r
}

// cancel ends the context (idempotent).
func (c *callCtx) cancel() {
	c.mu.Lock()
	c.canceled.Store(true)
	r := c.real.Load()
	c.mu.Unlock()
	if r != nil {
		r.cancel()
	}
}

func (c *callCtx) Deadline() (time.Time, bool) { return c.deadline, c.hasDL }

func (c *callCtx) Done() <-chan struct{} { return c.materialize().ctx.Done() }

func (c *callCtx) Err() error {
	if r := c.real.Load(); r != nil {
		return r.ctx.Err()
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if c.canceled.Load() {
		return context.Canceled
	}
	if c.hasDL && !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value defers to the real context once it exists: the context package
// finds a parent's cancelCtx through Value, so that a context derived
// from this one (after Done made the real one) registers with it rather
// than starting a goroutine to watch Done.
func (c *callCtx) Value(key any) any {
	if r := c.real.Load(); r != nil {
		return r.ctx.Value(key)
	}
	return c.parent.Value(key)
}

func (c *callCtx) String() string { return "relay.callCtx" }
