package bench

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"google.golang.org/grpc/codes"
)

// The recorder and report turn known outcomes into known numbers.
func TestRecorderKnownInputs(t *testing.T) {
	t0 := time.Unix(1000, 0)
	rec := newRecorder(t0)
	var cur workerCursor
	// 100 searches of 1..100 ms completing in second 0 (served by b then c),
	// 10 inserts of 5 ms in second 2 (leader a, then b from the 6th), 3
	// errors.
	for i := 1; i <= 100; i++ {
		cl := "b"
		if i > 40 {
			cl = "c"
		}
		rec.record(&outcome{kind: opSearch, start: t0, latency: time.Duration(i) * time.Millisecond, cluster: cl}, &cur, "")
	}
	for i := 1; i <= 10; i++ {
		cl := "a"
		if i > 5 {
			cl = "b"
		}
		start := t0.Add(2*time.Second + time.Duration(i)*10*time.Millisecond)
		rec.record(&outcome{kind: opInsert, start: start, latency: 5 * time.Millisecond, cluster: cl, ts: uint64(i)}, &cur, "")
	}
	rec.record(&outcome{kind: opSearch, start: t0, latency: time.Millisecond, code: codes.Unavailable}, &cur, "conn refused")
	rec.record(&outcome{kind: opSearch, start: t0, latency: time.Millisecond, status: &commonpb.Status{Code: 503, Reason: "not ready"}}, &cur, "")
	rec.record(&outcome{kind: opInsert, start: t0, latency: time.Millisecond, status: &commonpb.Status{ErrorCode: commonpb.ErrorCode_RateLimit}}, &cur, "")
	rec.verified(true)
	rec.verified(false)
	rec.active.Store(int64(4 * time.Second))
	rec.addPhase(0, 2500*time.Millisecond)

	cfg := Config{Workload: WorkloadMixed, Consistency: Session, VerifyEvery: 1}
	tr := rec.targetReport(Target{Name: "x", Addr: "127.0.0.1:1"}, &cfg)

	if tr.OK != 110 || tr.Errors != 3 || tr.Ops != 113 {
		t.Errorf("ok %d errors %d ops %d, want 110 3 113", tr.OK, tr.Errors, tr.Ops)
	}
	if tr.Throughput != 110.0/4 {
		t.Errorf("throughput %v, want 27.5", tr.Throughput)
	}
	s := tr.ByOp["search"]
	if s.OK != 100 || s.Errors != 2 || s.Throughput != 25 {
		t.Errorf("search = %+v", s)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) <= want*1e-3 }
	l := s.Latency
	if !near(l.P50, 50) || !near(l.P90, 90) || !near(l.P99, 99) || !near(l.P999, 100) || l.Max != 100 || !near(l.Mean, 50.5) {
		t.Errorf("search latency = %+v, want p50 50 p90 90 p99 99 p99.9 100 max 100 mean 50.5", l)
	}
	if ins := tr.ByOp["insert"]; ins.OK != 10 || ins.Errors != 1 || !near(ins.Latency.P99, 5) {
		t.Errorf("insert = %+v", ins)
	}
	wantCodes := map[string]uint64{"grpc:Unavailable": 1, "milvus:503": 1, "milvus:RateLimit": 1}
	for k, v := range wantCodes {
		if tr.ErrorsByCode[k] != v {
			t.Errorf("errors by code = %v, want %v", tr.ErrorsByCode, wantCodes)
		}
	}
	if tr.ErrorSamples["grpc:Unavailable"] != "conn refused" || tr.ErrorSamples["milvus:503"] != "not ready" {
		t.Errorf("samples = %v", tr.ErrorSamples)
	}
	if tr.ReadsByCluster["b"] != 40 || tr.ReadsByCluster["c"] != 60 || len(tr.ReadsByCluster) != 2 {
		t.Errorf("reads by cluster = %v", tr.ReadsByCluster)
	}
	if got := tr.ReadShare("b"); got != 0.6 {
		t.Errorf("share of reads not on b = %v, want 0.6", got)
	}
	if tr.WritesByCluster["a"] != 5 || tr.WritesByCluster["b"] != 5 {
		t.Errorf("writes by cluster = %v", tr.WritesByCluster)
	}
	if len(tr.LeaderChanges) != 1 || tr.LeaderChanges[0].From != "a" || tr.LeaderChanges[0].To != "b" ||
		math.Abs(tr.LeaderChanges[0].At-2.065) > 1e-9 {
		t.Errorf("leader changes = %+v, want a->b at 2.065s", tr.LeaderChanges)
	}
	if tr.Verify == nil || tr.Verify.Checks != 2 || tr.Verify.Misses != 1 {
		t.Errorf("verify = %+v", tr.Verify)
	}
	// Timeline: second 0 holds the 100 searches and 3 errors, second 2 the
	// inserts; second 1 saw nothing but was measured, so it is a zero.
	if len(tr.Timeline) != 3 || tr.Timeline[0].T != 0 || tr.Timeline[0].OK != 100 || tr.Timeline[0].Errors != 3 ||
		tr.Timeline[1].T != 1 || tr.Timeline[1].OK != 0 || tr.Timeline[1].Rate != 0 ||
		tr.Timeline[2].T != 2 || tr.Timeline[2].OK != 10 {
		t.Errorf("timeline = %+v", tr.Timeline)
	}
	// Second 2 was measured for half a second: its rate is per second
	// measured, not per wall second.
	if p := tr.Timeline[0]; p.ActiveS != 1 || p.Rate != 100 {
		t.Errorf("second 0: active %v rate %v, want 1 and 100", p.ActiveS, p.Rate)
	}
	if p := tr.Timeline[2]; p.ActiveS != 0.5 || p.Rate != 20 {
		t.Errorf("second 2: active %v rate %v, want 0.5 and 20", p.ActiveS, p.Rate)
	}
	if p := tr.Timeline[0].P99; math.Abs(p-99) > 99*0.04 {
		t.Errorf("second 0 p99 = %v, want 99 within the timeline's 3%%", p)
	}
}

func TestGapTracker(t *testing.T) {
	var g gapTracker
	g.reset(0)
	for _, at := range []int64{10, 20, 25, 100, 110} {
		g.success(at)
	}
	g.observe(g.last.Load(), 130)
	if g.max.Load() != 75 || g.maxEnd.Load() != 100 {
		t.Errorf("gap %d ending %d, want 75 ending 100", g.max.Load(), g.maxEnd.Load())
	}
	g.observe(g.last.Load(), 300) // still failing at the end
	if g.max.Load() != 190 || g.maxEnd.Load() != 300 {
		t.Errorf("open gap %d ending %d, want 190 ending 300", g.max.Load(), g.maxEnd.Load())
	}
}

func TestLeaderFromTopology(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"leader":"a","epoch":3}`, "a"},
		{`{"leader":{"id":"b"}}`, "b"},
		{`{"clusters":[{"id":"a","role":"alternative"},{"id":"c","role":"leader"}]}`, "c"},
		{`{"clusters":[]}`, ""},
	}
	for _, tt := range tests {
		got, err := leaderFromTopology([]byte(tt.body))
		if err != nil || got != tt.want {
			t.Errorf("%s: %q, %v; want %q", tt.body, got, err, tt.want)
		}
	}
	if _, err := leaderFromTopology([]byte("nope")); err == nil {
		t.Error("bad JSON: no error")
	}
}

func TestValidate(t *testing.T) {
	good := func() Config {
		return Config{Targets: []Target{{Addr: "127.0.0.1:1"}}, Workload: WorkloadSearch, Duration: time.Second}
	}
	tests := []struct {
		flag string
		mod  func(*Config)
	}{
		{"target", func(c *Config) { c.Targets = nil }},
		{"workload", func(c *Config) { c.Workload = "" }},
		{"workload", func(c *Config) { c.Workload = "scan" }},
		{"consistency", func(c *Config) { c.Consistency = "linearizable" }},
		{"duration", func(c *Config) { c.Ops = 10 }},
		{"duration", func(c *Config) { c.Duration = 0 }},
		{"concurrency", func(c *Config) { c.Concurrency = MaxConcurrency + 1 }},
		{"read-ratio", func(c *Config) { c.ReadRatio = 1.5 }},
		{"dim", func(c *Config) { c.Dim = 4; c.Vectors = [][]float32{{1, 2}} }},
		{"collection", func(c *Config) { c.Collection = "1bad-name" }},
		{"setup", func(c *Config) { c.Setup = "maybe" }},
		{"compare", func(c *Config) { c.Targets = append(c.Targets, c.Targets[0]) }},
		{"rounds", func(c *Config) { c.Duration, c.Ops, c.Rounds = 0, 2, 3 }},
		{"fault-at", func(c *Config) { c.Faults = []Fault{{At: time.Second}} }},
	}
	if err := (&Config{Targets: []Target{{Addr: "x:1"}}, Workload: WorkloadSearch, Duration: time.Second}).Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tt := range tests {
		c := good()
		tt.mod(&c)
		err := c.Validate()
		if err == nil || !IsUsageError(err) || !strings.HasPrefix(err.Error(), "--"+tt.flag+":") {
			t.Errorf("%s: err = %v, want a usage error naming --%s", tt.flag, err, tt.flag)
		}
	}
}
