package ops

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry/otlptest"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
	"github.com/milvus-io/milvus/client/v2/entity"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/metadata"
)

const (
	searchMethod = "/milvus.proto.milvus.MilvusService/Search"
	insertMethod = "/milvus.proto.milvus.MilvusService/Insert"
)

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestTraceContinuesClientAndReachesBackend: with telemetry.otlp_endpoint
// pointing at an in-process OTLP collector, a Bounded search carrying the
// client's traceparent yields a proxy span in the client's trace, child of
// the client's span, with the routing decision as attributes; and the
// cluster that served it received a traceparent whose parent is that proxy
// span. A call without trace context starts a trace of its own, which the
// backend continues too.
func TestTraceContinuesClientAndReachesBackend(t *testing.T) {
	col, err := otlptest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(col.Stop)

	sims := testenv.StartSims(t, testenv.Options{Clusters: 2})
	relays := map[string]*mdRelay{}
	cfg := replicateConfig(sims)
	for i, s := range sims {
		r := startRelay(t, s.Addr())
		relays[s.ID()] = r
		cfg.Clusters[i].URI = r.addr
	}
	cfg.Read.LeaderServesReads = false // the Bounded read must go to b
	cfg.Telemetry.OTLPEndpoint = col.Endpoint
	a := testenv.StartApp(t, cfg, app.Options{})
	testenv.WaitReady(t, a.AdminAddr(), 1)

	c := testenv.Connect(t, a.Addr(), nil)
	testenv.MakeCollection(t, c, "traced")
	waitLoaded(t, sims[1].Addr(), "traced")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := testenv.Insert(ctx, c, "traced", 1); err != nil {
		t.Fatal(err)
	}
	// Let b catch up past the Bounded read's required timestamp, so it is
	// eligible (bounded_staleness is 5s; replication takes milliseconds).
	clientTrace, clientSpan := randHex(t, 16), randHex(t, 8)
	tctx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
	before := len(relays["b"].calls(searchMethod))
	sent := time.Now()
	if err := testenv.Search(tctx, c, "traced", 1, entity.ClBounded); err != nil {
		t.Fatalf("traced search: %v", err)
	}
	answered := time.Now()

	// Shutdown flushes the batching OTLP exporter.
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := a.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	var span *tracepb.Span
	var roots []*tracepb.Span
	for _, s := range col.Spans() {
		if s.GetName() == searchMethod && hex.EncodeToString(s.GetTraceId()) == clientTrace {
			if span != nil {
				t.Fatalf("two proxy spans for one search")
			}
			span = s
		}
		if s.GetName() == insertMethod {
			roots = append(roots, s)
		}
	}
	if span == nil {
		t.Fatalf("no %s span in the client's trace %s among %d exported spans", searchMethod, clientTrace, len(col.Spans()))
	}
	if got := hex.EncodeToString(span.GetParentSpanId()); got != clientSpan {
		t.Errorf("proxy span's parent = %s, want the client's span %s", got, clientSpan)
	}
	if span.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("span kind %v, want SERVER", span.GetKind())
	}
	want := map[string]any{
		string(telemetry.AttrClass):            "read",
		string(telemetry.AttrConsistencyLevel): "Bounded",
		string(telemetry.AttrCluster):          "b",
		string(telemetry.AttrRole):             "alternative",
		string(telemetry.AttrRouteReason):      telemetry.ReadAlternative,
	}
	for k, v := range want {
		if got := otlptest.Attr(span, k); got != v {
			t.Errorf("span attribute %s = %v, want %v", k, got, v)
		}
	}
	// The required timestamp is a Milvus hybrid timestamp, physical ms <<
	// 18: for Bounded about bounded_staleness (5s) before the call.
	req, ok := otlptest.Attr(span, string(telemetry.AttrRequiredTimestamp)).(int64)
	if !ok {
		t.Fatalf("span has no integer %s: %v", telemetry.AttrRequiredTimestamp, span.GetAttributes())
	}
	// The proxy reads its clock somewhere between sent and answered (on a
	// loaded machine that window can be seconds), so the required time lies
	// in [sent-5s, answered-5s], give or take its estimate of the leader's
	// clock (an upper bound, ahead by up to a round trip: 18 ms past
	// answered-5s was seen) and the millisecond rounding.
	phys := hybridts.Time(uint64(req))
	const staleness, slack = 5 * time.Second, 500 * time.Millisecond
	lo, hi := sent.Add(-staleness-slack), answered.Add(-staleness+slack)
	if phys.Before(lo) || phys.After(hi) {
		t.Errorf("required timestamp %d is %v before the call was sent and %v before it was answered, want bounded_staleness (5s) before a moment in between",
			req, sent.Sub(phys), answered.Sub(phys))
	}

	// What b received: the proxy's span as parent, in the client's trace.
	calls := relays["b"].calls(searchMethod)
	if len(calls) != before+1 {
		t.Fatalf("b received %d searches, want %d", len(calls), before+1)
	}
	wantTP := fmt.Sprintf("00-%s-%s-01", clientTrace, hex.EncodeToString(span.GetSpanId()))
	if got := calls[len(calls)-1].Get("traceparent"); len(got) != 1 || got[0] != wantTP {
		t.Errorf("backend b received traceparent %v, want [%s] (client's trace, proxy's span as parent)", got, wantTP)
	}

	// The insert had no trace context: the proxy started a root span and
	// the leader received it as parent.
	if len(roots) != 1 {
		t.Fatalf("%d Insert spans, want 1", len(roots))
	}
	root := roots[0]
	if len(root.GetParentSpanId()) != 0 {
		t.Errorf("insert span has a parent %x though the client sent no trace context", root.GetParentSpanId())
	}
	if got := otlptest.Attr(root, string(telemetry.AttrCluster)); got != "a" {
		t.Errorf("insert span cluster = %v, want a", got)
	}
	ins := relays["a"].calls(insertMethod)
	wantTP = fmt.Sprintf("00-%s-%s-01", hex.EncodeToString(root.GetTraceId()), hex.EncodeToString(root.GetSpanId()))
	if len(ins) != 1 || len(ins[0].Get("traceparent")) != 1 || ins[0].Get("traceparent")[0] != wantTP {
		t.Errorf("leader a received inserts with traceparent %v, want one with %s", ins, wantTP)
	}
}
