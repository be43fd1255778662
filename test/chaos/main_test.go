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
//	                      all (the default, see defaultKinds)
//	MHP_CHAOS_SECONDS=S   total time budget; seeds run one after another
//	                      until it is spent (default 40: `make test`;
//	                      `make chaos SECONDS=600` for a long run)
//	MHP_BIN=path          use this binary instead of building one
package chaos_test

import (
	"os"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
)

// binary is the milvus-ha-proxy built once for the whole suite.
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int { return testproc.RunWithBinary(m, "mhp-chaos-", &binary) }
