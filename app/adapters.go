package app

import (
	"context"

	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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
	v.Arbiter = arbiterView(a.etcd)
	as := a.arbiter.Status()
	v.Phase = as.Phase
	v.ChangeUnderWay = changeOf(as.Current)
	v.LastChange = changeOf(as.LastChange)
	v.SplitBrainRisk = as.SplitBrainRisk
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
			Reads:            a.obs.readsOf(cv.ID),
		}
		if cv.LagSeconds != nil {
			out.LagSeconds, out.LagKnown = *cv.LagSeconds, true
		}
		v.Clusters = append(v.Clusters, out)
	}
	return v
}

// Ready is the topology's own verdict (leader known, reachable, not lost,
// no failover under way); the admin server adds draining.
func (c *controller) Ready() (bool, string) {
	if e := c.app.etcd; e != nil {
		if st := e.Status(); st.Fenced {
			return false, st.FenceReason
		}
	}
	return c.app.topo.Ready()
}

func (c *controller) Switchover(ctx context.Context, to string) (admin.Result, error) {
	if r, ok, err := c.forward(ctx, topology.KindSwitchover, to); ok {
		return r, err
	}
	ch, err := c.app.arbiter.Switchover(ctx, to)
	return resultOf(ch), adminError(err)
}

func (c *controller) Failover(ctx context.Context, to string) (admin.Result, error) {
	if r, ok, err := c.forward(ctx, topology.KindFailover, to); ok {
		return r, err
	}
	ch, err := c.app.arbiter.Failover(ctx, to)
	return resultOf(ch), adminError(err)
}

func (c *controller) Attach(ctx context.Context, cluster string) (admin.Result, error) {
	if r, ok, err := c.forward(ctx, topology.KindAttach, cluster); ok {
		return r, err
	}
	ch, err := c.app.arbiter.Attach(ctx, cluster)
	return resultOf(ch), adminError(err)
}

// adminError marks the arbiter's errors with the admin API's, so the
// HTTP status says what happened (404 unknown cluster, 409 refused),
// keeping the arbiter's message as it is (it names the problem once).
func adminError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, topology.ErrUnknownCluster):
		return &markedError{mark: admin.ErrUnknownCluster, err: err}
	case errors.Is(err, topology.ErrRefused):
		return &markedError{mark: admin.ErrRefused, err: err}
	}
	return err
}

// markedError is err, also matching mark with errors.Is.
type markedError struct{ mark, err error }

func (e *markedError) Error() string   { return e.err.Error() }
func (e *markedError) Unwrap() []error { return []error{e.mark, e.err} }

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
	if ch.Result == topology.ResultOK && ch.Kind != topology.KindAttach {
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
	out := &admin.Change{
		Kind: ch.Kind, From: ch.From, To: ch.To, Epoch: ch.Epoch, At: ch.At,
		TookSeconds: ch.Took.Seconds(), Result: ch.Result, Message: ch.Message,
		Current: ch.Current,
	}
	for _, st := range ch.Steps {
		out.Steps = append(out.Steps, admin.Step{
			Name: st.Name, Cluster: st.Cluster, Sent: st.Sent, Answer: st.Answer, Error: st.Error,
			Start: st.Start, TookSeconds: st.Took.Seconds(), Done: st.Done(),
		})
	}
	return out
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
	if ch.Result == topology.ResultOK && ch.Kind != topology.KindAttach {
		m.RecordLeaderChange(ctx, ch.Kind, ch.To)
	}
	if a.admin != nil && ch.Result != "" {
		a.admin.RecordChange(*changeOf(&ch))
	}
}

// metricsState feeds the per-cluster gauges at scrape time.
func (a *App) metricsState() telemetry.State {
	tv := a.topo.View()
	// A lost leader not yet replaced counts as failing over, in manual
	// mode too: writes cannot go anywhere.
	st := telemetry.State{Epoch: tv.Epoch, FailingOver: tv.FailingOver || tv.LeaderLostAt != nil}
	if a.etcd != nil {
		es := a.etcd.Status()
		st.Arbiter = &telemetry.ArbiterState{Connected: es.Connected, Deciding: es.Deciding, Fenced: es.Fenced, Epoch: es.Epoch}
	}
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

// observer turns the proxy's call events into metrics and span attributes,
// and counts reads per cluster for the admin API (the status page plots
// their rate).
type observer struct {
	tel   *telemetry.Telemetry
	reads sync.Map // cluster id -> *atomic.Int64
}

// readsOf returns how many reads cluster id has served.
func (o *observer) readsOf(id string) int64 {
	if n, ok := o.reads.Load(id); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

func (o *observer) ObserveCall(ctx context.Context, ev proxy.CallEvent) {
	class := ev.Class.String()
	o.tel.Metrics.RecordRequest(ctx, telemetry.Request{
		Method: ev.Method, Class: class, Cluster: ev.Cluster, Role: string(ev.Role),
		Code: ev.Code.String(), Duration: ev.Duration,
	})
	if ev.Class == proxy.ClassRead {
		o.tel.Metrics.RecordRead(ctx, ev.Cluster, ev.Reason)
		if ev.Cluster != "" {
			n, ok := o.reads.Load(ev.Cluster)
			if !ok {
				n, _ = o.reads.LoadOrStore(ev.Cluster, new(atomic.Int64))
			}
			n.(*atomic.Int64).Add(1)
		}
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

// tracer starts one server span per call, continuing the client's trace
// context, and hands the span's context to the backend in place of the
// client's (the proxy forwards incoming metadata as it is).
type tracer struct {
	tel *telemetry.Telemetry
}

// start extracts the client's context from md, starts the span and
// injects it into md (which goes on to the backend).
func (t tracer) start(ctx context.Context, fullMethod string, md metadata.MD) (context.Context, trace.Span) {
	ctx = t.tel.Propagator.Extract(ctx, metadataCarrier(md))
	ctx, span := t.tel.Tracer().Start(ctx, fullMethod, trace.WithSpanKind(trace.SpanKindServer))
	t.tel.Propagator.Inject(ctx, metadataCarrier(md))
	return ctx, span
}

// end marks failed calls so tracing backends flag them, with the gRPC code
// as OpenTelemetry's rpc conventions name it.
func (tracer) end(span trace.Span, err error) {
	code := status.Code(err)
	span.SetAttributes(attribute.Int64("rpc.grpc.status_code", int64(code)))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, code.String())
	}
	span.End()
}

// hook is the relay engine's stand-in for interceptors.
func (t tracer) hook(ctx context.Context, fullMethod string, md metadata.MD) (context.Context, func(error)) {
	ctx, span := t.start(ctx, fullMethod, md)
	return ctx, func(err error) { t.end(span, err) }
}

// interceptors serve the grpc engine.
func (t tracer) interceptors() []grpc.ServerOption {
	start := func(ctx context.Context, fullMethod string) (context.Context, trace.Span) {
		md, _ := metadata.FromIncomingContext(ctx)
		out := md.Copy()
		ctx, span := t.start(ctx, fullMethod, out)
		return metadata.NewIncomingContext(ctx, out), span
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, span := start(ctx, info.FullMethod)
		resp, err := h(ctx, req)
		t.end(span, err)
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, span := start(ss.Context(), info.FullMethod)
		err := h(srv, &tracedStream{ServerStream: ss, ctx: ctx})
		t.end(span, err)
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

// RelayEvent counts the relay's refusals and the client connections it
// closes (proxy.RelayObserver).
func (o *observer) RelayEvent(ev proxy.RelayEvent, reason string) {
	switch ev {
	case proxy.RelayRefused:
		o.tel.Metrics.RecordRelayRefused(context.Background(), reason)
	case proxy.RelayConnClosed:
		o.tel.Metrics.RecordRelayClosed(context.Background(), reason)
	case proxy.RelayStreamHeld:
		o.tel.Metrics.RelayStreamsHeld(context.Background(), 1)
	case proxy.RelayStreamResumed:
		o.tel.Metrics.RelayStreamsHeld(context.Background(), -1)
	}
}

// relayLimits are the relay engine's limits from the config.
func relayLimits(c *config.Relay) proxy.RelayLimits {
	withoutCalls := c.KeepaliveWithoutCalls
	abuseReconnect := c.AbuseReconnectInterval.Std()
	if abuseReconnect == 0 {
		abuseReconnect = -1 // off (a zero limit takes the default)
	}
	return proxy.RelayLimits{
		MaxConcurrentStreams:   uint32(c.MaxConcurrentStreams),
		MaxHeaderListSize:      c.MaxHeaderListSize,
		HandshakeTimeout:       c.HandshakeTimeout.Std(),
		IdleTimeout:            c.IdleTimeout.Std(),
		WriteTimeout:           c.WriteTimeout.Std(),
		ConnOutputBuffer:       c.ConnOutputBuffer,
		ConnResponseBuffer:     c.ConnResponseBuffer,
		ResponseBuffer:         c.ResponseBuffer,
		BackendStreamWindow:    c.BackendStreamWindow,
		PingMinTime:            c.KeepaliveMinTime.Std(),
		PingWithoutCalls:       &withoutCalls,
		ResetsPerSecond:        c.ResetsPerSecond,
		ControlFramesPerSecond: c.ControlFramesPerSecond,
		AbuseReconnectInterval: abuseReconnect,
	}
}
