// Package ops proves that milvus-ha-proxy is operable in production: the
// metrics move by exactly the traffic sent, traces continue the
// client's and reach the backend, a drain under load loses no call, bad
// configs exit 2 naming the key, TLS works both ways and refuses a wrong
// CA, no log line carries a credential, and the reference docs match the
// code. Every test starts its own simulated clusters (sim) and its own
// proxy (package app, or the built binary) on 127.0.0.1:0, with the
// harness shared with test/e2e (test/testenv).
package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

// fastProbes sets 50ms health probes and replication polls, so that
// health and lag settle fast.
func fastProbes(cfg *config.Config) {
	cfg.Health.ProbeInterval = config.Duration(50 * time.Millisecond)
	cfg.Replication.PollInterval = config.Duration(50 * time.Millisecond)
}

// replicateConfig is testenv.ReplicateConfig with fastProbes.
func replicateConfig(sims []*sim.Cluster) *config.Config {
	cfg := testenv.ReplicateConfig(sims)
	fastProbes(cfg)
	return cfg
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
