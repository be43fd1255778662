package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image/png"
	"math"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/bench/benchtest"
)

func startFake(t *testing.T, f *benchtest.Fake) string {
	t.Helper()
	addr, stop, err := f.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return addr
}

func baseConfig(addr string) Config {
	return Config{
		Targets:     []Target{{Name: "t", Addr: addr}},
		Workload:    WorkloadSearch,
		Consistency: Eventually,
		Concurrency: 4,
		Ops:         400,
		Dim:         8,
		Preload:     100,
		Seed:        7,
	}
}

func checkLatency(t *testing.T, what string, l Latency) {
	t.Helper()
	if l.Count == 0 || l.P50 <= 0 || l.Mean <= 0 {
		t.Errorf("%s: empty or zero latency %+v", what, l)
	}
	if !(l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("%s: percentiles out of order %+v", what, l)
	}
	// On loopback against an in-memory fake nothing takes 10 s; a value
	// that large would be a unit error.
	if l.Max > 10000 {
		t.Errorf("%s: absurd max latency %v ms", what, l.Max)
	}
}

func TestRunSearch(t *testing.T) {
	f := benchtest.New("b", "c")
	cfg := baseConfig(startFake(t, f))
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 1 {
		t.Fatalf("%d targets in report", len(rep.Targets))
	}
	tr := rep.Targets[0]
	if tr.OK != 400 || tr.Errors != 0 || tr.Ops != 400 {
		t.Errorf("ok=%d errors=%d ops=%d, want 400 0 400", tr.OK, tr.Errors, tr.Ops)
	}
	if tr.Throughput <= 0 || tr.DurationS <= 0 || tr.Throughput*tr.DurationS < 399 || tr.Throughput*tr.DurationS > 401 {
		t.Errorf("throughput %v over %vs does not make 400 ops", tr.Throughput, tr.DurationS)
	}
	checkLatency(t, "all", tr.Latency)
	if got := tr.ByOp["search"].OK; got != 400 || len(tr.ByOp) != 1 {
		t.Errorf("by op = %+v", tr.ByOp)
	}
	if b, c := tr.ReadsByCluster["b"], tr.ReadsByCluster["c"]; b+c != 400 || b != 200 {
		t.Errorf("reads by cluster = %v, want b=200 c=200", tr.ReadsByCluster)
	}
	if tr.Verify != nil {
		t.Errorf("verify reported for a read-only eventually run: %+v", tr.Verify)
	}
	if tr.ReadGap == nil || tr.WriteGap != nil {
		t.Errorf("gaps: read %v write %v; want a read gap only", tr.ReadGap, tr.WriteGap)
	}
	var sum uint64
	for _, p := range tr.Timeline {
		sum += p.OK
	}
	if sum != 400 || len(tr.Timeline) == 0 {
		t.Errorf("timeline sums to %d over %d points, want 400", sum, len(tr.Timeline))
	}
	var active float64
	for _, p := range tr.Timeline {
		active += p.ActiveS
	}
	if math.Abs(active-tr.DurationS) > 1e-6 {
		t.Errorf("timeline covers %vs measured, the target %vs", active, tr.DurationS)
	}
	if len(rep.Setup) != 1 || rep.Setup[0].PreloadRows != 100 {
		t.Errorf("setup = %+v", rep.Setup)
	}
	if rows := f.Rows(); rows != 100 {
		t.Errorf("server holds %d rows after preload, want 100", rows)
	}
	if sessions := f.Sessions(); sessions != 4 {
		t.Errorf("%d distinct session identifiers seen, want one per worker (4)", sessions)
	}
	if g, _ := f.Guarantee(commonpb.ConsistencyLevel_Eventually); g != 1 {
		t.Errorf("eventually search sent guarantee %v, want 1", g)
	}

	// The three renderings.
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "started_at", "config", "setup", "targets", "elapsed_s"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	t0 := doc["targets"].([]any)[0].(map[string]any)
	for _, k := range []string{"throughput", "latency", "by_op", "errors_by_code", "reads_by_cluster", "writes_by_cluster", "timeline", "leader_changes"} {
		if _, ok := t0[k]; !ok {
			t.Errorf("JSON target lacks %q", k)
		}
	}
	lat := t0["latency"].(map[string]any)
	for _, k := range []string{"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms", "count"} {
		if v, ok := lat[k].(float64); !ok || v <= 0 {
			t.Errorf("JSON latency %q = %v", k, lat[k])
		}
	}
	var tab bytes.Buffer
	if err := rep.WriteTable(&tab); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p99.9 ms", "reads per cluster: b 200 (50.0%) c 200 (50.0%)", "errors: none", "preload 100 rows"} {
		if !strings.Contains(tab.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tab.String())
		}
	}
	var img bytes.Buffer
	if err := rep.WritePlot(&img); err != nil {
		t.Fatal(err)
	}
	cfgImg, err := png.DecodeConfig(&img)
	if err != nil || cfgImg.Width < 500 || cfgImg.Height < 300 {
		t.Errorf("plot: %dx%d, %v", cfgImg.Width, cfgImg.Height, err)
	}
}

func TestRunMixedSessionReadsOwnWrites(t *testing.T) {
	for _, tt := range []struct {
		name   string
		stale  bool
		misses func(v *Verify) bool
	}{
		{"honest", false, func(v *Verify) bool { return v.Misses == 0 }},
		{"stale backend is caught", true, func(v *Verify) bool { return v.Misses == v.Checks }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := benchtest.New() // no header: reads are labelled with the target
			f.StaleReads = tt.stale
			cfg := baseConfig(startFake(t, f))
			cfg.Workload, cfg.ReadRatio, cfg.Consistency = WorkloadMixed, 0.5, Session
			cfg.VerifyEvery = 1
			cfg.Ops = 300
			rep, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			tr := rep.Targets[0]
			v := tr.Verify
			if v == nil || v.Checks == 0 || v.Level != Session {
				t.Fatalf("verify = %+v, want checks", v)
			}
			if !tt.misses(v) {
				t.Errorf("verify = %+v", v)
			}
			ins := tr.ByOp["insert"].OK
			if ins == 0 || tr.ByOp["search"].OK == 0 || tr.ByOp["verify"].OK != v.Checks || v.Checks != ins {
				t.Errorf("by op = %+v, verify %+v", tr.ByOp, v)
			}
			if tr.WritesByCluster["a"] != ins {
				t.Errorf("writes by cluster = %v, want a=%d", tr.WritesByCluster, ins)
			}
			if tr.ReadsByCluster["t"] != tr.ByOp["search"].OK+v.Checks {
				t.Errorf("reads by cluster = %v", tr.ReadsByCluster)
			}
			if g, _ := f.Guarantee(commonpb.ConsistencyLevel_Session); g <= 1 {
				t.Errorf("session search after writes sent guarantee %v, want the last write's ts", g)
			}
			if tr.WriteGap == nil || tr.WriteGap.S <= 0 {
				t.Errorf("write gap = %+v", tr.WriteGap)
			}
		})
	}
}

func TestRunErrorsByCode(t *testing.T) {
	f := benchtest.New("b")
	f.FailEvery = 10
	cfg := baseConfig(startFake(t, f))
	cfg.Ops = 200
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := rep.Targets[0]
	want := map[string]uint64{"milvus:1100": 10, "grpc:Unavailable": 10}
	if len(tr.ErrorsByCode) != 2 || tr.ErrorsByCode["milvus:1100"] != 10 || tr.ErrorsByCode["grpc:Unavailable"] != 10 {
		t.Errorf("errors by code = %v, want %v", tr.ErrorsByCode, want)
	}
	if tr.OK != 180 || tr.Errors != 20 || tr.ByOp["search"].Errors != 20 {
		t.Errorf("ok %d errors %d", tr.OK, tr.Errors)
	}
	if tr.ErrorSamples["milvus:1100"] != "injected" || tr.ErrorSamples["grpc:Unavailable"] != "injected" {
		t.Errorf("samples = %v", tr.ErrorSamples)
	}
	var errSum uint64
	for _, p := range tr.Timeline {
		errSum += p.Errors
	}
	if errSum != 20 {
		t.Errorf("timeline errors sum to %d, want 20", errSum)
	}
}

func TestRunLeaderChangeAndFault(t *testing.T) {
	f := benchtest.New()
	cfg := baseConfig(startFake(t, f))
	cfg.Workload = WorkloadInsert
	cfg.Ops, cfg.Duration = 0, 600*time.Millisecond
	cfg.Faults = []Fault{{At: 200 * time.Millisecond, Name: "switch", Do: func(context.Context) error {
		f.SetLeader("b")
		return nil
	}}, {At: 300 * time.Millisecond, Name: "broken", Do: func(context.Context) error { return errors.New("boom") }}}
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := rep.Targets[0]
	if len(tr.LeaderChanges) != 1 {
		t.Fatalf("leader changes = %+v, want one", tr.LeaderChanges)
	}
	lc := tr.LeaderChanges[0]
	if lc.From != "a" || lc.To != "b" || lc.Source != "header" || lc.At < 0.2 || lc.At > 0.6 {
		t.Errorf("leader change = %+v", lc)
	}
	if len(rep.Faults) != 2 || rep.Faults[0].Name != "switch" || rep.Faults[0].Error != "" || rep.Faults[1].Error != "boom" {
		t.Errorf("faults = %+v", rep.Faults)
	}
	if tr.WritesByCluster["a"] == 0 || tr.WritesByCluster["b"] == 0 {
		t.Errorf("writes by cluster = %v", tr.WritesByCluster)
	}
	if tr.DurationS < 0.6 {
		t.Errorf("measured %vs, want at least the 0.6s asked", tr.DurationS)
	}
	var img bytes.Buffer
	if err := rep.WritePlot(&img); err != nil {
		t.Fatal(err)
	}
}

func TestRunCompare(t *testing.T) {
	fa, fb := benchtest.New("a"), benchtest.New()
	cfg := baseConfig(startFake(t, fa))
	cfg.Targets = append(cfg.Targets, Target{Name: "direct", Addr: startFake(t, fb)})
	cfg.Rounds = 2
	cfg.Ops = 200
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 2 || len(rep.Ratios) != 1 {
		t.Fatalf("targets %d ratios %d", len(rep.Targets), len(rep.Ratios))
	}
	for _, tr := range rep.Targets {
		if tr.OK != 200 {
			t.Errorf("%s: ok %d, want 200", tr.Name, tr.OK)
		}
	}
	r := rep.Ratios[0]
	if r.Target != "t" || r.Baseline != "direct" || r.Throughput <= 0 || r.P99 <= 0 {
		t.Errorf("ratio = %+v", r)
	}
	want := rep.Targets[0].Throughput / rep.Targets[1].Throughput
	if d := r.Throughput - want; d > 1e-9 || d < -1e-9 {
		t.Errorf("throughput ratio %v, want %v", r.Throughput, want)
	}
	if fa.Searches() != 200 || fb.Searches() != 200 {
		t.Errorf("searches: %d and %d, want 200 each", fa.Searches(), fb.Searches())
	}
}

func TestRunCancel(t *testing.T) {
	f := benchtest.New()
	cfg := baseConfig(startFake(t, f))
	cfg.Ops, cfg.Duration = 0, time.Hour
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(300*time.Millisecond, cancel)
	rep, err := Run(ctx, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if rep == nil || !rep.Interrupted || rep.Targets[0].OK == 0 || rep.Targets[0].Errors != 0 {
		t.Fatalf("partial report = %+v", rep)
	}
}

func TestRunQueryUpsert(t *testing.T) {
	for _, w := range []Workload{WorkloadQuery, WorkloadUpsert, WorkloadInsert} {
		t.Run(string(w), func(t *testing.T) {
			f := benchtest.New()
			cfg := baseConfig(startFake(t, f))
			cfg.Workload, cfg.Batch, cfg.Ops, cfg.Consistency = w, 5, 100, Strong
			cfg.Concurrency = 1 // so "every 10th insert of a worker" is every 10th insert
			rep, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			tr := rep.Targets[0]
			if tr.ByOp[string(w)].OK != 100 || tr.Errors != 0 {
				t.Fatalf("by op = %+v errors %v %v", tr.ByOp, tr.ErrorsByCode, tr.ErrorSamples)
			}
			rows := f.Rows()
			want := map[Workload]int{WorkloadQuery: 100, WorkloadUpsert: 100, WorkloadInsert: 600}[w]
			if rows != want {
				t.Errorf("server holds %d rows, want %d", rows, want)
			}
			if w == WorkloadInsert && (tr.Verify == nil || tr.Verify.Checks != 10 || tr.Verify.Misses != 0) {
				t.Errorf("strong insert verify = %+v, want 10 checks (every 10th of 100)", tr.Verify)
			}
		})
	}
}

func TestRunFvecsVectors(t *testing.T) {
	f := benchtest.New()
	cfg := baseConfig(startFake(t, f))
	cfg.Dim = 0
	cfg.Vectors = [][]float32{{1, 2, 3}, {4, 5, 6}}
	cfg.Ops = 20
	rep, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Config.Dim != 3 || rep.Config.FileVectors != 2 || rep.Targets[0].OK != 20 {
		t.Errorf("config %+v ok %d", rep.Config, rep.Targets[0].OK)
	}
	if d := f.Dim("bench_3"); d != 3 {
		t.Errorf("collection dim = %d, want 3", d)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunProgress(t *testing.T) {
	f := benchtest.New()
	cfg := baseConfig(startFake(t, f))
	cfg.Ops, cfg.Duration, cfg.Concurrency = 0, 1300*time.Millisecond, 2
	var out syncBuffer
	cfg.Progress = &out
	if _, err := Run(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^bench t  [0-9.]+s/1.3s  ops [1-9][0-9]*  [1-9][0-9]* ops/s  errors 0\n`)
	if line := out.String(); !re.MatchString(line) {
		t.Errorf("progress output %q", line)
	}
}
