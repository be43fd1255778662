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
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
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
	dir, err := os.MkdirTemp("", "mhp-failover-")
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

// simProc is one simulated cluster in its own process.
type simProc struct {
	t    testing.TB
	id   string
	dir  string // --data-dir: survives a kill
	addr string // gRPC address, kept across restarts
	ctl  string // fault control address (changes on restart)
	log  *os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startSim starts a cluster on a port chosen by the system.
func startSim(t testing.TB, id string, extra ...string) *simProc {
	t.Helper()
	p := &simProc{t: t, id: id, dir: filepath.Join(t.TempDir(), id)}
	f, err := os.Create(p.dir + ".log")
	if err != nil {
		t.Fatal(err)
	}
	p.log = f
	t.Cleanup(func() {
		p.kill()
		f.Close()
		if t.Failed() {
			if b, err := os.ReadFile(f.Name()); err == nil && len(b) > 0 {
				t.Logf("sim %s log (last 3000 bytes):\n%s", id, tail(b, 3000))
			}
		}
	})
	p.start("127.0.0.1:0", extra...)
	return p
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// start runs the process and waits for its "listening on" line.
func (p *simProc) start(listen string, extra ...string) {
	p.t.Helper()
	if err := p.tryStart(listen, extra...); err != nil {
		p.t.Fatal(err)
	}
}

func (p *simProc) tryStart(listen string, extra ...string) error {
	args := append([]string{"sim", "--cluster-id", p.id, "--listen", listen, "--control", "127.0.0.1:0",
		"--data-dir", p.dir, "--tick", "20ms", "--log-level", "warn"}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Stderr = p.log
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting sim %s: %w", p.id, err)
	}
	done := make(chan struct{})
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.After(15 * time.Second)
	var addr, ctl string
	for addr == "" || ctl == "" {
		select {
		case l := <-lines:
			if a, ok := strings.CutPrefix(l, "sim "+p.id+" listening on "); ok {
				addr = a
			}
			if a, ok := strings.CutPrefix(l, "sim "+p.id+" control on "); ok {
				ctl = a
			}
		case <-done:
			return fmt.Errorf("sim %s exited at start (log in %s)", p.id, p.log.Name())
		case <-deadline:
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("sim %s did not report its address", p.id)
		}
	}
	p.mu.Lock()
	p.cmd, p.done, p.addr, p.ctl = cmd, done, addr, ctl
	p.mu.Unlock()
	return nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *simProc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// restart starts the cluster again on its old address with its data. The
// port was just released; retry briefly should another process take it
// in between.
func (p *simProc) restart() {
	p.t.Helper()
	p.kill()
	var err error
	for range 20 {
		if err = p.tryStart(p.addr); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("restarting sim %s: %v", p.id, err)
}
