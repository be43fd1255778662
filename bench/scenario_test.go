package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/bench/benchtest"
)

// The scenario runners against fakes standing in for proxies and clusters:
// they check each scenario's shape and arithmetic; numbers against the
// simulator are in sim_test.go.

func TestScenarioOverhead(t *testing.T) {
	// One cluster behind two endpoints, as a proxy and its only cluster.
	cluster := benchtest.New("a")
	cfg := baseConfig(startFake(t, cluster))
	cfg.Targets = []Target{{Name: "proxy", Addr: cfg.Targets[0].Addr}, {Name: "direct", Addr: startFake(t, cluster)}}
	cfg.Workload = ""
	cfg.Ops = 200
	s, err := Overhead(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Rows) != 2 || s.Rows[1][5] != "1.000x" || s.Rows[1][6] != "0.000" {
		t.Errorf("rows = %v", s.Rows)
	}
	tr := s.Runs[0].Report.Targets
	if got, want := s.Findings["throughput_ratio_proxy"], tr[0].Throughput/tr[1].Throughput; got != want || got <= 0 {
		t.Errorf("finding %v, want %v", got, want)
	}
	// Set up once, through the proxy: the direct target is the same cluster.
	if st := s.Runs[0].Report.Setup; len(st) != 1 || st[0].Target != "proxy" || cluster.Rows() != 100 {
		t.Errorf("setup %+v; rows %d", st, cluster.Rows())
	}
	if _, err := Overhead(t.Context(), baseConfig("x:1")); !IsUsageError(err) {
		t.Errorf("one target: err = %v, want a usage error", err)
	}
}

func TestScenarioReadScaling(t *testing.T) {
	var targets []Target
	for i, clusters := range [][]string{{"a"}, {"a", "b"}, {"a", "b", "c"}} {
		targets = append(targets, Target{Name: fmt.Sprintf("%d-clusters", i+1), Addr: startFake(t, benchtest.New(clusters...))})
	}
	cfg := baseConfig("")
	cfg.Targets, cfg.Workload, cfg.Consistency, cfg.Ops = targets, "", "", 300
	s, err := ReadScaling(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Runs[0].Report.Config.Consistency != Eventually || s.Runs[0].Report.Config.Workload != WorkloadSearch {
		t.Errorf("defaults not applied: %+v", s.Runs[0].Report.Config)
	}
	for i, r := range s.Rows {
		if r[1] != fmt.Sprint(i+1) {
			t.Errorf("row %d: %v clusters served reads, want %d", i, r[1], i+1)
		}
	}
	if s.Findings["speedup_3-clusters_vs_1-clusters"] <= 0 {
		t.Errorf("findings = %v", s.Findings)
	}
}

func TestScenarioFailover(t *testing.T) {
	f := benchtest.New("b", "c")
	cfg := baseConfig(startFake(t, f))
	cfg.Workload, cfg.Consistency = "", ""
	// 1.5 s: a run that never recovered would show a gap of 1.3 s, well
	// above the bound below, which leaves room for a loaded machine (0.85 s
	// seen with 8 builds on 2 cores).
	cfg.Ops, cfg.Duration = 0, 1500*time.Millisecond
	// The "leader dies": writes stall for 300 ms, then go to b. It dies
	// only once a has acknowledged a write of the run (more rows than the
	// preload): a change is seen as a write answered by a, then one by b,
	// and on a loaded machine under -race the first write can take longer
	// than the 200 ms before the fault.
	preload := cfg.Preload
	cfg.Faults = []Fault{{At: 200 * time.Millisecond, Name: "kill a", Do: func(ctx context.Context) error {
		for f.Rows() <= preload {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		f.SetStall(300 * time.Millisecond)
		f.SetLeader("b")
		return nil
	}}}
	s, err := Failover(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if g := s.Findings["write_gap_s"]; g < 0.3 || g > 1.1 {
		t.Errorf("write gap %v s, want about 0.3 (at most 1.1 on a loaded machine)", g)
	}
	if s.Findings["leader_changes"] != 1 || s.Findings["session_misses"] != 0 {
		t.Errorf("findings = %v", s.Findings)
	}
	if !strings.Contains(s.Rows[0][7], "a->b@") {
		t.Errorf("row = %v", s.Rows[0])
	}
	var buf bytes.Buffer
	if err := s.WriteTable(&buf); err != nil || !strings.Contains(buf.String(), "write_gap_s") {
		t.Errorf("table: %v\n%s", err, buf.String())
	}
	if _, err := Failover(t.Context(), baseConfig("x:1")); !IsUsageError(err) {
		t.Errorf("no fault: err = %v, want a usage error", err)
	}
}

func TestScenarioConsistencyCost(t *testing.T) {
	f := benchtest.New("a", "b", "c") // a third of reads on the leader
	cfg := baseConfig(startFake(t, f))
	cfg.Workload, cfg.Ops = "", 200
	var mu sync.Mutex
	var lags []time.Duration
	s, err := ConsistencyCost(t.Context(), cfg, ConsistencyCostOptions{
		Levels: []Consistency{Strong, Eventually},
		Lags:   []time.Duration{0, time.Second},
		SetLag: func(_ context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			lags = append(lags, d)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Runs) != 4 || len(s.Rows) != 4 {
		t.Fatalf("%d runs %d rows, want 4", len(s.Runs), len(s.Rows))
	}
	// Set up once: later runs reuse the collection.
	if len(s.Runs[0].Report.Setup) != 1 || len(s.Runs[1].Report.Setup) != 0 {
		t.Errorf("setups: %d then %d", len(s.Runs[0].Report.Setup), len(s.Runs[1].Report.Setup))
	}
	if fmt.Sprint(lags) != "[0s 1s 0s]" { // the last resets the lag
		t.Errorf("lags set: %v", lags)
	}
	for k, v := range s.Findings {
		if v < 0.5 || v > 0.8 {
			t.Errorf("%s = %v, want about 2/3 (reads rotate over a, b, c; a leads)", k, v)
		}
	}
}

func TestSimLagSetterAndAdminTopology(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/api/v1/topology" {
			fmt.Fprint(w, `{"epoch":2,"leader":"a","clusters":[{"id":"a","role":"leader"},{"id":"b","role":"alternative"},{"id":"c","role":"alternative"},{"id":"d","role":"standby"}]}`)
			return
		}
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.String())
		mu.Unlock()
		if strings.Contains(r.URL.Path, "/bad/") {
			http.Error(w, "no such cluster", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	leader, alts, err := AdminTopology(t.Context(), srv.URL)
	if err != nil || leader != "a" || fmt.Sprint(alts) != "[b c]" {
		t.Fatalf("topology: %q %v %v", leader, alts, err)
	}
	if err := SimLagSetter(srv.URL+"/", alts)(t.Context(), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	want := "[POST /sim/b/replication/delay?d=100ms POST /sim/c/replication/delay?d=100ms]"
	if fmt.Sprint(got) != want {
		t.Errorf("requests %v, want %s", got, want)
	}
	err = SimLagSetter(srv.URL, []string{"bad"})(t.Context(), 0)
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("error status: err = %v", err)
	}
}
