package testproc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is one child process of the binary whose log goes to a file (kept
// across restarts) and whose stdout announces where it listens.
type Proc struct {
	bin  string // the milvus-ha-proxy binary
	name string
	log  *os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func NewProc(t testing.TB, bin, name, logPath string) *Proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proc{bin: bin, name: name, log: f}
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		f.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil && len(b) > 0 {
				t.Logf("%s log (last 4000 bytes):\n%s", name, tail(b, 4000))
			}
		}
	})
	return p
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Start runs the binary with args and returns, for each wanted stdout
// prefix, the rest of the first line that starts with it.
func (p *Proc) Start(args []string, want ...string) ([]string, error) {
	fmt.Fprintf(p.log, "=== %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(p.bin, args...)
	cmd.Stderr = p.log
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	lines := make(chan string, 8)
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
	got := make([]string, len(want))
	missing := len(want)
	deadline := time.After(20 * time.Second)
	for missing > 0 {
		select {
		case l := <-lines:
			for i, w := range want {
				if rest, ok := strings.CutPrefix(l, w); ok && got[i] == "" {
					got[i] = rest
					missing--
				}
			}
		case <-done:
			return nil, fmt.Errorf("%s exited at start (log in %s)", p.name, p.log.Name())
		case <-deadline:
			_ = cmd.Process.Kill()
			<-done
			return nil, fmt.Errorf("%s did not report %q within 20s", p.name, want)
		}
	}
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return got, nil
}

// Signal sends sig and waits for the process to be gone (SIGTERM: after
// its graceful stop). A process that does not stop within 30s is killed.
func (p *Proc) Signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	fmt.Fprintf(p.log, "=== %s %s\n", time.Now().Format(time.RFC3339Nano), sig)
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Sim is one simulated cluster in its own process; its data directory
// survives a kill.
type Sim struct {
	*Proc
	id    string
	dir   string
	extra []string // flags added to every start
	Addr  string   // gRPC address, kept across restarts
	Ctl   string   // fault control address (changes on restart)
}

// StartSim starts cluster id with its log and data directory under root
// and the extra flags (kept across restarts), on a port chosen by the
// system.
func StartSim(t testing.TB, bin, root, id string, extra ...string) (*Sim, error) {
	s := &Sim{Proc: NewProc(t, bin, "sim "+id, filepath.Join(root, id+".log")), id: id, dir: filepath.Join(root, id), extra: extra}
	return s, s.boot("127.0.0.1:0")
}

// StartSims starts the clusters ids at once, each as StartSim does, and
// fails the test when one does not come up.
func StartSims(t testing.TB, bin, root string, ids []string, extra ...string) map[string]*Sim {
	t.Helper()
	sims := make([]*Sim, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { sims[i], errs[i] = StartSim(t, bin, root, id, extra...) })
	}
	wg.Wait()
	out := make(map[string]*Sim, len(ids))
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		out[id] = sims[i]
	}
	return out
}

func (s *Sim) boot(listen string) error {
	args := []string{"sim", "--cluster-id", s.id, "--listen", listen, "--control", "127.0.0.1:0",
		"--data-dir", s.dir, "--tick", "20ms", "--log-level", "warn"}
	got, err := s.Start(append(args, s.extra...),
		"sim "+s.id+" listening on ", "sim "+s.id+" control on ")
	if err != nil {
		return err
	}
	s.Addr, s.Ctl = got[0], got[1]
	return nil
}

// Restart starts the cluster again on its old address with its data. The
// port was just released; retry briefly should another process take it.
func (s *Sim) Restart() error {
	s.Signal(syscall.SIGKILL)
	var err error
	for range 20 {
		if err = s.boot(s.Addr); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Proxy is the proxy in its own process (`serve --config`), restarted
// on the same two addresses.
type Proxy struct {
	*Proc
	config string
	Addr   string // gRPC
	Admin  string // admin HTTP host:port
}

func StartProxy(t testing.TB, bin, root, name, config string) (*Proxy, error) {
	p := &Proxy{Proc: NewProc(t, bin, "proxy "+name, filepath.Join(root, name+".log")), config: config}
	return p, p.boot("127.0.0.1:0", "127.0.0.1:0")
}

func (p *Proxy) boot(listen, admin string) error {
	got, err := p.Start([]string{"serve", "--config", p.config, "--listen", listen, "--admin-listen", admin},
		"milvus-ha-proxy listening on ")
	if err != nil {
		return err
	}
	// "<grpc> (gRPC), admin on http://<admin>"
	grpcAddr, rest, ok := strings.Cut(got[0], " (gRPC), admin on http://")
	if !ok {
		return fmt.Errorf("proxy announced %q", got[0])
	}
	p.Addr, p.Admin = grpcAddr, rest
	return nil
}

// Restart stops the proxy with sig (SIGKILL: a crash; SIGTERM: a drain)
// and starts it again on the same addresses.
func (p *Proxy) Restart(sig syscall.Signal) error {
	p.Signal(sig)
	var err error
	for range 20 {
		if err = p.boot(p.Addr, p.Admin); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}
