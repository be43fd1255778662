package proxy

import (
	"context"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/relay"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// The relay engine's side in package proxy: package relay speaks HTTP/2
// to clients and clusters and asks relayHandler where each call goes;
// relayUpstream sends a call through the relay's connection pool. The
// fast path (fast.go) routes the common unary call on the connection
// goroutines.

// startRelay sets s up for the relay engine: the pool of connections to
// the clusters (s.up, s.pool) and the relay's server (s.relay), whose
// workers start now.
func (s *Server) startRelay(opts *Options) {
	s.pool = relay.NewPool(relay.PoolOptions{Dial: opts.DialBackend, Creds: opts.BackendCreds,
		MaxMessageSize: opts.MaxMessageSize, Keepalive: opts.BackendKeepalive, Logger: opts.Logger,
		StreamWindow: opts.RelayLimits.WithDefaults().BackendStreamWindow})
	s.up = relayUpstream{pool: s.pool}
	obs, _ := opts.Observer.(RelayObserver)
	s.relay = relay.NewServer(relay.ServerOptions{Handler: relayHandler{s}, Methods: relayMethods(s.methods),
		Service: milvusServiceName, Limits: opts.RelayLimits, MaxMessageSize: opts.MaxMessageSize,
		Creds: opts.Creds, CallHook: opts.CallHook, Observer: obs, Logger: opts.Logger})
}

// relayHandler is the proxy's relay.Handler.
type relayHandler struct{ s *Server }

// relayCall is a relay call as the routing code sees it.
func relayCall(s *Server, rc *relay.Call) call {
	return call{m: s.methods[rc.Method()], ctx: rc.Context(), remote: rc.Remote(), mdDB: rc.DB(), ident: rc.Identifier(), fwd: rc.Forward(), rc: rc}
}

func (h relayHandler) StartUnary(rc *relay.Call, req *frame, fl *relay.Flush) {
	h.s.startUnary(rc, req, fl)
}

func (h relayHandler) Unary(rc *relay.Call, req *frame) (*frame, string, error) {
	c := relayCall(h.s, rc)
	resp, err := h.s.handle(&c, req)
	return resp, c.headerCluster(), err
}

// Stream proxies a streaming method to the leader (Server.proxyStream):
// messages from the client go to the backend as they arrive, messages
// from the backend come back under the client's flow control.
func (h relayHandler) Stream(rc *relay.Call, cs relay.ClientStream) (string, bool, error) {
	c := relayCall(h.s, rc)
	out := metadata.NewOutgoingContext(rc.Context(), rc.Metadata())
	started, err := h.s.proxyStream(&c, out, relayClientStream{cs})
	return c.headerCluster(), started, err
}

func (h relayHandler) Health() (healthpb.HealthCheckResponse_ServingStatus, <-chan struct{}) {
	return h.s.healthState()
}

func (h relayHandler) Draining() bool { return h.s.draining.Load() }

// relayClientStream is the relay engine's clientStream.
type relayClientStream struct{ cs relay.ClientStream }

func (r relayClientStream) recv(ctx context.Context) (*frame, int, error) { return r.cs.Recv(ctx) }
func (r relayClientStream) sent(credit int)                               { r.cs.Sent(credit) }
func (r relayClientStream) sendHeader(hdr metadata.MD, cluster string) error {
	return r.cs.SendHeader(hdr, cluster)
}
func (r relayClientStream) send(m *frame) error { return r.cs.Send(m) }
func (r relayClientStream) finish(outcome error, trailer metadata.MD, cluster string) {
	r.cs.Finish(outcome, trailer, cluster)
}

// relayUpstream is the relay engine's upstream: the relay's pool of
// HTTP/2 connections to the clusters.
type relayUpstream struct{ pool *relay.Pool }

func (u relayUpstream) roundTrip(c *call, cl *topology.Cluster, req *frame, _ bool) (*frame, bool, error) {
	if c.rc != nil {
		// The client call's own request: its answer is charged to the
		// client connection's response budget.
		return u.pool.RoundTrip(c.rc.Request(), cl, req)
	}
	return u.pool.RoundTrip(relay.Request{Ctx: c.ctx, Path: c.m.full, Forward: c.fwd}, cl, req)
}

// relayMethods is the method table as the relay needs it, in s.methods'
// order (relay.Call.Method indexes both).
func relayMethods(ms []*method) []relay.Method {
	out := make([]relay.Method, len(ms))
	for i, m := range ms {
		out[i] = relay.Method{Path: m.full, Stream: m.stream}
	}
	return out
}
