package deploy

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry"
)

const dashboardPath = "grafana/milvus-ha-proxy.json"

// scrape records one of every event the proxy's metrics count and returns
// the exposition of GET /metrics by family name, with a histogram's
// _bucket, _sum and _count series under their own names too.
func scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	ctx := context.Background()
	tel, err := telemetry.New(ctx, telemetry.Options{ServiceVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	m := tel.Metrics
	m.SetStateSource(func() telemetry.State {
		return telemetry.State{Epoch: 1, Clusters: []telemetry.ClusterState{
			{ID: "a", Role: "leader", Healthy: true, Breaker: "closed"},
			{ID: "b", Role: "alternative", Healthy: true, Breaker: "closed", LagSeconds: 0.1, LagKnown: true},
		}}
	})
	m.RecordRequest(ctx, telemetry.Request{Method: "Search", Class: "read", Cluster: "b", Role: "alternative", Code: "OK", Duration: time.Millisecond})
	m.RecordRead(ctx, "b", telemetry.ReadAlternative)
	m.RecordRetry(ctx, "Search", "read")
	m.RecordLeaderChange(ctx, "failover", "b")
	m.RecordFailover(ctx, telemetry.ResultOK)
	m.RecordSwitchover(ctx, telemetry.ResultOK)
	m.WriteHoldStarted(ctx)
	m.WriteHoldEnded(ctx, telemetry.HoldReleased, time.Second)

	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for name, mf := range mfs {
		out[name] = mf
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			for _, sfx := range []string{"_bucket", "_sum", "_count"} {
				out[name+sfx] = mf
			}
		}
	}
	return out
}

// labelsOf lists a family's label names (le for histograms).
func labelsOf(mf *dto.MetricFamily) []string {
	var ls []string
	if mf.GetType() == dto.MetricType_HISTOGRAM {
		ls = append(ls, "le")
	}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if !slices.Contains(ls, lp.GetName()) {
				ls = append(ls, lp.GetName())
			}
		}
	}
	return ls
}

// exprs collects every PromQL expression in the dashboard: panel targets,
// annotation queries and template variable queries.
func exprs(t *testing.T, v any, where string, out map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && (k == "expr" || k == "definition") {
				out[s] = where
				continue
			}
			sub := where
			if title, ok := x["title"].(string); ok {
				sub = "panel " + title
			} else if name, ok := x["name"].(string); ok {
				sub = name
			}
			exprs(t, val, sub, out)
		}
	case []any:
		for _, val := range x {
			exprs(t, val, where, out)
		}
	}
}

var (
	metricRE   = regexp.MustCompile(`\b(milvus_ha_proxy_[a-z0-9_]+|go_[a-z0-9_]+|process_[a-z0-9_]+)\b`)
	byRE       = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	selectorRE = regexp.MustCompile(`\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	labelValRE = regexp.MustCompile(`label_values\(\s*([a-z0-9_]+)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// TestDashboardQueriesExist: every metric the Grafana dashboard queries
// is on /metrics, and every label it groups or filters by is a label of a
// metric in the same query (or one Prometheus adds: instance, job).
func TestDashboardQueriesExist(t *testing.T) {
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboardPath, err)
	}
	if dash["uid"] == "" || dash["title"] == "" {
		t.Errorf("dashboard lacks uid or title")
	}
	found := map[string]string{}
	exprs(t, dash, "dashboard", found)
	if len(found) < 10 {
		t.Fatalf("found only %d queries in the dashboard", len(found))
	}
	mfs := scrape(t)
	used := map[string]bool{}
	for expr, where := range found {
		var labels []string
		names := metricRE.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: query names no proxy metric: %s", where, expr)
		}
		for _, name := range names {
			mf, ok := mfs[name]
			if !ok {
				t.Errorf("%s: metric %s is not on /metrics (query %s)", where, name, expr)
				continue
			}
			used[mf.GetName()] = true
			labels = append(labels, labelsOf(mf)...)
		}
		var want []string
		for _, m := range byRE.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				want = append(want, strings.TrimSpace(l))
			}
		}
		for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
			for _, mm := range matcherRE.FindAllStringSubmatch(m[1], -1) {
				want = append(want, mm[1])
			}
		}
		for _, m := range labelValRE.FindAllStringSubmatch(expr, -1) {
			want = append(want, m[2])
		}
		for _, l := range want {
			if l == "" || l == "instance" || l == "job" {
				continue
			}
			if !slices.Contains(labels, l) {
				t.Errorf("%s: label %q is not a label of %v (query %s)", where, l, names, expr)
			}
		}
	}
	// Every proxy metric is on the dashboard somewhere: a new metric
	// means a new panel, or a reason here.
	for name, mf := range mfs {
		if strings.HasPrefix(name, "milvus_ha_proxy_") && name == mf.GetName() && !used[name] {
			t.Errorf("metric %s is on /metrics but on no dashboard panel", name)
		}
	}
}

// TestDashboardLayout: panel ids are unique, every panel fits the 24-column
// grid, and no two panels overlap (Grafana would push one down silently).
func TestDashboardLayout(t *testing.T) {
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			ID      int                      `json:"id"`
			Title   string                   `json:"title"`
			Type    string                   `json:"type"`
			GridPos struct{ X, Y, W, H int } `json:"gridPos"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	ids := map[int]string{}
	for i, p := range dash.Panels {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q gridPos %+v does not fit the 24-column grid", p.Title, g)
		}
		for _, q := range dash.Panels[:i] {
			h := q.GridPos
			if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("panels %q %+v and %q %+v overlap", q.Title, h, p.Title, g)
			}
		}
	}
}
