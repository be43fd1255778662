package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/consistency"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/rawmsg"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/relay"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// frame is one gRPC message as raw bytes, the unit both engines carry.
type frame = rawmsg.Msg

// frameFromBytes wraps bytes the proxy built itself (local answers).
func frameFromBytes(b []byte) *frame { return rawmsg.FromBytes(b) }

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
	rc  *relay.Call         // relay engine: the client call
	// acct (grpc engine) is the call's charges against its client
	// connection's response budget (grpc_budget.go); nil: none.
	acct *grpcRespAcct

	session string // computed on first use
	start   time.Time
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

// handle runs one unary call, whichever engine received it. The returned
// frame is the response message; on error it is nil.
func (s *Server) handle(c *call, req *frame) (*frame, error) {
	if s.draining.Load() {
		return nil, errDraining
	}
	if s.obs != nil {
		c.start = time.Now()
	}
	var resp *frame
	var err error
	switch c.m.class {
	case ClassRead, ClassMetaRead:
		resp, err = s.read(c, req)
	case ClassLocal:
		resp, err = s.local(c)
	default:
		resp, err = s.leaderCall(c, req)
	}
	return s.finishCall(c, resp, err)
}

// finishCall reports a finished call to the observer and settles the
// response.
func (s *Server) finishCall(c *call, resp *frame, err error) (*frame, error) {
	if s.obs != nil {
		m := c.m
		c.ev.Method, c.ev.Class, c.ev.Duration = m.name, m.class, time.Since(c.start)
		c.ev.Code = status.Code(err)
		if c.served != nil {
			c.ev.Cluster, c.ev.Role = c.served.ID, c.served.Role
		}
		if resp != nil {
			if st, _, ok := scanResponse(resp.Bytes(), &layout{statusField: m.layout.statusField}); ok {
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
			resp.Free()
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

// errFenced marks an attempt refused because the cluster is fenced: a
// leader change is taking it out of the leader role. Nothing was sent; a
// write waits for the change to end (topology.Manager.WaitWritable).
type errFenced struct{ cluster string }

func (e *errFenced) status() error { return status.Error(codes.Unavailable, e.Error()) }

func (e *errFenced) Error() string {
	return "milvus-ha-proxy: cluster " + e.cluster + " is fenced while a leader change takes it out of the leader role"
}

// notAdmitted is an attempt the topology refused before it was sent
// (errBreaker, errFenced).
type notAdmitted interface {
	error
	status() error
}

// refusedBy wraps an error of Topology.Allow for cluster.
func refusedBy(cluster string, err error) notAdmitted {
	if errors.Is(err, topology.ErrFenced) {
		return &errFenced{cluster: cluster}
	}
	return &errBreaker{cluster: cluster, err: err}
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
		return nil, false, refusedBy(cl.ID, err)
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

// transportFailure reports whether err says the cluster failed to answer:
// its connection was lost or refused the call (Unavailable), or it let
// the proxy's own deadline pass (DeadlineExceeded while the client's
// context is still live). These count against the cluster's breaker and
// make reads move on. Everything else is an answer, even Internal,
// Unknown, Aborted or Canceled: a backend that rejects a malformed
// request, or a client that cancels, says nothing about the cluster's
// health, and counting them would let one client open the breaker for
// everyone.
func transportFailure(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	st, isStatus := status.FromError(err)
	if !isStatus {
		// Not a gRPC status: the proxy's own socket or stream error
		// (a backend's answer always arrives as a status), so the
		// connection failed, not the request.
		return true
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
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

// countStart and countEnd keep a cluster's call counters around an
// attempt.
func countStart(cl *topology.Cluster) {
	if cl.Outstanding != nil {
		cl.Outstanding.Add(1)
	}
	if cl.Served != nil {
		cl.Served.Add(1)
	}
}

func countEnd(cl *topology.Cluster) {
	if cl.Outstanding != nil {
		cl.Outstanding.Add(-1)
	}
}
