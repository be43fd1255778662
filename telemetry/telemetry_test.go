package telemetry

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry/otlptest"
)

func newTelemetry(t *testing.T, o Options) *Telemetry {
	t.Helper()
	tel, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return tel
}

func scrape(t *testing.T, h http.Handler) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s\n%s", resp.Status, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, body)
	}
	return mfs, string(body)
}

// sample returns the value of the series of family name whose labels
// include want, failing when there is not exactly one.
func sample(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("no metric family %s; have %v", name, names(mfs))
	}
	var found []*dto.Metric
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if got[k] != v {
				match = false
			}
		}
		if match {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d series match", name, want, len(found))
	}
	return found[0]
}

func names(mfs map[string]*dto.MetricFamily) []string {
	var out []string
	for n := range mfs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestMetricsExposition(t *testing.T) {
	tel := newTelemetry(t, Options{ServiceName: "test-proxy"})
	m := tel.Metrics
	ctx := context.Background()

	for range 3 {
		m.RecordRequest(ctx, Request{Method: "Search", Class: "read", Cluster: "b", Role: "alternative", Code: "OK", Duration: 10 * time.Millisecond})
	}
	m.RecordRequest(ctx, Request{Method: "Search", Class: "read", Cluster: "b", Role: "alternative", Code: "Unavailable", Duration: 2 * time.Second})
	m.RecordRequest(ctx, Request{Method: "Insert", Class: "write", Cluster: "a", Role: "leader", Code: "OK", Duration: 3 * time.Millisecond})
	m.RecordRead(ctx, "b", ReadAlternative)
	m.RecordRead(ctx, "b", ReadAlternative)
	m.RecordRead(ctx, "a", ReadLeaderLag)
	m.RecordRetry(ctx, "Search", "read")
	m.RecordLeaderChange(ctx, "failover", "b")
	m.RecordFailover(ctx, ResultOK)
	m.RecordSwitchover(ctx, ResultRefused)
	m.RecordSwitchover(ctx, ResultRefused)
	m.WriteHoldStarted(ctx)
	m.WriteHoldStarted(ctx)
	m.WriteHoldEnded(ctx, HoldReleased, 1500*time.Millisecond)
	m.SetStateSource(func() State {
		return State{Epoch: 2, FailingOver: true, Clusters: []ClusterState{
			{ID: "a", Role: "leader", Healthy: true, Breaker: "closed", Outstanding: 4},
			{ID: "b", Role: "alternative", Healthy: true, Breaker: "half-open", LagSeconds: 0.25, LagKnown: true},
			{ID: "c", Role: "alternative", Healthy: false, Quarantined: true, Breaker: "open"},
		}}
	})

	mfs, body := scrape(t, tel.MetricsHandler())

	counter := func(name string, labels map[string]string) float64 {
		return sample(t, mfs, name, labels).GetCounter().GetValue()
	}
	gauge := func(name string, labels map[string]string) float64 {
		return sample(t, mfs, name, labels).GetGauge().GetValue()
	}
	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"requests search ok", counter("milvus_ha_proxy_requests_total", map[string]string{"method": "Search", "class": "read", "cluster": "b", "role": "alternative", "code": "OK"}), 3},
		{"requests search unavailable", counter("milvus_ha_proxy_requests_total", map[string]string{"method": "Search", "code": "Unavailable"}), 1},
		{"requests insert", counter("milvus_ha_proxy_requests_total", map[string]string{"method": "Insert", "cluster": "a", "role": "leader"}), 1},
		{"reads alternative", counter("milvus_ha_proxy_reads_total", map[string]string{"cluster": "b", "reason": "alternative"}), 2},
		{"reads lag", counter("milvus_ha_proxy_reads_total", map[string]string{"cluster": "a", "reason": "leader_lag"}), 1},
		{"retries", counter("milvus_ha_proxy_retries_total", map[string]string{"method": "Search"}), 1},
		{"leader changes", counter("milvus_ha_proxy_leader_changes_total", map[string]string{"reason": "failover", "leader": "b"}), 1},
		{"failovers", counter("milvus_ha_proxy_failovers_total", map[string]string{"result": "ok"}), 1},
		{"switchovers", counter("milvus_ha_proxy_switchovers_total", map[string]string{"result": "refused"}), 2},
		{"writes held", counter("milvus_ha_proxy_writes_held_total", map[string]string{"outcome": "released"}), 1},
		{"writes waiting", gauge("milvus_ha_proxy_writes_waiting", nil), 1},
		{"lag b", gauge("milvus_ha_proxy_replication_lag_seconds", map[string]string{"cluster": "b"}), 0.25},
		{"breaker a", gauge("milvus_ha_proxy_breaker_state", map[string]string{"cluster": "a"}), 0},
		{"breaker b", gauge("milvus_ha_proxy_breaker_state", map[string]string{"cluster": "b"}), 1},
		{"breaker c", gauge("milvus_ha_proxy_breaker_state", map[string]string{"cluster": "c"}), 2},
		{"healthy a", gauge("milvus_ha_proxy_cluster_healthy", map[string]string{"cluster": "a", "role": "leader"}), 1},
		{"healthy c", gauge("milvus_ha_proxy_cluster_healthy", map[string]string{"cluster": "c", "role": "alternative"}), 0},
		{"quarantined c", gauge("milvus_ha_proxy_cluster_quarantined", map[string]string{"cluster": "c"}), 1},
		{"quarantined b", gauge("milvus_ha_proxy_cluster_quarantined", map[string]string{"cluster": "b"}), 0},
		{"outstanding a", gauge("milvus_ha_proxy_cluster_outstanding_requests", map[string]string{"cluster": "a"}), 4},
		{"epoch", gauge("milvus_ha_proxy_epoch", nil), 2},
		{"failing over", gauge("milvus_ha_proxy_failover_in_progress", nil), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// Unknown lag is +Inf (stale), never absent or 0; the leader has none.
	if v := gauge("milvus_ha_proxy_replication_lag_seconds", map[string]string{"cluster": "c"}); !math.IsInf(v, 1) {
		t.Errorf("unknown lag = %v, want +Inf", v)
	}
	if n := len(mfs["milvus_ha_proxy_replication_lag_seconds"].GetMetric()); n != 2 {
		t.Errorf("lag series = %d, want 2 (no leader series)", n)
	}

	h := sample(t, mfs, "milvus_ha_proxy_request_duration_seconds", map[string]string{"method": "Search", "cluster": "b"}).GetHistogram()
	if h.GetSampleCount() != 4 || math.Abs(h.GetSampleSum()-2.03) > 1e-9 {
		t.Errorf("search duration count=%d sum=%v, want 4 and 2.03", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		want := map[float64]uint64{0.01: 3, 1: 3, 2.5: 4}[b.GetUpperBound()]
		if want != 0 && b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v count %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	hold := sample(t, mfs, "milvus_ha_proxy_write_hold_duration_seconds", map[string]string{"outcome": "released"}).GetHistogram()
	if hold.GetSampleCount() != 1 || hold.GetSampleSum() != 1.5 {
		t.Errorf("hold histogram count=%d sum=%v", hold.GetSampleCount(), hold.GetSampleSum())
	}

	// Every product metric is documented and prefixed; the runtime
	// collectors are there; our registry holds no otel scope noise.
	for name, mf := range mfs {
		if strings.HasPrefix(name, "milvus_ha_proxy_") && mf.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
	}
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total", "target_info"} {
		if mfs[want] == nil {
			t.Errorf("missing %s", want)
		}
	}
	if !strings.Contains(body, `service_name="test-proxy"`) {
		t.Errorf("target_info lacks service_name")
	}
	if strings.Contains(body, "otel_scope_name") {
		t.Errorf("exposition carries otel scope labels")
	}

	// A second scrape sees increments, not a reset or a double count.
	m.RecordRead(ctx, "b", ReadAlternative)
	mfs, _ = scrape(t, tel.MetricsHandler())
	if v := sample(t, mfs, "milvus_ha_proxy_reads_total", map[string]string{"cluster": "b", "reason": "alternative"}).GetCounter().GetValue(); v != 3 {
		t.Errorf("reads after one more = %v, want 3", v)
	}
}

// TestSeparateRegistries: two Telemetry in one process (tests, or a demo
// and a proxy) do not see each other's metrics and do not collide.
func TestSeparateRegistries(t *testing.T) {
	a := newTelemetry(t, Options{})
	b := newTelemetry(t, Options{})
	a.Metrics.RecordRead(context.Background(), "x", ReadAlternative)
	mfs, _ := scrape(t, b.MetricsHandler())
	if mfs["milvus_ha_proxy_reads_total"] != nil {
		t.Errorf("b sees a's reads")
	}
	mfs, _ = scrape(t, a.MetricsHandler())
	if mfs["milvus_ha_proxy_reads_total"] == nil {
		t.Errorf("a lost its reads")
	}
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *Metrics
	ctx := context.Background()
	m.RecordRequest(ctx, Request{Method: "Search"})
	m.RecordRead(ctx, "a", ReadAlternative)
	m.RecordRetry(ctx, "Search", "read")
	m.RecordLeaderChange(ctx, "failover", "b")
	m.RecordFailover(ctx, ResultOK)
	m.RecordSwitchover(ctx, ResultOK)
	m.WriteHoldStarted(ctx)
	m.WriteHoldEnded(ctx, HoldTimedOut, time.Second)
	m.SetStateSource(func() State { return State{} })
}

// TestTracingOTLP exports a span with routing attributes to an in-process
// OTLP collector, continuing a trace the "client" started.
func TestTracingOTLP(t *testing.T) {
	col, err := otlptest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer col.Stop()
	tel := newTelemetry(t, Options{OTLPEndpoint: col.Endpoint, SampleRatio: 1})
	if !tel.TracingEnabled() {
		t.Fatal("tracing not enabled with an endpoint")
	}

	// The client's trace context arrives as a traceparent header.
	clientTrace := "4bf92f3577b34da6a3ce929d0e0e4736"
	carrier := propagation.MapCarrier{"traceparent": "00-" + clientTrace + "-00f067aa0ba902b7-01"}
	ctx := tel.Propagator.Extract(context.Background(), carrier)
	ctx, span := tel.Tracer().Start(ctx, "milvus.proto.milvus.MilvusService/Search", trace.WithSpanKind(trace.SpanKindServer))
	span.SetAttributes(Route{Class: "read", ConsistencyLevel: "Bounded", RequiredTimestamp: 1 << 40, Cluster: "b", Role: "alternative", Reason: ReadAlternative}.Attributes()...)

	// What the proxy passes to the backend continues the same trace.
	out := propagation.MapCarrier{}
	tel.Propagator.Inject(ctx, out)
	if !strings.Contains(out["traceparent"], clientTrace) {
		t.Errorf("backend traceparent %q does not continue %s", out["traceparent"], clientTrace)
	}
	span.End()
	if err := tel.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := col.WaitForSpan(wctx, "milvus.proto.milvus.MilvusService/Search")
	if err != nil {
		t.Fatalf("span not exported: %v (have %d spans)", err, len(col.Spans()))
	}
	if tid := got.GetTraceId(); len(tid) != 16 || strings.ToLower(trace.TraceID(tid).String()) != clientTrace {
		t.Errorf("exported trace id %x, want %s", tid, clientTrace)
	}
	want := map[string]any{
		"milvus_ha.class":              "read",
		"milvus_ha.consistency_level":  "Bounded",
		"milvus_ha.required_timestamp": int64(1 << 40),
		"milvus_ha.cluster":            "b",
		"milvus_ha.role":               "alternative",
		"milvus_ha.route_reason":       "alternative",
	}
	for k, v := range want {
		if got := otlptest.Attr(got, k); got != v {
			t.Errorf("attribute %s = %v (%T), want %v", k, got, got, v)
		}
	}
}

// TestTracingOff: with no endpoint nothing is recorded, but a client's
// trace context still reaches the backend.
func TestTracingOff(t *testing.T) {
	tel := newTelemetry(t, Options{})
	if tel.TracingEnabled() {
		t.Fatal("tracing enabled without an endpoint")
	}
	carrier := propagation.MapCarrier{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	ctx := tel.Propagator.Extract(context.Background(), carrier)
	ctx, span := tel.Tracer().Start(ctx, "x")
	defer span.End()
	if span.IsRecording() {
		t.Errorf("span records with tracing off")
	}
	out := propagation.MapCarrier{}
	tel.Propagator.Inject(ctx, out)
	if !strings.Contains(out["traceparent"], "4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Errorf("trace context not passed on: %v", out)
	}
}

func TestSampleRatioZeroKeepsClientSampledTraces(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tel := newTelemetry(t, Options{SpanExporter: exp, SampleRatio: 0})
	_, s := tel.Tracer().Start(context.Background(), "new-trace")
	s.End()
	ctx := tel.Propagator.Extract(context.Background(), propagation.MapCarrier{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	_, s = tel.Tracer().Start(ctx, "client-trace")
	s.End()
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "client-trace" {
		t.Errorf("spans = %v, want only client-trace", spans.Snapshots())
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	if _, err := New(context.Background(), Options{OTLPEndpoint: "grpc://x:1"}); err == nil {
		t.Error("bad endpoint accepted")
	}
	if _, err := New(context.Background(), Options{SampleRatio: 1.5}); err == nil {
		t.Error("bad sample ratio accepted")
	}
}

func BenchmarkRecordRequest(b *testing.B) {
	tel, err := New(context.Background(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	ctx := context.Background()
	r := Request{Method: "Search", Class: "read", Cluster: "b", Role: "alternative", Code: "OK", Duration: time.Millisecond}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tel.Metrics.RecordRequest(ctx, r)
			tel.Metrics.RecordRead(ctx, "b", ReadAlternative)
		}
	})
}

// TestStateSeriesFollowRoles: when a cluster's role changes, the gauge
// series with the old role label disappears instead of lingering.
func TestStateSeriesFollowRoles(t *testing.T) {
	tel := newTelemetry(t, Options{})
	role := "leader"
	tel.Metrics.SetStateSource(func() State {
		return State{Clusters: []ClusterState{{ID: "a", Role: role, Healthy: true, Breaker: "closed"}}}
	})
	mfs, _ := scrape(t, tel.MetricsHandler())
	sample(t, mfs, "milvus_ha_proxy_cluster_healthy", map[string]string{"cluster": "a", "role": "leader"})
	role = "alternative"
	mfs, _ = scrape(t, tel.MetricsHandler())
	if n := len(mfs["milvus_ha_proxy_cluster_healthy"].GetMetric()); n != 1 {
		t.Fatalf("%d healthy series after the role change, want 1", n)
	}
	sample(t, mfs, "milvus_ha_proxy_cluster_healthy", map[string]string{"cluster": "a", "role": "alternative"})
}
