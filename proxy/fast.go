package proxy

import (
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/relay"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// The relay engine's fast path. Most calls — reads whose collection facts
// are cached, writes while a leader is known — need nothing that blocks:
// the connection's reader goroutine routes the call and writes it to the
// cluster's connection, and that connection's reader goroutine judges the
// answer and writes it back to the client, each flushing once per read
// rather than once per call. Anything that must wait (a dial, a failover,
// a pause before a retry, AllocTimestamp, flow control) moves the call to
// a worker, which continues from the same state with the blocking code.

// fastCall is a unary call on the fast path.
type fastCall struct {
	s      *Server
	rc     *relay.Call
	req    *frame
	c      call
	rs     readState
	ls     leaderState
	cl     *topology.Cluster
	done   func(bool)     // the breaker's
	x      relay.Exchange // the attempt on the fast path
	write  bool           // a leader call (else a read)
	resent bool           // a refused attempt was sent again
}

// startUnary takes a complete unary request on the client connection's
// reader goroutine (relay.Handler.StartUnary): the fast path when it can,
// a worker otherwise.
func (s *Server) startUnary(rc *relay.Call, req *frame, fl *relay.Flush) {
	m := s.methods[rc.Method()]
	fast := m.class == ClassRead || m.class == ClassMetaRead || m.class == ClassWrite
	if !fast || s.draining.Load() {
		rc.Dispatch(req)
		return
	}
	fc := &fastCall{s: s, rc: rc, req: req, write: m.class == ClassWrite}
	fc.c = relayCall(s, rc)
	if s.obs != nil {
		fc.c.start = time.Now()
	}
	c := &fc.c
	var cl *topology.Cluster
	if fc.write {
		c.ev.Reason = ReasonLeaderOnly
		snap := s.topo.Snapshot()
		if snap == nil || snap.Leader == nil || snap.FailingOver {
			fc.toWorker(func() (*frame, error) { return s.runLeader(c, &fc.ls, req) })
			return
		}
		fc.ls.attempts++
		cl = snap.Leader
	} else {
		slow, err := s.prepareRead(c, req, &fc.rs, true)
		if err != nil {
			fc.finish(nil, err, fl)
			return
		}
		if slow {
			fc.toWorker(func() (*frame, error) { return s.read(c, req) })
			return
		}
		var wait bool
		cl, wait, err = s.readTarget(c, &fc.rs)
		if err != nil {
			fc.finish(nil, err, fl)
			return
		}
		if wait {
			fc.rs.attempts-- // the worker makes this attempt
			fc.toWorker(func() (*frame, error) { return s.runRead(c, &fc.rs, req) })
			return
		}
	}
	fc.attempt(cl, fl)
}

// attempt sends the call to cl without blocking, or hands this attempt
// and the rest to a worker.
func (fc *fastCall) attempt(cl *topology.Cluster, fl *relay.Flush) {
	s, c := fc.s, &fc.c
	if !s.pool.Bind(&fc.x, cl) {
		fc.slowAttempt(cl)
		return
	}
	done, err := s.topo.Allow(cl.ID)
	if err != nil {
		fc.slowAttempt(cl) // the worker meets the open breaker and moves on
		return
	}
	fc.cl, fc.done = cl, done
	countStart(cl)
	c.ev.Attempts++
	c.served = cl
	if !fc.x.Start(fc.rc, fc.req, fl, fc) {
		// Nothing was written (no window, or the connection just
		// closed): undo and let a worker make the attempt.
		countEnd(cl)
		done(true)
		c.ev.Attempts--
		fc.slowAttempt(cl)
	}
}

// slowAttempt makes the attempt at cl, and the rest, on a worker.
func (fc *fastCall) slowAttempt(cl *topology.Cluster) {
	s, c := fc.s, &fc.c
	fc.toWorker(func() (*frame, error) {
		if fc.write {
			resp, sent, err := s.forward(c, cl, fc.req, true)
			if resp, err, done := s.leaderResult(c, &fc.ls, cl, fc.req, resp, sent, err); done {
				return resp, err
			}
			return s.runLeader(c, &fc.ls, fc.req)
		}
		resp, _, err := s.forward(c, cl, fc.req, false)
		if resp, err, done := s.readResult(c, &fc.rs, cl, resp, err); done {
			return resp, err
		}
		return s.runRead(c, &fc.rs, fc.req)
	})
}

// ExchangeDone judges the attempt where the cluster's answer ended,
// normally on that connection's reader goroutine (relay.Completion).
func (fc *fastCall) ExchangeDone(x *relay.Exchange, fl *relay.Flush) {
	s, c, cl := fc.s, &fc.c, fc.cl
	resp, sent, err := x.Result(cl.ID)
	countEnd(cl)
	if x.Refused() && !fc.resent && c.ctx.Err() == nil {
		// Refused before the cluster processed it (a GOAWAY, or
		// REFUSED_STREAM): the cluster is alive; send it again, once,
		// on a fresh stream, as grpc-go's transparent retry does.
		fc.resent = true
		fc.done(true)
		c.ev.Attempts--
		fc.slowAttempt(cl)
		return
	}
	fc.done(!transportFailure(c.ctx, err))
	var done bool
	if fc.write {
		resp, err, done = s.leaderResult(c, &fc.ls, cl, fc.req, resp, sent, err)
	} else {
		resp, err, done = s.readResult(c, &fc.rs, cl, resp, err)
	}
	if !done {
		if fc.write {
			fc.toWorker(func() (*frame, error) { return s.runLeader(c, &fc.ls, fc.req) })
		} else {
			fc.toWorker(func() (*frame, error) { return s.runRead(c, &fc.rs, fc.req) })
		}
		return
	}
	fc.finish(resp, err, fl)
}

// finish answers the client and ends the call; with fl it does not block.
func (fc *fastCall) finish(resp *frame, err error, fl *relay.Flush) {
	resp, err = fc.s.finishCall(&fc.c, resp, err)
	fc.req.Free()
	fc.rc.Finish(fc.c.headerCluster(), resp, err, fl)
}

// toWorker continues the call on a goroutine that may block.
func (fc *fastCall) toWorker(run func() (*frame, error)) {
	go func() {
		resp, err := run()
		fc.finish(resp, err, nil)
	}()
}
