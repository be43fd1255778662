package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
)

// TestServeConfigErrors: a bad config exits 2 and names the offending key.
func TestServeConfigErrors(t *testing.T) {
	const base = "discovery: static\nclusters:\n  - {id: a, uri: '127.0.0.1:19531', role: leader}\n  - {id: b, uri: '127.0.0.1:19532', role: alternative}\n"
	cases := []struct {
		name, yaml, wantKey string
	}{
		{"unknown key", base + "read:\n  leader_serve_reads: true\n", "read.leader_serve_reads"},
		{"bad duration", base + "consistency:\n  bounded_staleness: 5q\n", "consistency.bounded_staleness"},
		{"duplicate id", "discovery: static\nclusters:\n  - {id: a, uri: 'h:1', role: leader}\n  - {id: a, uri: 'h:2', role: alternative}\n", "clusters[1].id"},
		{"no leader in static mode", "discovery: static\nclusters:\n  - {id: a, uri: 'h:1', role: alternative}\n", "clusters"},
		{"collector off without a limit", base + "runtime:\n  gc_percent: -1\n", "runtime.gc_percent"},
		{"negative memory limit", base + "runtime:\n  memory_limit: -5\n", "runtime.memory_limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "proxy.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := runServe(context.Background(), []string{"--config", path}, &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantKey) {
				t.Fatalf("error does not name %q: %s", tc.wantKey, stderr.String())
			}
		})
	}
}

// TestServeCheck: --check validates and prints the effective config with
// the token redacted.
func TestServeCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	cfg := "discovery: static\nclusters:\n  - {id: a, uri: '127.0.0.1:19531', role: leader, token: 'root:Milvus'}\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := runServe(context.Background(), []string{"--config", path, "--check"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if strings.Contains(stdout.String(), "Milvus") || !strings.Contains(stdout.String(), "bounded_staleness") {
		t.Fatalf("--check output leaks the token or lacks the defaults:\n%s", stdout.String())
	}
}

// TestServeUsage: bad usage exits 2.
func TestServeUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	t.Setenv("MILVUS_HA_PROXY_CONFIG", "")
	if code := runServe(context.Background(), []string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, &stdout, &stderr); code != 2 {
		t.Fatalf("missing file: exit %d, want 2 (%s)", code, stderr.String())
	}
	if code := run([]string{"no-such-command"}, &stdout, &stderr); code != 2 {
		t.Fatalf("unknown command: exit %d, want 2", code)
	}
}

// TestApplyRuntime: serve sets the collector from the runtime section,
// unless GOGC or GOMEMLIMIT set it already.
func TestApplyRuntime(t *testing.T) {
	gc0, limit0 := debug.SetGCPercent(-1), debug.SetMemoryLimit(-1)
	debug.SetGCPercent(gc0)
	t.Cleanup(func() {
		debug.SetGCPercent(gc0)
		debug.SetMemoryLimit(limit0)
	})
	read := func() (int, int64) {
		gc := debug.SetGCPercent(-1)
		debug.SetGCPercent(gc)
		return gc, debug.SetMemoryLimit(-1)
	}
	cases := []struct {
		name      string
		env       map[string]string
		rt        config.Runtime
		wantGC    int
		wantLimit int64
	}{
		{"config", nil, config.Runtime{GCPercent: 400, MemoryLimit: 1 << 30}, 400, 1 << 30},
		{"no limit", nil, config.Runtime{GCPercent: 250}, 250, math.MaxInt64},
		{"GOGC wins", map[string]string{"GOGC": "150"}, config.Runtime{GCPercent: 400}, 150, math.MaxInt64},
		{"GOMEMLIMIT wins", map[string]string{"GOMEMLIMIT": "1GiB"}, config.Runtime{GCPercent: 300, MemoryLimit: 5 << 20}, 300, 7 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// What the runtime would have read from the environment at start.
			debug.SetGCPercent(150)
			debug.SetMemoryLimit(math.MaxInt64)
			if _, ok := tc.env["GOMEMLIMIT"]; ok {
				debug.SetMemoryLimit(7 << 20)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			applyRuntime(tc.rt, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if gc, limit := read(); gc != tc.wantGC || limit != tc.wantLimit {
				t.Errorf("gc_percent %d, memory limit %d; want %d, %d", gc, limit, tc.wantGC, tc.wantLimit)
			}
		})
	}
}
