// Package chaos_test runs seeded random sequences of leader changes against
// the built milvus-ha-proxy: three simulated Milvus clusters (a -> b, c),
// each a `milvus-ha-proxy sim` process with its WAL on disk, and the proxy
// itself as a `milvus-ha-proxy serve` process. Writers and Session/Strong
// readers run through the proxy the whole time while the schedule switches
// over, forces failovers, kills the leader with SIGKILL and restarts it,
// pauses replication and restarts the proxy, in random order and spacing,
// some steps back to back.
//
// After every step (or burst of back-to-back steps), within a bound:
// exactly one cluster accepts writes (asked of each cluster directly), the
// proxy routes writes to it and /readyz is 200; no acknowledged write that
// the new leader held before a lossy change (or any, without one) is lost.
// At the end: no insert is applied twice, no Session read missed its own
// write, the Strong history of the shared registers is linearizable
// (porcupine, from an unknown value after each lossy change), and no write
// failed while the proxy process was up other than with an unknown
// outcome (writes wait up to write_hold for a writable leader).
//
// Knobs (environment):
//
//	MHP_CHAOS_SEED=N      run this seed (a failure prints it, with the step count)
//	MHP_CHAOS_STEPS=N     run exactly N steps per seed (replay)
//	MHP_CHAOS_KINDS=...   the kinds of step to draw from, comma-separated, or
//	                      all (default: the kinds that pass today, see
//	                      defaultKinds)
//	MHP_CHAOS_SECONDS=S   total time budget; seeds run one after another
//	                      until it is spent (default 40: `make test`;
//	                      `make chaos SECONDS=600` for a long run)
//	MHP_BIN=path          use this binary instead of building one
package chaos_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binary is the milvus-ha-proxy built once for the whole suite.
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if b := os.Getenv("MHP_BIN"); b != "" {
		binary = b
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "mhp-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "milvus-ha-proxy")
	cmd := exec.Command("go", "build", "-o", binary, "github.com/milvus-ha-proxy/milvus-ha-proxy/cmd/milvus-ha-proxy")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building milvus-ha-proxy:", err)
		return 1
	}
	return m.Run()
}
