// Package ops proves that milvus-ha-proxy is operable in production (issue
// 5): the metrics move by exactly the traffic sent, traces continue the
// client's and reach the backend, a drain under load loses no call, bad
// configs exit 2 naming the key, TLS works both ways and refuses a wrong
// CA, no log line carries a credential, and the reference docs match the
// code. Every test starts its own simulated clusters (test/sim) and its own
// proxy (package app, or the built binary) on 127.0.0.1:0.
package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/sim"
)

const dim = 8

func quietLogger() *slog.Logger {
	if os.Getenv("OPS_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startSims starts n simulated clusters a, b, c... and, when n > 1, joins
// them by replication with a as the source. tune may adjust each one's
// options.
func startSims(t *testing.T, n int, tune func(*sim.Options)) []*sim.Cluster {
	t.Helper()
	ctx := context.Background()
	var all []*sim.Cluster
	for i := 0; i < n; i++ {
		o := sim.Options{ClusterID: string(rune('a' + i)), Logger: quietLogger()}
		if tune != nil {
			tune(&o)
		}
		c, err := sim.Start(ctx, o)
		if err != nil {
			t.Fatalf("starting sim %s: %v", o.ClusterID, err)
		}
		t.Cleanup(c.Stop)
		all = append(all, c)
	}
	if n > 1 {
		jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := sim.JoinReplication(jctx, all[0], all[1:]...); err != nil {
			t.Fatalf("joining replication: %v", err)
		}
	}
	return all
}

// replicateConfig is the config of a proxy in front of sims with
// replicate discovery, on 127.0.0.1:0 ports and short probe intervals.
func replicateConfig(sims []*sim.Cluster) *config.Config {
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Discovery = config.DiscoveryReplicate
	cfg.Health.ProbeInterval = config.Duration(50 * time.Millisecond)
	cfg.Replication.PollInterval = config.Duration(50 * time.Millisecond)
	for _, c := range sims {
		cfg.Clusters = append(cfg.Clusters, config.Cluster{ID: c.ID(), URI: c.Addr()})
	}
	return cfg
}

// startApp builds and starts the proxy; t.Cleanup drains it (a no-op when
// the test already did).
func startApp(t *testing.T, cfg *config.Config, opts app.Options) *app.App {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	opts.Config = cfg
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	a, err := app.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	if err := a.Start(); err != nil {
		t.Fatalf("app.Start: %v", err)
	}
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = a.Shutdown(ctx)
		})
	})
	return a
}

// waitFor polls cond every 20ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s; last: %s", d, what, last)
}

// topologyView fetches GET /api/v1/topology.
func topologyView(t *testing.T, adminAddr string) admin.View {
	t.Helper()
	c, err := admin.NewClient(adminAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := c.Topology(ctx)
	if err != nil {
		t.Fatalf("GET /api/v1/topology: %v", err)
	}
	return v
}

// waitReady waits, through the admin API, until the proxy is ready and
// every alternative is healthy with a known lag.
func waitReady(t *testing.T, adminAddr string, alternatives int) {
	t.Helper()
	waitFor(t, 15*time.Second, "the proxy to be ready", func() (bool, string) {
		v := topologyView(t, adminAddr)
		known := 0
		for _, c := range v.Clusters {
			if c.Role == "alternative" && c.Healthy && c.LagKnown {
				known++
			}
		}
		return v.Ready && known == alternatives, fmt.Sprintf("%+v", v)
	})
}

// httpGet returns the status code and body of GET url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape parses GET /metrics of the admin server.
func scrape(t *testing.T, adminAddr string) metrics {
	t.Helper()
	code, body := httpGet(t, "http://"+adminAddr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: HTTP %d: %s", code, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the exposition: %v\n%s", err, body)
	}
	return metrics(mfs)
}

// metrics is one parsed scrape.
type metrics map[string]*dto.MetricFamily

// labelsMatch reports whether m carries every label of want (others may
// be present too).
func labelsMatch(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == k && lp.GetValue() == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// sum adds the values (counter, gauge, or histogram count) of every series
// of name whose labels include want. An absent family or series is 0, as
// Prometheus reads a counter that has not been created yet.
func (ms metrics) sum(name string, want map[string]string) float64 {
	mf := ms[name]
	if mf == nil {
		return 0
	}
	total := 0.0
	for _, m := range mf.GetMetric() {
		if !labelsMatch(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// series returns the series of name whose labels include want.
func (ms metrics) series(name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range ms[name].GetMetric() {
		if labelsMatch(m, want) {
			out = append(out, m)
		}
	}
	return out
}

// labelValues lists, sorted, the values label takes among name's series.
func (ms metrics) labelValues(name, label string) []string {
	seen := map[string]bool{}
	for _, m := range ms[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				seen[lp.GetValue()] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// sdkClient connects the Go SDK to addr.
func sdkClient(t *testing.T, addr string, cfg *milvusclient.ClientConfig) *milvusclient.Client {
	t.Helper()
	if cfg == nil {
		cfg = &milvusclient.ClientConfig{}
	}
	cfg.Address = addr
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := milvusclient.New(ctx, cfg)
	if err != nil {
		t.Fatalf("connecting the Go SDK to %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func vec(i int64) []float32 {
	v := make([]float32, dim)
	for j := range v {
		v[j] = float32((i*31+int64(j)*7)%97) / 97
	}
	return v
}

// makeCollection creates, indexes and loads a collection (id int64 pk, vec
// float vector) through c.
func makeCollection(t *testing.T, c *milvusclient.Client, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	schema := entity.NewSchema().WithName(name).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))
	if err := c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(name, schema).
		WithConsistencyLevel(entity.ClBounded)); err != nil {
		t.Fatalf("create collection: %v", err)
	}
	task, err := c.CreateIndex(ctx, milvusclient.NewCreateIndexOption(name, "vec", index.NewFlatIndex(entity.L2)))
	if err != nil {
		t.Fatalf("create index: %v", err)
	}
	if err := task.Await(ctx); err != nil {
		t.Fatalf("await index: %v", err)
	}
	lt, err := c.LoadCollection(ctx, milvusclient.NewLoadCollectionOption(name))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := lt.Await(ctx); err != nil {
		t.Fatalf("await load: %v", err)
	}
}

func insert(ctx context.Context, c *milvusclient.Client, coll string, ids ...int64) error {
	vecs := make([][]float32, len(ids))
	for i, id := range ids {
		vecs[i] = vec(id)
	}
	_, err := c.Insert(ctx, milvusclient.NewColumnBasedInsertOption(coll).
		WithInt64Column("id", ids).WithFloatVectorColumn("vec", dim, vecs))
	if err != nil {
		return fmt.Errorf("insert %v: %w", ids, err)
	}
	return nil
}

func search(ctx context.Context, c *milvusclient.Client, coll string, id int64, cl entity.ConsistencyLevel, opts ...grpc.CallOption) error {
	_, err := c.Search(ctx, milvusclient.NewSearchOption(coll, 1, []entity.Vector{entity.FloatVector(vec(id))}).
		WithANNSField("vec").WithConsistencyLevel(cl), opts...)
	return err
}

// binDir holds the binary built by the first test that needs it; TestMain
// removes it.
var binDir struct {
	sync.Mutex
	path string
}

// binary builds the milvus-ha-proxy command once per test process.
var binary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "milvus-ha-proxy-ops-")
	if err != nil {
		return "", err
	}
	binDir.Lock()
	binDir.path = dir
	binDir.Unlock()
	out := filepath.Join(dir, "milvus-ha-proxy")
	if runtime.GOOS == "windows" {
		out += ".exe"
	}
	cmd := exec.Command("go", "build", "-o", out, "github.com/milvus-ha-proxy/milvus-ha-proxy/cmd/milvus-ha-proxy")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, stderr.String())
	}
	return out, nil
})

func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	path, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMain removes the built binary.
func TestMain(m *testing.M) {
	code := m.Run()
	binDir.Lock()
	if binDir.path != "" {
		_ = os.RemoveAll(binDir.path)
	}
	binDir.Unlock()
	os.Exit(code)
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// prettyJSON is for failure messages.
func prettyJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
