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
// cluster is known at all (a failover under way): the caller waits for
// the leader (blocking) and sends there.
func (s *Server) readTarget(c *call, rs *readState) (cl *topology.Cluster, wait bool, err error) {
	rs.attempts++
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

// readResult judges one attempt. done reports a final outcome (resp or
// err); otherwise rs holds the next decision. After a transport failure
// the read moves to another eligible cluster and finally the leader; when
// an alternative answers that it cannot serve the read, to the leader. A
// read in flight is never cut because its cluster's lag grew: lag only
// steers new reads.
func (s *Server) readResult(c *call, rs *readState, cl *topology.Cluster, resp *frame, err error) (*frame, error, bool) {
	if err != nil {
		var na notAdmitted
		var fenced *errFenced
		switch {
		case errors.As(err, &fenced):
			// A leader change is taking cl out: when no other cluster
			// may serve the read, it waits for the new leader.
			rs.rr.Exclude = append(rs.rr.Exclude, cl.ID)
			rs.snap = s.topo.Snapshot()
			rs.dec = s.router.PickRead(rs.snap, rs.rr)
			if rs.dec.Cluster == nil {
				rs.lastErr = nil
			} else {
				rs.lastErr = fenced.status()
			}
			return nil, nil, false
		case errors.As(err, &na):
			rs.lastErr = na.status()
		case retryableRead(c.ctx, err):
			rs.lastErr = err
		default:
			return nil, err, true
		}
		rs.rr.Exclude = append(rs.rr.Exclude, cl.ID)
		rs.snap = s.topo.Snapshot()
		rs.dec = s.router.PickRead(rs.snap, rs.rr)
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
	for {
		cl, wait, err := s.readTarget(c, rs)
		if err != nil {
			return nil, err
		}
		if wait {
			if cl, err = s.topo.WaitLeader(c.ctx); err != nil {
				return nil, err
			}
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
