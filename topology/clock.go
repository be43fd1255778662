package topology

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
)

// calibration ties one leader timestamp to the local monotonic clock.
type calibration struct {
	anchor time.Time // local time just before the AllocTimestamp call
	phys   int64     // physical ms of the timestamp it returned
}

// leaderClock estimates the leader's TSO between AllocTimestamp polls.
//
// The estimate is anchored at the local time taken just BEFORE the call
// that returned the timestamp. The leader allocated it somewhere between
// sending and receiving, so extrapolating from the send time can only
// overshoot the leader's clock, by at most one round trip. Overshooting is
// the safe side: a Strong read routed on an estimate that is too high
// waits a little longer, one routed on an estimate that is too low could
// miss an acknowledged write.
type leaderClock struct {
	cal   atomic.Pointer[calibration]
	last  atomic.Uint64 // highest value handed out or observed
	epoch atomic.Uint64 // the leader epoch the calibration belongs to
}

// now returns the estimate at local time t: monotonic and never below a
// timestamp observed from the leader. Before the first calibration it
// falls back to the local clock.
func (c *leaderClock) now(t time.Time) uint64 {
	var est uint64
	if cal := c.cal.Load(); cal != nil {
		est = hybridts.Compose(cal.phys+t.Sub(cal.anchor).Milliseconds(), 0)
	} else {
		est = hybridts.FromTime(t)
	}
	for {
		last := c.last.Load()
		if est <= last {
			return last
		}
		if c.last.CompareAndSwap(last, est) {
			return est
		}
	}
}

// observe raises the floor to a timestamp seen from the leader.
func (c *leaderClock) observe(ts uint64) {
	for {
		last := c.last.Load()
		if ts <= last || c.last.CompareAndSwap(last, ts) {
			return
		}
	}
}

// calibrate installs a new sample taken in the given leader epoch; samples
// from an older epoch (a previous leader) are dropped.
func (c *leaderClock) calibrate(epoch uint64, anchor time.Time, ts uint64) {
	if c.epoch.Load() != epoch {
		return
	}
	c.cal.Store(&calibration{anchor: anchor, phys: hybridts.Physical(ts)})
	c.observe(ts)
}

// calibrated reports whether a sample from the current leader is in use.
func (c *leaderClock) calibrated() bool { return c.cal.Load() != nil }

// reset forgets the previous leader's clock when the leader changes.
func (c *leaderClock) reset(epoch uint64) {
	c.epoch.Store(epoch)
	c.cal.Store(nil)
	c.last.Store(0)
}

// clockLoop polls AllocTimestamp on the leader every PollInterval.
func (m *Manager) clockLoop(ctx context.Context) {
	t := time.NewTicker(m.opts.PollInterval)
	defer t.Stop()
	for {
		s := m.Snapshot()
		if s.Leader != nil {
			cctx, cancel := context.WithTimeout(ctx, m.opts.PollTimeout)
			if _, err := m.allocTimestamp(cctx, m.members[s.Leader.ID], s.Epoch); err != nil && ctx.Err() == nil {
				m.log.Debug("leader clock poll failed", "cluster", s.Leader.ID, "err", err)
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
