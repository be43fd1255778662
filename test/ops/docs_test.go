package ops

import (
	"context"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry"
)

var update = flag.Bool("update", false, "rewrite docs/config.md and docs/metrics.md from the code")

const (
	configDocPath  = "../../docs/config.md"
	metricsDocPath = "../../docs/metrics.md"
	metricsSrc     = "../../telemetry/metrics.go"
	regenerate     = "go test ./test/ops -run TestDocs -update"
)

// checkDoc compares the file with what the code generates, or rewrites it
// with -update.
func checkDoc(t *testing.T, path, want string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it with: %s)", err, regenerate)
	}
	if string(got) != want {
		t.Fatalf("%s is stale: regenerate it with `%s`\n%s", path, regenerate, firstDiff(string(got), want))
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("first difference at line %d:\n  file: %s\n  code: %s", i+1, gl, wl)
		}
	}
	return ""
}

// TestDocsConfigReference: docs/config.md is config.ReferenceMarkdown()
// with its preamble; it fails when a key, default or doc string changed
// and the file was not regenerated.
func TestDocsConfigReference(t *testing.T) {
	var b strings.Builder
	b.WriteString(`# Configuration reference

<!-- Generated from the config package by ` + "`" + regenerate + "`" + `; do not edit. -->

milvus-ha-proxy reads one YAML file: ` + "`milvus-ha-proxy serve --config FILE`" + `, or the file named by
the environment variable ` + "`" + config.EnvConfig + "`" + ` when ` + "`--config`" + ` is not given. Every key
is optional except ` + "`clusters`" + `; an absent key takes the default below. Unknown keys,
wrong types, bad durations (write ` + "`100ms`, `5s`, `1m`" + `; a bare number other than 0 is
refused), duplicate ids and, in static discovery, anything but exactly one
leader are errors: ` + "`serve`" + ` prints every problem with its key and line and exits with
code 2. ` + "`serve --check`" + ` validates (TLS files included), prints the effective
config with secrets shown as ` + "`[redacted]`" + ` and exits 0.

Relative TLS file paths are taken relative to the config file's directory.
The flags ` + "`--listen`, `--admin-listen`, `--log-level` and `--log-format`" + ` override the
keys of the same name. See ` + "`examples/static.yaml` and `examples/replicate.yaml`" + `.

`)
	b.WriteString(config.ReferenceMarkdown())
	checkDoc(t, configDocPath, b.String())
}

// exerciseTelemetry builds a telemetry instance and records one of every
// kind of event, so that every instrument appears in the exposition.
func exerciseTelemetry(t *testing.T) metrics {
	t.Helper()
	ctx := context.Background()
	tel, err := telemetry.New(ctx, telemetry.Options{ServiceVersion: "doc"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	m := tel.Metrics
	m.SetStateSource(func() telemetry.State {
		return telemetry.State{Epoch: 1, Clusters: []telemetry.ClusterState{
			{ID: "a", Role: "leader", Healthy: true, Breaker: "closed"},
			{ID: "b", Role: "alternative", Healthy: true, Breaker: "closed", LagSeconds: 0.1, LagKnown: true},
		}, Arbiter: &telemetry.ArbiterState{Connected: true, Deciding: true, Epoch: 1}}
	})
	m.RecordRequest(ctx, telemetry.Request{Method: "Search", Class: "read", Cluster: "b", Role: "alternative", Code: "OK", Duration: time.Millisecond})
	m.RecordRead(ctx, "b", telemetry.ReadAlternative)
	m.RecordRetry(ctx, "Search", "read")
	m.RecordLeaderChange(ctx, "failover", "b")
	m.RecordFailover(ctx, telemetry.ResultOK)
	m.RecordSwitchover(ctx, telemetry.ResultOK)
	m.WriteHoldStarted(ctx)
	m.WriteHoldEnded(ctx, telemetry.HoldReleased, time.Second)
	m.RecordRelayRefused(ctx, "malformed")
	m.RecordRelayClosed(ctx, "abuse")
	m.RelayStreamsHeld(ctx, 1)

	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	return metrics(mfs)
}

// familyLabels lists the label names of a family, sorted, without le.
func familyLabels(mf *dto.MetricFamily) []string {
	seen := map[string]bool{}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() != "le" {
				seen[lp.GetName()] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for l := range seen {
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

func proxyFamilies(ms metrics) []string {
	var names []string
	for name := range ms {
		if strings.HasPrefix(name, "milvus_ha_proxy_") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

func metricRow(name string, mf *dto.MetricFamily) string {
	labels := familyLabels(mf)
	ls := "—"
	if len(labels) > 0 {
		ls = "`" + strings.Join(labels, "`, `") + "`"
	}
	typ := strings.ToLower(mf.GetType().String())
	shown := "`" + name + "`"
	if typ == "histogram" {
		shown += " (`_bucket`, `_sum`, `_count`)"
	}
	return fmt.Sprintf("| %s | %s | %s | %s |", shown, typ, ls, strings.ReplaceAll(mf.GetHelp(), "|", "\\|"))
}

// TestDocsMetrics: docs/metrics.md is generated from a scrape of the
// telemetry package with every instrument exercised, and lists every
// instrument telemetry/metrics.go defines.
func TestDocsMetrics(t *testing.T) {
	ms := exerciseTelemetry(t)
	var b strings.Builder
	b.WriteString(`# Metrics

<!-- Generated from a scrape of the telemetry package by ` + "`" + regenerate + "`" + `; do not edit. -->

` + "`GET /metrics`" + ` on the admin port (default ` + "`127.0.0.1:9091`" + `) serves the Prometheus text
format: the metrics below, produced with OpenTelemetry and its Prometheus
exporter on a registry of the proxy's own, plus the Go runtime (` + "`go_*`" + `) and process
(` + "`process_*`" + `) collectors and ` + "`target_info`" + ` (service name and version). Counters and
histograms appear once they have counted something; the per-cluster gauges are
computed from the topology at each scrape.

| metric | type | labels | meaning |
|---|---|---|---|
`)
	for _, name := range proxyFamilies(ms) {
		b.WriteString(metricRow(name, ms[name]) + "\n")
	}
	b.WriteString(`
## Label values

| label | values |
|---|---|
| ` + "`method`" + ` | the short gRPC method name of ` + "`milvus.proto.milvus.MilvusService`" + `: ` + "`Search`, `Insert`, `Connect`" + `, ... |
| ` + "`class`" + ` | ` + classList() + ` |
| ` + "`cluster`" + ` | a cluster id from the config; empty when the proxy answered itself (` + "`CheckHealth`" + `) or no cluster was reached |
| ` + "`role`" + ` | ` + "`leader`, `alternative`, `standby`" + ` (the role when the call was routed) |
| ` + "`code`" + ` | the gRPC status code name: ` + codeList() + ` |
| ` + "`reason`" + ` (reads) | see below |
| ` + "`reason`" + ` (leader changes) | ` + "`failover`, `switchover`, `discovery`" + ` (the clusters changed it themselves) |
| ` + "`reason`" + ` (relay) | refusals: ` + "`malformed`, `not_grpc`, `streams`, `header_list`, `header_block`, `message_size`, `cardinality`" + `; closed connections: ` + "`protocol_error`, `abuse`, `too_many_pings`, `idle`, `write_timeout`, `output_overflow`" + ` |
| ` + "`leader`" + ` | the new leader's id |
| ` + "`outcome`" + ` | ` + "`" + telemetry.HoldReleased + "`, `" + telemetry.HoldTimedOut + "`, `" + telemetry.HoldCanceled + "`" + ` |
| ` + "`result`" + ` | ` + "`" + telemetry.ResultOK + "`, `" + telemetry.ResultRefused + "` (not attempted: unknown target, already leader, busy), `" + telemetry.ResultFailed + "`" + ` |

Breaker state values: 0 closed, 1 half-open, 2 open. Replication lag is ` + "`+Inf`" + ` while
unknown (a failed or missing checkpoint poll counts as stale); the leader has no
lag series.

## Read routing reasons

The ` + "`reason`" + ` label of ` + "`milvus_ha_proxy_reads_total`" + `:

| reason | the read went there because |
|---|---|
`)
	for _, r := range telemetry.ReadReasons() {
		b.WriteString(fmt.Sprintf("| `%s` | %s |\n", r, readReasonDoc[r]))
	}
	checkDoc(t, metricsDocPath, b.String())

	// Every instrument telemetry defines is in the table.
	src, err := os.ReadFile(metricsSrc)
	if err != nil {
		t.Fatal(err)
	}
	defined := regexp.MustCompile(`meter\.\w+\("(milvus_ha_proxy_\w+)"`).FindAllStringSubmatch(string(src), -1)
	if len(defined) == 0 {
		t.Fatalf("found no instruments in %s", metricsSrc)
	}
	for _, d := range defined {
		found := false
		for _, name := range proxyFamilies(ms) {
			if strings.HasPrefix(name, d[1]) {
				found = true
			}
		}
		if !found {
			t.Errorf("instrument %s (telemetry/metrics.go) is not exercised by exerciseTelemetry, so docs/metrics.md lacks it", d[1])
		}
	}
	for _, r := range telemetry.ReadReasons() {
		if readReasonDoc[r] == "" {
			t.Errorf("read reason %q has no explanation in readReasonDoc", r)
		}
	}
}

var readReasonDoc = map[string]string{
	telemetry.ReadAlternative:         "an alternative had replicated far enough for the read's consistency level (and won power of two choices)",
	telemetry.ReadLeaderBalanced:      "`read.leader_serves_reads` is on and balancing chose the leader among the eligible clusters",
	telemetry.ReadLeaderLag:           "alternatives were up but none had replicated up to the read's required timestamp, or their lag was unknown",
	telemetry.ReadLeaderStrong:        "a Strong read with `consistency.strong_reads: leader`",
	telemetry.ReadLeaderNoAlternative: "no alternative was usable at all: down, breaker open, quarantined, or none configured",
	telemetry.ReadLeaderFallback:      "the alternative chosen answered that it could not serve the read (e.g. the collection is not there yet), so the leader did",
	telemetry.ReadLeaderNoCollection:  "the collection's facts (pchannels, default level) were unknown, so the read went to the leader as sent",
	telemetry.ReadLeaderWait:          "no cluster could serve the read (a failover under way, or the leader unreachable and no alternative eligible): the read waited for a writable leader, as writes do, up to `failover.write_hold`",
	telemetry.ReadLeaderStrongAlloc:   "`strong_reads: wait`, but taking a timestamp from the leader failed",
}

func classList() string {
	var out []string
	for i := 0; ; i++ {
		s := proxy.Class(i).String()
		if strings.HasPrefix(s, "class(") {
			break
		}
		out = append(out, "`"+s+"`")
	}
	return strings.Join(out, ", ")
}

func codeList() string {
	var out []string
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		out = append(out, "`"+c.String()+"`")
	}
	return strings.Join(out, ", ")
}

// documentedMetrics parses the table of docs/metrics.md: name -> row.
func documentedMetrics(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(metricsDocPath)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	re := regexp.MustCompile("^\\| `(milvus_ha_proxy_\\w+)`")
	for _, l := range strings.Split(string(b), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			out[m[1]] = l
		}
	}
	return out
}

// checkScrapeDocumented: every milvus_ha_proxy_ family of a real scrape of
// the running proxy is documented, with the same type and labels.
func checkScrapeDocumented(t *testing.T, ms metrics) {
	t.Helper()
	doc := documentedMetrics(t)
	for _, name := range proxyFamilies(ms) {
		row, ok := doc[name]
		if !ok {
			t.Errorf("%s is served on /metrics but not in docs/metrics.md (%s)", name, regenerate)
			continue
		}
		if want := metricRow(name, ms[name]); row != want {
			t.Errorf("docs/metrics.md describes %s as\n  %s\nthe proxy serves\n  %s", name, row, want)
		}
	}
}
