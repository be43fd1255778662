package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
