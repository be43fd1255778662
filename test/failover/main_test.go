// Package failover_test is the end-to-end suite of leader changes: every
// Milvus cluster is a separate `milvus-ha-proxy sim` process (killed with
// SIGKILL, restarted on the same port and data directory), the proxy runs
// in this process through app (or, with rigOptions.binary, as the built
// binary in its own process), and a mixed load of writes with explicit
// primary keys and Session, Eventually and Strong reads goes through it.
//
// Speed measurements run more rounds with MHP_FAILOVER_ROUNDS and
// MHP_SWITCHOVER_ROUNDS (see speed_test.go).
package failover_test

import (
	"os"
	"syscall"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
)

// binary is the milvus-ha-proxy built once for the whole suite.
var binary string

func TestMain(m *testing.M) {
	os.Exit(testproc.RunWithBinary(m, "mhp-failover-", &binary))
}

// simProc is one simulated cluster in its own process (test/testproc).
type simProc struct {
	*testproc.Sim
	t testing.TB
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *simProc) kill() { p.Signal(syscall.SIGKILL) }

// restart starts the cluster again on its old address with its data.
func (p *simProc) restart() {
	p.t.Helper()
	if err := p.Restart(); err != nil {
		p.t.Fatalf("restarting sim: %v", err)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
