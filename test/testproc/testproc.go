// Package testproc is what the robustness suites (test/failover,
// test/chaos, test/multiproxy) share: it builds the milvus-ha-proxy binary
// once for a test package whose tests run it as separate processes (sim
// clusters, serve proxies), so that robustness is proved against the
// shipped binary; it starts, signals and restarts those processes (Proc,
// Sim, Proxy); it joins the clusters by replication (Join); and its raw
// Milvus client (Client) drives their load on one collection of
// registers. For tests only.
package testproc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RunWithBinary is a TestMain body: it sets *binary to $MHP_BIN when set,
// else builds cmd/milvus-ha-proxy into a temporary directory (named after
// prefix, removed afterwards), then runs the tests and returns their exit
// code.
func RunWithBinary(m *testing.M, prefix string, binary *string) int {
	if b := os.Getenv("MHP_BIN"); b != "" {
		*binary = b
		return m.Run()
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*binary = filepath.Join(dir, "milvus-ha-proxy")
	cmd := exec.Command("go", "build", "-o", *binary, "github.com/milvus-ha-proxy/milvus-ha-proxy/cmd/milvus-ha-proxy")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building milvus-ha-proxy:", err)
		return 1
	}
	return m.Run()
}
