package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// controller answers the admin API from the app's components.
type controller struct{ app *App }

func (c *controller) Topology(context.Context) admin.View {
	a := c.app
	tv := a.topo.View()
	v := admin.View{
		Epoch:        tv.Epoch,
		Leader:       tv.Leader,
		FailingOver:  tv.FailingOver,
		LeaderLostAt: tv.LeaderLostAt,
		Discovery:    tv.Discovery,
		FailoverMode: string(a.cfg.Failover.Mode),
		GeneratedAt:  time.Now(),
	}
	as := a.arbiter.Status()
	v.LastChange = changeOf(as.LastChange)
	for _, r := range as.Salvage {
		sv := admin.Salvage{
			Epoch: r.Epoch, OldLeader: r.OldLeader, NewLeader: r.NewLeader, At: r.At,
			Checkpoints: r.Checkpoints, OldLeaderReturned: r.OldLeaderReturned,
		}
		if r.Unreplicated != nil {
			sv.Unreplicated = r.Unreplicated.String()
		}
		v.Salvage = append(v.Salvage, sv)
	}
	for _, cv := range tv.Clusters {
		out := admin.ClusterView{
			ID: cv.ID, URI: cv.URI, Role: string(cv.Role),
			Healthy: cv.Healthy, HealthReason: cv.HealthReason,
			Breaker:          string(cv.Breaker),
			LagReason:        cv.LagReason,
			Checkpoints:      cv.Checkpoints,
			Quarantined:      cv.Quarantined,
			QuarantineReason: cv.QuarantineReason,
			Outstanding:      cv.Outstanding,
			Served:           cv.RequestsServed,
		}
		if cv.LagSeconds != nil {
			out.LagSeconds, out.LagKnown = *cv.LagSeconds, true
		}
		v.Clusters = append(v.Clusters, out)
	}
	return v
}

func (c *controller) Ready() (bool, string) {
	s := c.app.topo.Snapshot()
	switch {
	case s.Leader == nil && s.FailingOver:
		return false, "no leader: failover under way"
	case s.Leader == nil:
		return false, "no leader known yet"
	case !s.Leader.Healthy:
		return false, fmt.Sprintf("leader %s unreachable: %s", s.Leader.ID, s.Leader.HealthReason)
	}
	return true, ""
}

func (c *controller) Switchover(ctx context.Context, to string) (admin.Result, error) {
	ch, err := c.app.arbiter.Switchover(ctx, to)
	return resultOf(ch), adminError(err)
}

func (c *controller) Failover(ctx context.Context, to string) (admin.Result, error) {
	ch, err := c.app.arbiter.Failover(ctx, to)
	return resultOf(ch), adminError(err)
}

// adminError wraps the arbiter's errors in the admin API's, so the HTTP
// status says what happened (404 unknown cluster, 409 refused).
func adminError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, topology.ErrUnknownCluster):
		return fmt.Errorf("%w: %w", admin.ErrUnknownCluster, err)
	case errors.Is(err, topology.ErrRefused):
		return fmt.Errorf("%w: %w", admin.ErrRefused, err)
	}
	return err
}

// resultOf turns a leader change into the admin API's answer.
func resultOf(ch topology.Change) admin.Result {
	r := admin.Result{
		Kind: ch.Kind, From: ch.From, To: ch.To, Epoch: ch.Epoch,
		TookSeconds: ch.Took.Seconds(), WritesHeld: ch.WritesHeld,
		SalvageCheckpoint: ch.Salvage, Message: ch.Message,
	}
	for id := range ch.Quarantined {
		r.Quarantined = append(r.Quarantined, id)
	}
	slices.Sort(r.Quarantined)
	if ch.Result == topology.ResultOK {
		msg := fmt.Sprintf("writes held for %s", ch.Held.Round(time.Millisecond))
		if r.Message != "" {
			msg = r.Message + "; " + msg
		}
		r.Message = msg
	}
	return r
}

// changeOf renders a leader change for the topology view.
func changeOf(ch *topology.Change) *admin.Change {
	if ch == nil {
		return nil
	}
	return &admin.Change{
		Kind: ch.Kind, From: ch.From, To: ch.To, Epoch: ch.Epoch, At: ch.At,
		TookSeconds: ch.Took.Seconds(), Result: ch.Result, Message: ch.Message,
	}
}

// recordChange turns a leader change attempt into metrics.
func (a *App) recordChange(ch topology.Change) {
	ctx := context.Background()
	m := a.tel.Metrics
	switch ch.Kind {
	case topology.KindFailover:
		m.RecordFailover(ctx, ch.Result)
	case topology.KindSwitchover:
		m.RecordSwitchover(ctx, ch.Result)
	}
	if ch.Result == topology.ResultOK {
		m.RecordLeaderChange(ctx, ch.Kind, ch.To)
	}
}

// metricsState feeds the per-cluster gauges at scrape time.
func (a *App) metricsState() telemetry.State {
	tv := a.topo.View()
	// A lost leader not yet replaced counts as failing over, in manual
	// mode too: writes cannot go anywhere.
	st := telemetry.State{Epoch: tv.Epoch, FailingOver: tv.FailingOver || tv.LeaderLostAt != nil}
	for _, cv := range tv.Clusters {
		cs := telemetry.ClusterState{
			ID: cv.ID, Role: string(cv.Role), Healthy: cv.Healthy,
			Quarantined: cv.Quarantined, Breaker: string(cv.Breaker),
			Outstanding: cv.Outstanding,
		}
		if cv.LagSeconds != nil {
			cs.LagSeconds, cs.LagKnown = *cv.LagSeconds, true
		}
		st.Clusters = append(st.Clusters, cs)
	}
	return st
}

// observer turns the proxy's call events into metrics and span attributes.
type observer struct{ tel *telemetry.Telemetry }

func (o *observer) ObserveCall(ctx context.Context, ev proxy.CallEvent) {
	class := ev.Class.String()
	o.tel.Metrics.RecordRequest(ctx, telemetry.Request{
		Method: ev.Method, Class: class, Cluster: ev.Cluster, Role: string(ev.Role),
		Code: ev.Code.String(), Duration: ev.Duration,
	})
	if ev.Class == proxy.ClassRead {
		o.tel.Metrics.RecordRead(ctx, ev.Cluster, ev.Reason)
	}
	if ev.Attempts > 1 {
		o.tel.Metrics.RecordRetry(ctx, ev.Method, class)
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		route := telemetry.Route{
			Class: class, Cluster: ev.Cluster, Role: string(ev.Role), Reason: ev.Reason,
			RequiredTimestamp: ev.Required,
		}
		if ev.Class == proxy.ClassRead {
			route.ConsistencyLevel = ev.Level.String()
		}
		span.SetAttributes(route.Attributes()...)
	}
}

// tracingInterceptors start one span per call, continuing the client's
// trace context, and hand the span's context to the backend in place of
// the client's (the proxy forwards incoming metadata as it is).
func tracingInterceptors(tel *telemetry.Telemetry) []grpc.ServerOption {
	tracer := tel.Tracer()
	prop := tel.Propagator
	start := func(ctx context.Context, fullMethod string) (context.Context, trace.Span) {
		md, _ := metadata.FromIncomingContext(ctx)
		ctx = prop.Extract(ctx, metadataCarrier(md))
		ctx, span := tracer.Start(ctx, fullMethod, trace.WithSpanKind(trace.SpanKindServer))
		out := md.Copy()
		prop.Inject(ctx, metadataCarrier(out))
		return metadata.NewIncomingContext(ctx, out), span
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, span := start(ctx, info.FullMethod)
		defer span.End()
		resp, err := h(ctx, req)
		if err != nil {
			span.RecordError(err)
		}
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, span := start(ss.Context(), info.FullMethod)
		defer span.End()
		err := h(srv, &tracedStream{ServerStream: ss, ctx: ctx})
		if err != nil {
			span.RecordError(err)
		}
		return err
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}
}

type tracedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *tracedStream) Context() context.Context { return s.ctx }

// metadataCarrier adapts gRPC metadata to otel's TextMapCarrier.
type metadataCarrier metadata.MD

var _ propagation.TextMapCarrier = metadataCarrier{}

func (c metadataCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c metadataCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}
