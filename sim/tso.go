package sim

import (
	"sync"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
)

// ComposeTS builds a hybrid timestamp from a wall-clock time and a logical
// counter.
func ComposeTS(t time.Time, logical uint64) uint64 {
	return hybridts.Compose(t.UnixMilli(), uint32(logical))
}

// PhysicalTime is the wall-clock part of a hybrid timestamp.
func PhysicalTime(ts uint64) time.Time {
	return hybridts.Time(ts)
}

// subPhysical moves a hybrid timestamp back by d, keeping it positive.
func subPhysical(ts uint64, d time.Duration) uint64 {
	ms := uint64(d.Milliseconds()) << hybridts.LogicalBits
	if ms >= ts {
		return 0
	}
	return ts - ms
}

// tso is a strictly increasing hybrid-timestamp oracle, as Milvus's rootcoord
// TSO: physical milliseconds from the wall clock, a logical counter within a
// millisecond.
type tso struct {
	mu   sync.Mutex
	last uint64
}

// alloc returns a timestamp strictly greater than every one returned or
// observed before.
func (t *tso) alloc() uint64 {
	return t.allocN(1)
}

// allocN reserves n consecutive timestamps and returns the first.
func (t *tso) allocN(n int) uint64 {
	if n < 1 {
		n = 1
	}
	now := hybridts.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	first := t.last + 1
	if now > first {
		first = now
	}
	t.last = first + uint64(n) - 1
	return first
}

// peek is the last timestamp handed out or observed.
func (t *tso) peek() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

// observe makes every later alloc exceed ts: a secondary observes the source's
// timestamps so that after promotion its own writes sort after everything it
// replicated.
func (t *tso) observe(ts uint64) {
	t.mu.Lock()
	if ts > t.last {
		t.last = ts
	}
	t.mu.Unlock()
}
