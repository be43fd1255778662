package proxy

import (
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"golang.org/x/net/http2"
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
	st     *dstream
	req    *frame
	c      call
	rs     readState
	ls     leaderState
	cl     *topology.Cluster
	done   func(bool) // the breaker's
	us     ustream
	up     upRef // the backend stream, for a client's RST_STREAM
	write  bool  // a leader call (else a read)
	resent bool  // a refused attempt was sent again
}

// startUnary takes a complete unary request on the connection's reader
// goroutine: the fast path when it can, a worker otherwise.
func (d *dconn) startUnary(st *dstream, fl *flushList) {
	s := d.s
	if st.kind != kindUnary || s.draining.Load() {
		d.r.dispatch(st)
		return
	}
	m := st.m
	fast := m.class == ClassRead || m.class == ClassMetaRead || m.class == ClassWrite
	if !fast || len(st.msg.done) != 1 || st.msg.partial() || st.msg.done[0].compressed {
		d.r.dispatch(st)
		return
	}
	req := st.msg.done[0]
	st.msg.done = nil
	fc := &fastCall{s: s, st: st, req: req, write: m.class == ClassWrite}
	fc.c = call{m: m, ctx: st.ctx, remote: d.remote, mdDB: st.mdDB, ident: st.ident, fwd: st.fwd}
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
func (fc *fastCall) attempt(cl *topology.Cluster, fl *flushList) {
	s, c := fc.s, &fc.c
	up := s.up.(*relayUpstream)
	u := up.connNow(cl)
	if u == nil {
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
	fc.us = ustream{onDone: fc.onDone}
	written, err := u.open(c, &fc.us, fc.req, fl)
	if err != nil && !written {
		// Nothing was written (errWouldBlock, or the connection just
		// closed): undo and let a worker make the attempt.
		countEnd(cl)
		done(true)
		c.ev.Attempts--
		fc.slowAttempt(cl)
		return
	}
	fc.up = upRef{u: u, id: fc.us.id} // in fc: no allocation of its own
	fc.st.abortUp.Store(&fc.up)
	if err != nil {
		// Part of the request went out, then writing failed: the
		// connection is broken. Failing it ends every stream on it, this
		// one included, exactly once, through onDone, with "connection to
		// cluster lost" (Unavailable: a write's outcome is unknown, a read
		// moves on). Handing the call to a worker as well ended it twice
		// ("inflight counter below zero") and could send it twice; ending
		// it with the bare socket error answered the client Unknown.
		u.fail(err, fl)
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

// onDone judges the attempt where the cluster's answer ended, normally on
// that connection's reader goroutine.
func (fc *fastCall) onDone(us *ustream, fl *flushList) {
	fc.st.abortUp.Store(nil)
	s, c, cl := fc.s, &fc.c, fc.cl
	resp, sent, err := us.result(cl.ID)
	countEnd(cl)
	if us.refused && !fc.resent && c.ctx.Err() == nil {
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

// finish answers the client and ends the call.
func (fc *fastCall) finish(resp *frame, err error, fl *flushList) {
	st, d := fc.st, fc.st.d
	resp, err = fc.s.finishCall(&fc.c, resp, err)
	if err != nil {
		d.respondErr(st, &fc.c, err)
	} else if !d.respondNow(st, fc.c.headerCluster(), resp, fl) {
		// The client's windows are full: a goroutine waits for credit.
		go func() {
			d.respond(st, fc.c.headerCluster(), resp)
			resp.free()
			fc.end()
		}()
		return
	} else {
		resp.free()
	}
	fc.end()
}

func (fc *fastCall) end() {
	fc.req.free()
	fc.st.d.endStream(fc.st)
	fc.st.d.r.active.Done()
}

// toWorker continues the call on a goroutine that may block.
func (fc *fastCall) toWorker(run func() (*frame, error)) {
	go func() {
		resp, err := run()
		resp, err = fc.s.finishCall(&fc.c, resp, err)
		st, d := fc.st, fc.st.d
		if err != nil {
			d.respondErr(st, &fc.c, err)
		} else {
			d.respond(st, fc.c.headerCluster(), resp)
			resp.free()
		}
		fc.end()
	}()
}

// upRef names a backend stream a fast call waits on, so that a client's
// RST_STREAM can reset it too.
type upRef struct {
	u  *uconn
	id uint32
}

func (r *upRef) abort() { r.u.abort(r.id, http2.ErrCodeCancel, errStreamReset) }
