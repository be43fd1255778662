package proxy

import (
	"errors"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/consistency"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A read is routed as a small state machine — prepare, then attempt and
// judge the outcome until one is final — so that the relay engine can run
// the common case inline on its connection goroutines and hand a read to a
// worker, state and all, only when something must wait.

// readState carries one read across its attempts.
type readState struct {
	snap     *topology.Snapshot
	rr       router.ReadRequest
	excl     [8]string
	dec      router.Decision
	attempts int
	lastErr  error

	// planEpoch and planLeader are the leader epoch and leader ("" during
	// a failover) when the read was planned: its required timestamp was
	// issued before any leader installed later.
	planEpoch  uint64
	planLeader string
	// hold: nothing may serve the read now (the leader's connection
	// failed, or it was refused by its breaker or a fence, and no
	// alternative is eligible); the next attempt waits for a writable
	// leader first, through wait, which bounds the read's whole wait by
	// write_hold as it does a write's. wait is allocated the first time
	// the read has to wait, keeping readState (and the relay's fastCall)
	// small for the reads that never do.
	hold bool
	wait *topology.WriteWait
}

// writeWait returns the read's wait for a writable leader, creating it.
func (rs *readState) writeWait() *topology.WriteWait {
	if rs.wait == nil {
		// Read: not a held write in metrics and leader-change records.
		rs.wait = &topology.WriteWait{Read: true}
	}
	return rs.wait
}

// prepareRead plans the read (router.ReadPolicy.Plan decides; this
// gathers the facts it asks for and carries out the answer), rewrites its
// consistency fields, and makes the first routing decision. With fast set
// it must not block: it reports slow when it would have to (collection
// facts not in the cache, AllocTimestamp for strong_reads: wait), and the
// caller starts over on a worker with fast unset.
func (s *Server) prepareRead(c *call, req *frame, rs *readState, fast bool) (slow bool, err error) {
	m := c.m
	var f readFields
	if err := scanRequest(req.Bytes(), &m.layout, &f); err != nil {
		return false, status.Errorf(codes.InvalidArgument, "milvus-ha-proxy: %s request: %v", m.name, err)
	}
	db := c.db(f.db)
	coll := string(f.coll)
	rs.snap = s.topo.Snapshot()
	if rs.snap != nil {
		rs.planEpoch = rs.snap.Epoch
		if rs.snap.Leader != nil {
			rs.planLeader = rs.snap.Leader.ID
		}
	}
	req.Tail = nil

	in := router.ReadInput{
		Meta: m.class == ClassMetaRead,
		Fields: consistency.ReadFields{
			Level:      consistency.Level(f.level),
			Guarantee:  f.guarantee,
			UseDefault: f.useDefault,
			Iterator:   f.iterator,
		},
	}
	if !in.Meta && coll != "" {
		info, cached, err := s.topo.CachedCollection(db, coll)
		if !cached {
			if fast {
				return true, nil
			}
			info, err = s.topo.Collection(c.ctx, db, coll)
		}
		// On a failed look-up (unknown to the leader too, most likely, or
		// the leader in trouble; the failure is cached for a moment) the
		// plan sends the read to the leader as sent: the client gets the
		// leader's own answer to its own call.
		if err == nil {
			in.CollectionKnown = true
			in.CollectionLevel = consistency.Level(info.ConsistencyLevel)
			in.PChannels = info.PChannels
			in.LeaderNow = s.topo.LeaderNow()
		}
	}
	plan := s.policy.Plan(in)
	for plan.Need != 0 {
		switch {
		case plan.Need&router.NeedSession != 0:
			in.Session = s.sessions.Session(c.sessionKey(), db, coll)
			in.Have |= router.NeedSession
		case plan.Need&router.NeedStrongTimestamp != 0:
			if fast {
				return true, nil
			}
			ts, err := s.topo.AllocLeaderTimestamp(c.ctx)
			if err != nil {
				s.log.Debug("proxy: AllocTimestamp for a Strong read failed; using the leader", "err", err)
				ts = 0
			}
			in.StrongTimestamp = ts
			in.Have |= router.NeedStrongTimestamp
		}
		plan = s.policy.Plan(in)
	}

	c.ev.Level, c.ev.Required = plan.Level, plan.Required
	rs.rr = plan.Request
	rs.rr.Exclude = rs.excl[:0]
	if plan.Rewrite {
		req.Tail = appendConsistency(req.TailBuf[:0], &m.layout, int32(plan.ForwardLevel), plan.ForwardGuarantee)
	}
	if plan.WaitForAlternative {
		if err := s.waitForAlternative(c, rs); err != nil {
			return false, err
		}
	}
	rs.dec = s.router.PickRead(rs.snap, rs.rr)
	return false, nil
}

// waitForAlternative serves strong_reads: wait: it waits up to max_wait
// for an alternative that has replicated the leader's fresh timestamp.
func (s *Server) waitForAlternative(c *call, rs *readState) error {
	if s.maxWait <= 0 {
		return nil
	}
	var timer *time.Timer
	for {
		ch := s.topo.Changed()
		rs.snap = s.topo.Snapshot()
		if s.router.PickRead(rs.snap, rs.rr).Reason != router.ReasonLeaderLag {
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(s.maxWait)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			return nil
		case <-c.ctx.Done():
			return status.FromContextError(c.ctx.Err()).Err()
		}
	}
}

// readTarget returns the cluster for the next attempt. wait is set when no
// cluster may serve the read now (a failover under way, or the leader
// unreachable and no alternative eligible): the caller waits for a
// writable leader (blocking, waitLeader) and sends there.
func (s *Server) readTarget(c *call, rs *readState) (cl *topology.Cluster, wait bool, err error) {
	rs.attempts++
	if rs.hold {
		// Bounded in time by write_hold, not by the attempt count: a
		// leader in its detection window is retried with a backoff.
		c.ev.Reason = ReasonLeaderWait
		return nil, true, nil
	}
	if rs.attempts > len(rs.snap.Clusters)+1 {
		if rs.lastErr == nil {
			rs.lastErr = status.Error(codes.Unavailable, "milvus-ha-proxy: no cluster could serve the read")
		}
		return nil, false, rs.lastErr
	}
	if rs.dec.Cluster == nil {
		if rs.lastErr != nil {
			return nil, false, rs.lastErr
		}
		c.ev.Reason = ReasonLeaderWait
		return nil, true, nil
	}
	c.ev.Reason = string(rs.dec.Reason)
	return rs.dec.Cluster, false, nil
}

// waitLeader waits for a writable leader — the write path's one wait,
// topology.Manager.WaitWritable, with the read's own WriteWait so that
// every wait of the read together is bounded by write_hold (a read that
// waits longer than a write would is no use to a client whose writes
// already fail) — and returns where the read goes next: an alternative
// that is eligible now, else that leader. The read keeps what it was
// planned with (required timestamp, forwarded consistency fields): a
// Strong or Session read carried to a new leader asks of it what it
// asked of the old one.
func (s *Server) waitLeader(c *call, rs *readState) (*topology.Cluster, error) {
	ld, err := s.topo.WaitWritable(c.ctx, rs.writeWait())
	if err != nil {
		if c.ctx.Err() != nil {
			return nil, err
		}
		st := status.Convert(err)
		return nil, status.Errorf(st.Code(), "milvus-ha-proxy: %s waited for a leader to serve it: %s", c.m.name, st.Message())
	}
	rs.hold = false
	rs.snap = s.topo.Snapshot()
	rs.rr.Exclude = without(rs.rr.Exclude, ld.ID)
	if dec := s.router.PickRead(rs.snap, rs.rr); dec.Cluster != nil {
		rs.dec = dec
		c.ev.Reason = string(dec.Reason)
		return dec.Cluster, nil
	}
	return ld, nil
}

// carriedTooFar refuses a Session or Customized read carried across a
// forced failover (planned before the leader of rs.snap was installed) to
// a leader that provably lacks what the read requires: the writes its
// guarantee names (the session's own last write, or the timestamp a
// client pinned). The required timestamp R was set under the old leader,
// in its time; the new leader's salvage checkpoints (GetReplicateInfo
// after the force promotion) say how far it had replicated the old
// leader's pchannels. A checkpoint below R on one of the collection's
// pchannels means writes the read must see never reached the new leader,
// nor therefore its targets, and nothing but another leader change can
// bring them: serving the read would break its level without saying so,
// and waiting longer changes nothing, so the read fails at once with
// FailedPrecondition (not Unavailable, which SDKs retry) naming R and the
// checkpoint. Reads planned under the new leader are not checked: a
// timestamp the session holds cannot be told apart from one of the new
// leader (docs/architecture.md, "Reads across a leader change"). A
// Strong read under strong_reads: wait (R is the old leader's "now", not
// a write) and a Bounded one (R is a staleness bound) are served: the new
// leader's data is all there is, as for every read planned after the
// change.
func carriedTooFar(c *call, rs *readState) error {
	if lv := c.ev.Level; lv != consistency.Session && lv != consistency.Customized {
		return nil
	}
	if rs.rr.Required == 0 || rs.snap == nil || rs.snap.Epoch == rs.planEpoch {
		return nil
	}
	ld := rs.snap.Leader
	if ld == nil || ld.ID == rs.planLeader || len(ld.Salvage) == 0 {
		return nil
	}
	salvage := topology.Cluster{Checkpoints: ld.Salvage, CheckpointsKnown: true}
	ts, ok := salvage.ReplicatedFor(rs.rr.PChannels)
	if !ok || ts >= rs.rr.Required {
		return nil
	}
	former := "the former leader"
	if rs.planLeader != "" {
		former = "former leader " + rs.planLeader
	}
	return status.Errorf(codes.FailedPrecondition,
		"milvus-ha-proxy: %s at %s consistency requires timestamp %d of %s, but new leader %s was promoted by force having replicated it only to %d: the writes it must see may be lost",
		c.m.name, c.ev.Level, rs.rr.Required, former, ld.ID, ts)
}

// without returns ids without id, in place.
func without(ids []string, id string) []string {
	out := ids[:0]
	for _, x := range ids {
		if x != id {
			out = append(out, x)
		}
	}
	return out
}

// readResult judges one attempt. done reports a final outcome (resp or
// err); otherwise rs holds the next decision. After a transport failure
// the read moves to another eligible cluster and finally the leader; when
// an alternative answers that it cannot serve the read, to the leader. A
// read in flight is never cut because its cluster's lag grew: lag only
// steers new reads.
//
// When the failed cluster was the last that may serve the read — the
// leader's connection failed or could not be made (the detection window
// of a leader crash), its breaker or a fence refused it (a leader change
// under way) — the read is held: it waits for a writable leader and is
// sent there, like a write that never reached the leader, up to
// write_hold. Unlike a write it may be sent again even when the failed
// attempt reached the leader: a read changes nothing. An answer (any
// status that is not a transport failure) is not held for.
//
// It never blocks: the relay engine calls it on a connection's reader
// goroutine and hands the call to a worker when it is not done.
func (s *Server) readResult(c *call, rs *readState, cl *topology.Cluster, resp *frame, err error) (*frame, error, bool) {
	if err != nil {
		var na notAdmitted
		var fenced *errFenced
		holdable := false
		switch {
		case errors.As(err, &fenced):
			// A leader change is taking cl out.
			rs.lastErr, holdable = fenced.status(), true
		case errors.As(err, &na):
			rs.lastErr, holdable = na.status(), true
		case retryableRead(c.ctx, err):
			rs.lastErr, holdable = err, transportFailure(c.ctx, err)
		default:
			return nil, err, true
		}
		rs.rr.Exclude = append(rs.rr.Exclude, cl.ID)
		rs.snap = s.topo.Snapshot()
		rs.dec = s.router.PickRead(rs.snap, rs.rr)
		if rs.dec.Cluster == nil && holdable {
			// WaitWritable hands out cl again (if it still leads)
			// only after a short, growing backoff.
			rs.writeWait().NotSent(cl.ID, rs.lastErr)
			rs.hold = true
		}
		return nil, nil, false
	}
	// A leader's answer is final; an alternative's refusal is judged by
	// the router.
	if cl.Role != topology.RoleLeader {
		if st, _, ok := scanResponse(resp.Bytes(), &c.m.layout); ok && cannotServe(st) {
			if dec := router.AfterRefusal(s.topo.Snapshot(), rs.rr, cl); dec.Cluster != nil {
				resp.Free()
				rs.rr.Exclude = append(rs.rr.Exclude, cl.ID)
				rs.dec = dec
				return nil, nil, false
			}
		}
	}
	return resp, nil, true
}

// read routes a Search, HybridSearch, Query or metadata read, blocking
// where it must.
func (s *Server) read(c *call, req *frame) (*frame, error) {
	var rs readState
	if _, err := s.prepareRead(c, req, &rs, false); err != nil {
		return nil, err
	}
	return s.runRead(c, &rs, req)
}

// runRead attempts a prepared read until an outcome is final.
func (s *Server) runRead(c *call, rs *readState, req *frame) (*frame, error) {
	defer func() {
		if rs.wait != nil {
			rs.wait.End(c.ctx)
		}
	}()
	for {
		cl, wait, err := s.readTarget(c, rs)
		if err != nil {
			return nil, err
		}
		if wait {
			if cl, err = s.waitLeader(c, rs); err != nil {
				return nil, err
			}
		}
		if err := carriedTooFar(c, rs); err != nil {
			return nil, err
		}
		resp, _, err := s.forward(c, cl, req, false)
		if resp, err, done := s.readResult(c, rs, cl, resp, err); done {
			return resp, err
		}
	}
}

// invalidate drops a collection's cached facts; name "" means all of db.
func (s *Server) invalidate(db, name string) {
	s.topo.InvalidateCollection(db, name)
}
