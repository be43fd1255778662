package proxy

import (
	"errors"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/consistency"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"google.golang.org/grpc/status"
)

// codeOutcomeUnknown is the merr code of the Milvus status that answers an
// Insert whose outcome is unknown: merr's "unexpected error" (65535), which
// is not retriable.
const codeOutcomeUnknown = 1<<16 - 1

// leaderCall sends a write, DDL or other leader-only call to the leader.
//
// When may it be sent again? The rule is CockroachDB's for ambiguous
// results: a request is re-sent only when it provably never left the proxy
// — there was no writable leader (a failover or switchover under way), the
// leader was fenced or its breaker refused, or gRPC never created a
// transport stream for it (no connection could be made, as during the
// detection window of a leader crash). Such a call waits for a writable
// leader (topology.Manager.WaitWritable) up to write_hold from the moment
// it first had to wait, whatever the cause, and is sent again. Once a
// stream existed, the leader may have applied the request even though no
// answer came back, and re-sending is safe only if applying it twice
// equals applying it once: Upsert and Delete (the same rows end in the
// same state) and leader-only reads get one more try, on the leader as it
// is then (possibly a new one after a failover). Everything else returns
// the failure. An Insert whose outcome is unknown is answered with a
// Milvus error status that says so, not with a gRPC error: every SDK
// retries gRPC UNAVAILABLE (and most retry UNKNOWN and INTERNAL) on its
// own, which would insert the rows twice, while none retries a Milvus
// status (test/sdk/SDK_NOTES.md).
func (s *Server) leaderCall(c *call, req *frame) (*frame, error) {
	c.ev.Reason = ReasonLeaderOnly
	var ls leaderState
	return s.runLeader(c, &ls, req)
}

// leaderState carries a leader-only call across its attempts.
type leaderState struct {
	attempts int
	resent   bool // an ambiguous attempt was already repeated
	// wait is the call's wait for a writable leader, across attempts.
	wait topology.WriteWait
}

// runLeader attempts a leader-only call until an outcome is final. Every
// attempt that was never sent waits for a writable leader again; the wait
// as a whole is bounded by write_hold, so the loop ends.
func (s *Server) runLeader(c *call, ls *leaderState, req *frame) (*frame, error) {
	defer ls.wait.End(c.ctx)
	for {
		cl, err := s.topo.WaitWritable(c.ctx, &ls.wait)
		if err != nil {
			// Unavailable: no writable leader within write_hold.
			// Nothing was sent.
			return nil, err
		}
		ls.attempts++
		resp, sent, err := s.forward(c, cl, req, true)
		if resp, err, done := s.leaderResult(c, ls, cl, req, resp, sent, err); done {
			return resp, err
		}
	}
}

// leaderResult judges one attempt of a leader-only call; done reports a
// final outcome.
func (s *Server) leaderResult(c *call, ls *leaderState, cl *topology.Cluster, req, resp *frame, sent bool, err error) (*frame, error, bool) {
	if err == nil {
		s.afterLeader(c, req, resp)
		return resp, nil, true
	}
	if c.ctx.Err() != nil {
		return nil, err, true
	}
	var na notAdmitted
	if errors.As(err, &na) {
		// Fenced or breaker open: never sent.
		ls.wait.NotSent(cl.ID, na.status())
		return nil, nil, false
	}
	if !sent {
		// The request provably never reached the leader.
		ls.wait.NotSent(cl.ID, err)
		return nil, nil, false
	}
	if !transportFailure(c.ctx, err) {
		// The leader answered (Unimplemented, PermissionDenied,
		// InvalidArgument...): that is the outcome.
		return nil, err, true
	}
	if c.m.idempotent && !ls.resent {
		ls.resent = true
		return nil, nil, false
	}
	resp, err = s.outcomeUnknown(c, cl, err)
	return resp, err, true
}

// outcomeUnknown answers a call that reached the leader but got no answer.
func (s *Server) outcomeUnknown(c *call, cl *topology.Cluster, err error) (*frame, error) {
	st, _ := status.FromError(err)
	if c.m.class == ClassWrite && !c.m.idempotent && c.m.layout.statusField != 0 {
		reason := "milvus-ha-proxy: " + c.m.name + " outcome unknown: it was sent to leader " + cl.ID +
			" and the connection failed before an answer (" + st.Code().String() + ": " + st.Message() +
			"); the rows may or may not have been written, check before retrying"
		b := appendStatusResponse(nil, &c.m.layout, int32(commonpb.ErrorCode_UnexpectedError), codeOutcomeUnknown, reason)
		s.log.Warn("proxy: write outcome unknown", "method", c.m.name, "cluster", cl.ID, "err", err)
		return frameFromBytes(b), nil
	}
	return nil, status.Errorf(st.Code(), "milvus-ha-proxy: %s sent to leader %s, outcome unknown: %s", c.m.name, cl.ID, st.Message())
}

// afterLeader records what a successful leader call means for the
// client's session.
func (s *Server) afterLeader(c *call, req *frame, resp *frame) {
	switch c.m.class {
	case ClassWrite:
		st, ts, ok := scanResponse(resp.Bytes(), &c.m.layout)
		if !ok || !st.ok() || ts == 0 {
			return
		}
		if w, ok := s.topo.(interface{ ObserveWrite(string, uint64) }); ok && c.served != nil {
			w.ObserveWrite(c.served.ID, ts) // a switchover waits until the new leader has it
		}
		var f readFields
		if scanRequest(req.Bytes(), &c.m.layout, &f) != nil || len(f.coll) == 0 {
			return
		}
		s.sessions.RecordWrite(c.sessionKey(), c.db(f.db), string(f.coll), ts)
	case ClassDDL:
		st, _, ok := scanResponse(resp.Bytes(), &c.m.layout)
		if !ok || !st.ok() {
			return
		}
		var f readFields
		_ = scanRequest(req.Bytes(), &c.m.layout, &f)
		ts := s.ddlTimestamp(c)
		db := c.db(f.db)
		s.sessions.RecordDDL(c.sessionKey(), db, ts)
		if mdDB := consistency.NormalizeDB(c.mdDB); mdDB != db {
			// Database DDL names its target in db_name; the session's
			// current database must see it too (ListDatabases).
			s.sessions.RecordDDL(c.sessionKey(), mdDB, ts)
		}
		if c.m.invalidate {
			ddlTargets(req.Bytes(), &c.m.layout, func(dbField, name []byte) {
				s.invalidate(c.db(dbField), string(name))
			})
		}
	}
}

// ddlTimestamp returns a timestamp at or after a DDL the leader has just
// acknowledged. AllocTimestamp on the leader is exact: the TSO is
// monotonic, so a timestamp allocated after the acknowledgement is above
// the DDL's, and an alternative that replicated past it has the DDL.
// LeaderNow would save a round trip, but it is an estimate that can run
// behind the leader's TSO (clock drift, a stale calibration) and then a
// Session read could land on an alternative without the DDL; DDL is rare
// and slow, so the round trip is the right price. If AllocTimestamp fails,
// the estimate plus a second of margin stands in: too high only keeps the
// session's reads on the leader a little longer.
func (s *Server) ddlTimestamp(c *call) uint64 {
	ts, err := s.topo.AllocLeaderTimestamp(c.ctx)
	if err == nil && ts != 0 {
		return ts
	}
	est := max(s.topo.LeaderNow(), hybridts.Now())
	s.log.Warn("proxy: AllocTimestamp after DDL failed; using the estimate plus 1s", "method", c.m.name, "err", err)
	return hybridts.AddDuration(est, time.Second)
}
