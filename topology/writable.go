package topology

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The one wait for "a writable leader exists". A write waits here when
// there is no leader (a failover or switchover holds writes, or discovery
// has found none yet), when the leader is fenced (a leader change is
// taking it out), and after an attempt that never reached the leader
// (connection refused, breaker open, fenced): during the detection window
// of a leader crash the snapshot still names the dead leader, and the
// write retries it with a short backoff until it answers again or a new
// leader is installed. The wait is bounded by WriteHold from the moment
// the write first had to wait, whatever the cause.

// Backoff between attempts at a leader that an attempt never reached.
const (
	notSentBackoffMin = 20 * time.Millisecond
	notSentBackoffMax = 250 * time.Millisecond
	// fencePoll bounds a wait on a fenced leader between publications
	// (the fence is a flag on the cluster, not part of the snapshot).
	fencePoll = 50 * time.Millisecond
)

// WriteWait carries one call's wait for a writable leader across its
// attempts. The zero value is ready; it is not safe for concurrent use.
// The caller ends it with End once the call has its outcome.
type WriteWait struct {
	// Read marks a read's wait (a read only the leader can serve, whose
	// leader could not be reached): it waits the same way and as long,
	// but it is not a held write, so it is not reported to HoldObserver
	// nor counted in a leader change's WritesHeld, and its error says
	// "read held".
	Read bool

	m       *Manager  // set when the call first had to wait
	start   time.Time // when it first had to wait
	holding bool      // a hold is reported to HoldObserver and not ended
	ended   bool      // the wait gave up (timed out, cancelled)

	notSent    string // the leader the last attempt never reached
	notSentErr error
	backoff    time.Duration
	retryAt    time.Time
}

// NotSent records that the last attempt never reached clusterID (it was
// refused before it was sent, or no connection could be made), with the
// error. The next WaitWritable does not hand out the same leader again
// before a short, growing backoff, unless another one leads meanwhile.
func (w *WriteWait) NotSent(clusterID string, err error) {
	w.notSent, w.notSentErr = clusterID, err
	w.backoff = min(max(2*w.backoff, notSentBackoffMin), notSentBackoffMax)
	w.retryAt = time.Now().Add(w.backoff)
}

// LastNotSent returns the error of the last attempt that never reached
// the leader (NotSent), or nil.
func (w *WriteWait) LastNotSent() error { return w.notSentErr }

// End reports a hold still open as released (the call went on to an
// outcome). Safe to call more than once and on a wait that never held.
func (w *WriteWait) End(ctx context.Context) {
	if w.holding && w.m != nil {
		w.holding = false
		w.m.holdEnded(ctx, w, HoldReleased)
	}
}

// what names the held call in errors.
func (w *WriteWait) what() string {
	if w.Read {
		return "read"
	}
	return "write"
}

// Waited reports how long the call has waited for a writable leader.
func (w *WriteWait) Waited() time.Duration {
	if w.m == nil {
		return 0
	}
	return w.m.opts.Now().Sub(w.start)
}

// WaitWritable returns the leader a write may be sent to now. It waits,
// up to WriteHold from the first time this call had to wait, while there
// is no leader, the leader is fenced, or (after NotSent) the leader the
// last attempt never reached is still backing off; then it fails with
// codes.Unavailable and a message saying why. Each call that has to wait
// is reported once to Options.HoldObserver.
func (m *Manager) WaitWritable(ctx context.Context, w *WriteWait) (*Cluster, error) {
	if w.ended {
		return nil, w.notSentErr
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		ch := m.Changed()
		s := m.Snapshot()
		wake, ok := m.writable(s, w)
		if ok {
			return s.Leader, nil
		}
		if w.m == nil {
			w.m, w.start = m, m.opts.Now()
		}
		if !w.holding {
			w.holding = true
			if !w.Read {
				m.holdsStarted.Add(1)
				if o := m.opts.HoldObserver; o != nil {
					o.WriteHoldStarted(ctx)
				}
			}
		}
		left := w.start.Add(m.opts.WriteHold).Sub(m.opts.Now())
		if left <= 0 {
			return nil, m.giveUp(ctx, w, s, HoldTimedOut)
		}
		if wake <= 0 || wake > left {
			wake = left
		}
		if timer == nil {
			timer = time.NewTimer(wake)
		} else {
			timer.Reset(wake)
		}
		select {
		case <-ch:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		case <-ctx.Done():
			w.ended = true
			w.holding = false
			m.holdEnded(ctx, w, HoldCanceled)
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-m.ctx.Done():
			return nil, m.giveUp(ctx, w, s, HoldTimedOut)
		}
	}
}

// writable reports whether s's leader may take a write for w now; when
// not, wake is how long to sleep at most before looking again (0: until
// the next publication).
func (m *Manager) writable(s *Snapshot, w *WriteWait) (wake time.Duration, ok bool) {
	if s.Leader == nil {
		return 0, false
	}
	if mb := m.members[s.Leader.ID]; mb != nil && mb.fenced.Load() {
		return fencePoll, false
	}
	if w.notSent == s.Leader.ID {
		if d := time.Until(w.retryAt); d > 0 {
			return d, false
		}
	}
	return 0, true
}

// giveUp ends a wait that ran out of time and says why.
func (m *Manager) giveUp(ctx context.Context, w *WriteWait, s *Snapshot, outcome string) error {
	w.ended = true
	w.holding = false
	held := m.opts.Now().Sub(w.start)
	m.holdEnded(ctx, w, outcome)
	var err error
	switch {
	case s.Leader == nil:
		err = m.noLeaderError(s, held, w.what())
	case m.members[s.Leader.ID] != nil && m.members[s.Leader.ID].fenced.Load():
		err = status.Errorf(codes.Unavailable, "milvus-ha-proxy: leader %s is fenced by a leader change that did not end; %s held for %s",
			s.Leader.ID, w.what(), held.Round(time.Millisecond))
	default:
		why := "it refused every attempt"
		if w.notSentErr != nil {
			why = "last attempt: " + status.Convert(w.notSentErr).Message()
		}
		err = status.Errorf(codes.Unavailable, "milvus-ha-proxy: leader %s could not be reached (%s); %s held for %s",
			s.Leader.ID, why, w.what(), held.Round(time.Millisecond))
	}
	w.notSentErr = err
	return err
}

// WaitLeader returns the current leader, waiting as WaitWritable does
// for one call's single attempt.
func (m *Manager) WaitLeader(ctx context.Context) (*Cluster, error) {
	var w WriteWait
	defer w.End(ctx)
	return m.WaitWritable(ctx, &w)
}
