package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
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
	for _, want := range []string{"proxy", "p99.9 ms", "read-your-writes (session): 0 misses", "preload 40 rows"} {
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
