package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/bench"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/bench/benchtest"
)

func TestBenchUsageErrors(t *testing.T) {
	ok := []string{"--target", "127.0.0.1:1", "--workload", "search", "--ops", "10"}
	with := func(extra ...string) []string { return append(append([]string{}, ok...), extra...) }
	tests := []struct {
		name string
		args []string
		want string // the flag the message must name
	}{
		{"no target", []string{"--workload", "search", "--ops", "1"}, "--target"},
		{"no workload", []string{"--target", "x:1", "--ops", "1"}, "--workload"},
		{"bad workload", []string{"--target", "x:1", "--workload", "scan", "--ops", "1"}, "--workload"},
		{"bad consistency", with("--consistency", "linear"), "--consistency"},
		{"neither duration nor ops", []string{"--target", "x:1", "--workload", "search"}, "--duration"},
		{"both duration and ops", with("--duration", "1s"), "--duration"},
		{"not a number", with("--concurrency", "many"), "-concurrency"},
		{"zero concurrency", with("--concurrency", "0"), "--concurrency"},
		{"unknown flag", with("--frobnicate"), "-frobnicate"},
		{"bad compare", with("--compare", "x=,"), "--compare"},
		{"fault without time", with("--fault-post", "http://127.0.0.1:1/x"), "--fault-at"},
		{"missing fvecs", with("--fvecs", "/nonexistent/x.fvecs"), "--fvecs"},
		{"out dir missing", with("--out", "/nonexistent/dir/r.json"), "--out"},
		{"bad setup", with("--setup", "twice"), "--setup"},
		{"read ratio", with("--workload", "mixed", "--read-ratio", "0"), "--read-ratio"},
		{"stray argument", with("extra"), "unexpected argument"},
		{"unknown scenario", with("--scenario", "chaos"), "--scenario"},
		{"failover without fault", []string{"--target", "x:1", "--scenario", "failover", "--ops", "5"}, "--fault-at"},
		{"overhead without compare", []string{"--target", "x:1", "--scenario", "overhead", "--ops", "5"}, "--compare"},
		{"consistency-cost without admin", []string{"--target", "x:1", "--scenario", "consistency-cost", "--ops", "5"}, "--admin"},
		{"bad lags", []string{"--target", "x:1", "--scenario", "consistency-cost", "--ops", "5", "--alternatives", "b=http://127.0.0.1:1", "--lags", "soon"}, "--lags"},
		{"bad levels", []string{"--target", "x:1", "--scenario", "consistency-cost", "--ops", "5", "--alternatives", "b=http://127.0.0.1:1", "--levels", "strong,weak"}, "--levels"},
		{"in-process with compare", []string{"--scenario", "overhead", "--ops", "5", "--compare", "x:1"}, "--compare"},
		{"in-process bad levels", []string{"--scenario", "consistency-cost", "--ops", "5", "--levels", "weak"}, "--levels"},
		{"sim flags with target", with("--sim-capacity", "2"), "--sim-capacity"},
		{"kill and post", with("--fault-at", "1s", "--fault-kill", "99999", "--fault-post", "http://127.0.0.1:1/"), "--fault-kill"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runBench(t.Context(), tt.args, &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr does not name %s:\n%s", tt.want, stderr.String())
			}
		})
	}
}

func TestBenchHelpExitsZero(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runBench(t.Context(), []string{"-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(stderr.String(), "--workload search|query|insert|upsert|mixed") {
		t.Errorf("usage text missing:\n%s", stderr.String())
	}
}

func TestBenchCommandRuns(t *testing.T) {
	f := benchtest.New("b", "c")
	addr, stop, err := f.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	dir := t.TempDir()
	// A small .fvecs data set, so the file path is exercised end to end.
	var vecs [][]float32
	for i := range 50 {
		vecs = append(vecs, []float32{float32(i), 1, 2, 3})
	}
	fv := filepath.Join(dir, "data.fvecs")
	fh, err := os.Create(fv)
	if err != nil {
		t.Fatal(err)
	}
	if err := bench.WriteFvecs(fh, vecs); err != nil {
		t.Fatal(err)
	}
	fh.Close()

	out, plot := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.png")
	var stdout, stderr bytes.Buffer
	code := runBench(t.Context(), []string{
		"--target", "proxy=" + addr, "--workload", "mixed", "--read-ratio", "0.8",
		"--consistency", "session", "--concurrency", "3", "--ops", "150",
		"--preload", "40", "--fvecs", fv, "--out", out, "--plot", plot, "--progress",
	}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{"proxy", "p99.9 ms", "read-your-writes (session): 0 misses", "preload 40 rows",
		"wrote the JSON report to " + out + "\n", "wrote the plot to " + plot + "\n"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Config.Dim != 4 || len(rep.Targets) != 1 || rep.Targets[0].Name != "proxy" {
		t.Fatalf("report: dim %d, targets %+v", rep.Config.Dim, rep.Targets)
	}
	// --ops counts workload operations; the read-your-writes reads come on top.
	if by := rep.Targets[0].ByOp; by["search"].OK+by["insert"].OK != 150 || rep.Targets[0].Ops != 150+by["verify"].OK {
		t.Errorf("by op = %+v, ops %d", by, rep.Targets[0].Ops)
	}
	img, err := os.Open(plot)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if _, err := png.DecodeConfig(img); err != nil {
		t.Errorf("plot is not a PNG: %v", err)
	}
}

func TestBenchScenarioConsistencyCost(t *testing.T) {
	f := benchtest.New("a", "b", "c")
	addr, stop, err := f.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var mu sync.Mutex
	var delays []string
	ctl := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/topology":
			fmt.Fprint(w, `{"leader":"a","clusters":[{"id":"a","role":"leader"},{"id":"b","role":"alternative"},{"id":"c","role":"alternative"}]}`)
		case r.Method == http.MethodPost:
			mu.Lock()
			delays = append(delays, r.URL.Path+"?"+r.URL.RawQuery)
			mu.Unlock()
		default:
			http.NotFound(w, r)
		}
	}))
	defer ctl.Close()
	out := filepath.Join(t.TempDir(), "cc.json")
	var stdout, stderr bytes.Buffer
	code := runBench(t.Context(), []string{"--target", addr, "--scenario", "consistency-cost", "--admin", ctl.URL,
		"--lags", "0s,50ms", "--levels", "session,eventually", "--ops", "40", "--concurrency", "2", "--preload", "20", "--dim", "4",
		"--out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "reads on alternatives") || !strings.Contains(stdout.String(), "alt_share_eventually_50ms") {
		t.Errorf("summary missing:\n%s", stdout.String())
	}
	// b and c, for each lag, then reset to 0.
	want := "[/sim/b/replication/delay?d=0s /sim/c/replication/delay?d=0s /sim/b/replication/delay?d=50ms /sim/c/replication/delay?d=50ms /sim/b/replication/delay?d=0s /sim/c/replication/delay?d=0s]"
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(delays) != want {
		t.Errorf("control calls %v\nwant %s", delays, want)
	}
	var s bench.ScenarioReport
	data, _ := os.ReadFile(out)
	if err := json.Unmarshal(data, &s); err != nil || len(s.Runs) != 4 || s.Scenario != "consistency-cost" {
		t.Errorf("JSON: %v, %d runs", err, len(s.Runs))
	}
}

// A scenario without --target starts its own clusters and proxy.
func TestBenchScenarioInProcess(t *testing.T) {
	out := filepath.Join(t.TempDir(), "o.json")
	var stdout, stderr bytes.Buffer
	code := runBench(t.Context(), []string{"--scenario", "overhead", "--ops", "100", "--concurrency", "2",
		"--dim", "8", "--preload", "100", "--no-haproxy", "--out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{"scenario overhead", "ops/s vs direct", "throughput_ratio_proxy", "wrote the JSON report to " + out + "\n"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	var s bench.ScenarioReport
	data, _ := os.ReadFile(out)
	if err := json.Unmarshal(data, &s); err != nil || len(s.Runs) != 1 || len(s.Runs[0].Report.Targets) != 2 {
		t.Errorf("JSON: %v, %+v", err, s.Runs)
	}
}
