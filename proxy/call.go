package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/consistency"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// call is the state of one client call, kept on the handler's stack. The
// engine that received it (grpc-go server or frame relay) fills in how
// the client's metadata travels on.
type call struct {
	m      *method
	ctx    context.Context // the client call's cancellation and deadline
	remote string          // the client's address, when the engine knows it
	mdDB   string          // the dbname header
	ident  string          // the identifier header

	out context.Context     // grpc engine: ctx carrying the forwarded metadata
	fwd []hpack.HeaderField // relay engine: the forwarded metadata

	session string // computed on first use
	served  *topology.Cluster
	local   bool // answered by the proxy itself
	ev      CallEvent
}

// sessionKey is the client's session: the identifier it got from Connect,
// else its connection.
func (c *call) sessionKey() string {
	if c.session != "" {
		return c.session
	}
	switch {
	case c.ident != "" && c.ident != "0":
		c.session = "id:" + c.ident
	case c.remote != "":
		c.session = "conn:" + c.remote
	default:
		if p, ok := peer.FromContext(c.ctx); ok && p.Addr != nil {
			c.session = "conn:" + p.Addr.String()
		} else {
			c.session = "anonymous"
		}
	}
	return c.session
}

// db returns the effective database of a request: its db_name field, else
// the dbname header, else "default".
func (c *call) db(field []byte) string {
	if len(field) > 0 {
		return string(field)
	}
	return consistency.NormalizeDB(c.mdDB)
}

// forwardable reports whether a client metadata key goes on to the
// backend. Everything does (authorization, dbname, identifier, request
// ids, trace context, user-agent) except HTTP/2 pseudo-headers, hop-by-hop
// headers and the keys gRPC owns on each hop.
func forwardable(k string) bool {
	if k == "" || k[0] == ':' {
		return false
	}
	switch k {
	case "content-type", "te", "host", "connection", "keep-alive",
		"proxy-connection", "transfer-encoding", "upgrade",
		"grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "grpc-message-type",
		"grpc-status", "grpc-message", "grpc-status-details-bin",
		"grpc-previous-rpc-attempts", "grpc-retry-pushback-ms":
		return false
	}
	return true
}

// handle runs one unary call, whichever engine received it. The returned
// frame is the response message; on error it is nil.
func (s *Server) handle(c *call, req *frame) (*frame, error) {
	if s.draining.Load() {
		return nil, errDraining
	}
	var start time.Time
	if s.obs != nil {
		start = time.Now()
	}
	m := c.m
	var resp *frame
	var err error
	switch m.class {
	case ClassRead, ClassMetaRead:
		resp, err = s.read(c, req)
	case ClassLocal:
		resp, err = s.local(c)
	default:
		resp, err = s.leaderCall(c, req)
	}
	if s.obs != nil {
		c.ev.Method, c.ev.Class, c.ev.Duration = m.name, m.class, time.Since(start)
		c.ev.Code = status.Code(err)
		if c.served != nil {
			c.ev.Cluster, c.ev.Role = c.served.ID, c.served.Role
		}
		if resp != nil {
			if st, _, ok := scanResponse(resp.bytes(), &layout{statusField: m.layout.statusField}); ok {
				c.ev.MilvusCode = st.code
				if st.code == 0 && st.errorCode != 0 {
					c.ev.MilvusCode = -st.errorCode // legacy code only
				}
			}
		}
		s.obs.ObserveCall(c.ctx, c.ev)
	}
	if err != nil {
		if resp != nil {
			resp.free()
		}
		return nil, err
	}
	return resp, nil
}

// headerCluster returns the HeaderCluster value for a finished call, ""
// when no cluster answered.
func (c *call) headerCluster() string {
	switch {
	case c.local:
		return LocalCluster
	case c.served != nil:
		// Errors from a backend carry the header too: they are its answer.
		return c.served.ID
	}
	return ""
}

// errBreaker marks an attempt the cluster's breaker refused: nothing was
// sent.
type errBreaker struct {
	cluster string
	err     error
}

func (e *errBreaker) status() error { return status.Error(codes.Unavailable, e.Error()) }

func (e *errBreaker) Error() string {
	return "milvus-ha-proxy: circuit breaker of cluster " + e.cluster + " is open: " + e.err.Error()
}

// upstream is how an engine sends one unary request to a cluster.
type upstream interface {
	// roundTrip sends req to cl and waits for the answer. sent is false
	// only when the request provably never reached the cluster; with
	// wantSent false the engine may skip finding out and report true.
	roundTrip(c *call, cl *topology.Cluster, req *frame, wantSent bool) (resp *frame, sent bool, err error)
}

// forward sends req to cluster cl once, through its breaker, keeping the
// cluster's counters.
func (s *Server) forward(c *call, cl *topology.Cluster, req *frame, wantSent bool) (*frame, bool, error) {
	done, err := s.topo.Allow(cl.ID)
	if err != nil {
		return nil, false, &errBreaker{cluster: cl.ID, err: err}
	}
	if cl.Outstanding != nil {
		cl.Outstanding.Add(1)
	}
	if cl.Served != nil {
		cl.Served.Add(1)
	}
	c.ev.Attempts++
	c.served = cl
	resp, sent, err := s.up.roundTrip(c, cl, req, wantSent)
	if cl.Outstanding != nil {
		cl.Outstanding.Add(-1)
	}
	done(!transportFailure(c.ctx, err))
	return resp, sent, err
}

// transportFailure reports whether err says the cluster failed to answer
// (as opposed to answering with an error, or the client giving up). These
// count against the cluster's breaker and make reads move on.
func transportFailure(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.Aborted, codes.Canceled:
		return true
	}
	return false
}

// retryableRead reports whether a read that failed with err may be tried on
// another cluster: anything but the client's own end, its credentials, or
// its request being refused.
func retryableRead(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Canceled, codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied,
		codes.ResourceExhausted, codes.AlreadyExists, codes.OutOfRange:
		return false
	}
	return true
}

// cannotServe reports whether a Milvus status from an alternative means
// that this cluster cannot serve the read (it has not caught up with the
// collection, partition, index, alias or database, or has not loaded it,
// or is not ready), so the leader should be asked instead. Codes from
// merr; 4 is the legacy CollectionNotExists.
func cannotServe(st milvusStatus) bool {
	switch st.code {
	case 1, 2, // service not ready / unavailable
		100, 101, 103, 106, // collection not found, not loaded, not fully loaded, recovering
		200, 201, 202, // partition not found, not loaded, not fully loaded
		700,  // index not found
		800,  // database not found
		1600: // alias not found
		return true
	case 0:
		return st.errorCode == int32(commonpb.ErrorCode_CollectionNotExists)
	}
	return false
}

// read routes a Search, HybridSearch, Query or metadata read.
func (s *Server) read(c *call, req *frame) (*frame, error) {
	m := c.m
	var f readFields
	if err := scanRequest(req.bytes(), &m.layout, &f); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "milvus-ha-proxy: %s request: %v", m.name, err)
	}
	db := c.db(f.db)
	coll := string(f.coll)
	rr := router.ReadRequest{}
	snap := s.topo.Snapshot()

	if m.class == ClassMetaRead {
		// Metadata carries no consistency fields: treat it as a Session
		// read that must see the session's own DDL (and writes, for
		// statistics).
		rr.Required = s.sessions.Session(c.sessionKey(), db, coll)
		c.ev.Level, c.ev.Required = consistency.Session, rr.Required
		return s.route(c, snap, rr, req)
	}

	if coll == "" {
		return s.toLeader(c, req, ReasonLeaderNoCollInfo)
	}
	info, err := s.topo.Collection(c.ctx, db, coll)
	if err != nil {
		// Unknown to the leader too, most likely: let it answer.
		return s.toLeader(c, req, ReasonLeaderNoCollInfo)
	}
	rr.PChannels = info.PChannels
	d := consistency.Resolve(consistency.ReadFields{
		Level:      consistency.Level(f.level),
		Guarantee:  f.guarantee,
		UseDefault: f.useDefault,
		Iterator:   f.iterator,
	}, consistency.Level(info.ConsistencyLevel))
	c.ev.Level = d.Level

	unchanged := d.Pinned
	switch d.Level {
	case consistency.Strong:
		if s.strong == StrongLeader {
			// The leader resolves "now" itself: forward as sent.
			rr.Strong = true
			unchanged = true
			break
		}
		ts, err := s.topo.AllocLeaderTimestamp(c.ctx)
		if err != nil {
			s.log.Debug("proxy: AllocTimestamp for a Strong read failed; using the leader", "err", err)
			return s.toLeader(c, req, ReasonLeaderStrongAlloc)
		}
		rr.Required = ts
	case consistency.Session:
		rr.Required = s.rules.Required(d, s.sessions.Session(c.sessionKey(), db, coll), 0)
	case consistency.Bounded:
		rr.Required = s.rules.Required(d, 0, s.topo.LeaderNow())
	case consistency.Eventually:
		rr.MaxLag = s.maxLag
	default:
		rr.Required = s.rules.Required(d, 0, 0)
	}
	c.ev.Required = rr.Required
	if !unchanged {
		level, g := consistency.Forward(rr.Required)
		req.tail = appendConsistency(req.tailBuf[:0], &m.layout, int32(level), g)
	}
	if d.Level == consistency.Strong && s.strong == StrongWait {
		return s.routeStrongWait(c, snap, rr, req)
	}
	return s.route(c, snap, rr, req)
}

// routeStrongWait serves a Strong read under strong_reads: wait: an
// alternative that has replicated the leader's fresh timestamp, waiting up
// to max_wait for one, else the leader.
func (s *Server) routeStrongWait(c *call, snap *topology.Snapshot, rr router.ReadRequest, req *frame) (*frame, error) {
	if s.maxWait > 0 {
		var timer *time.Timer
		for {
			ch := s.topo.Changed()
			snap = s.topo.Snapshot()
			if s.router.PickRead(snap, rr).Reason != router.ReasonLeaderLag {
				break
			}
			if timer == nil {
				timer = time.NewTimer(s.maxWait)
				defer timer.Stop()
			}
			select {
			case <-ch:
				continue
			case <-timer.C:
			case <-c.ctx.Done():
				return nil, status.FromContextError(c.ctx.Err()).Err()
			}
			break
		}
	}
	return s.route(c, snap, rr, req)
}

// route sends a read where the router says, retrying after transport
// failures on another eligible cluster and finally the leader, and moving
// to the leader when an alternative answers that it cannot serve the read.
// A read in flight is never cut because its cluster's lag grew: lag only
// steers new reads.
func (s *Server) route(c *call, snap *topology.Snapshot, rr router.ReadRequest, req *frame) (*frame, error) {
	return s.routeFrom(c, snap, rr, s.router.PickRead(snap, rr), req)
}

// toLeader serves a read on the leader, as sent (and, should the leader
// fail at the transport level, wherever the router sends a Strong read).
func (s *Server) toLeader(c *call, req *frame, reason string) (*frame, error) {
	req.tail = nil
	snap := s.topo.Snapshot()
	rr := router.ReadRequest{Strong: true}
	dec := s.router.PickRead(snap, rr)
	if dec.Cluster != nil {
		dec.Reason = router.Reason(reason)
	}
	return s.routeFrom(c, snap, rr, dec, req)
}

func (s *Server) routeFrom(c *call, snap *topology.Snapshot, rr router.ReadRequest, dec router.Decision, req *frame) (*frame, error) {
	var excl [8]string
	rr.Exclude = append(excl[:0], rr.Exclude...)
	var lastErr error
	for attempt := 0; attempt <= len(snap.Clusters); attempt++ {
		cl := dec.Cluster
		reason := string(dec.Reason)
		if cl == nil {
			if lastErr != nil {
				return nil, lastErr
			}
			// No cluster at all (a failover is under way): wait for the
			// leader as writes do.
			leader, err := s.topo.WaitLeader(c.ctx)
			if err != nil {
				return nil, err
			}
			cl, reason = leader, ReasonLeaderWait
		}
		c.ev.Reason = reason
		resp, _, err := s.forward(c, cl, req, false)
		if err != nil {
			var be *errBreaker
			if errors.As(err, &be) {
				lastErr = be.status()
			} else if retryableRead(c.ctx, err) {
				lastErr = err
			} else {
				return nil, err
			}
			rr.Exclude = append(rr.Exclude, cl.ID)
			snap = s.topo.Snapshot()
			dec = s.router.PickRead(snap, rr)
			continue
		}
		if cl.Role != topology.RoleLeader {
			if st, _, ok := scanResponse(resp.bytes(), &c.m.layout); ok && cannotServe(st) {
				leader := s.topo.Snapshot().Leader
				if leader != nil && leader.ID != cl.ID && !contains(rr.Exclude, leader.ID) {
					resp.free()
					rr.Exclude = append(rr.Exclude, cl.ID)
					dec = router.Decision{Cluster: leader, Reason: ReasonLeaderFallback}
					continue
				}
			}
		}
		return resp, nil
	}
	if lastErr == nil {
		lastErr = status.Error(codes.Unavailable, "milvus-ha-proxy: no cluster could serve the read")
	}
	return nil, lastErr
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// local answers CheckHealth from the proxy's own view: healthy while a
// healthy leader is known and no failover is under way.
func (s *Server) local(c *call) (*frame, error) {
	snap := s.topo.Snapshot()
	resp := &milvuspb.CheckHealthResponse{Status: &commonpb.Status{}, IsHealthy: true}
	switch {
	case s.draining.Load():
		resp.IsHealthy = false
		resp.Reasons = append(resp.Reasons, "milvus-ha-proxy is shutting down")
	case snap == nil || snap.Leader == nil:
		resp.IsHealthy = false
		if snap != nil && snap.FailingOver {
			resp.Reasons = append(resp.Reasons, "no leader: failover under way")
		} else {
			resp.Reasons = append(resp.Reasons, "no leader known")
		}
	case !snap.Leader.Healthy:
		resp.IsHealthy = false
		resp.Reasons = append(resp.Reasons, "leader "+snap.Leader.ID+" unhealthy: "+snap.Leader.HealthReason)
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "milvus-ha-proxy: encoding CheckHealth: %v", err)
	}
	c.ev.Reason = ReasonLocal
	c.local = true
	return frameFromBytes(b), nil
}
