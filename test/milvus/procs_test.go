package milvus_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// pythonEnv names a Python with PyPI's `milvus` package.
	pythonEnv = "MHP_MILVUS_PYTHON"
	// requiredEnv turns a missing pythonEnv into a failure.
	requiredEnv = "MHP_MILVUS_REQUIRED"
)

// needMilvus skips the test (or fails it, when requiredEnv is set) unless
// a Python with the `milvus` package is configured.
func needMilvus(t *testing.T) string {
	t.Helper()
	py := os.Getenv(pythonEnv)
	if py == "" {
		msg := pythonEnv + " is not set: these tests need a Python with PyPI's milvus==2.3.5 (make test-milvus sets it)"
		if os.Getenv(requiredEnv) != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return py
}

// proc is a child process in its own process group, killed (the whole
// group, SIGKILL) by t.Cleanup, and by the kernel when the thread that
// started it dies (Pdeathsig), so a test binary killed on -timeout leaves
// nothing behind.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Stdout == nil {
		cmd.Stdout = f
	}
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the starting OS thread exits, not the process:
	// keep this goroutine on its thread while starting. The Go runtime
	// does not retire threads of goroutines that unlock them.
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			if b, err := os.ReadFile(f.Name()); err == nil && len(b) > 0 {
				t.Logf("%s log (last 3000 bytes):\n%s", name, tail(b, 3000))
			}
		}
		f.Close()
	})
	return p
}

// kill stops the process group with SIGKILL and waits for the leader.
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// milvusServer is one real Milvus standalone server.
type milvusServer struct {
	Addr    string // gRPC, 127.0.0.1:port
	Version string
	Metrics string // metrics and /healthz, 127.0.0.1:port
	Started time.Duration
	proc    *proc
}

// startMilvus starts a real Milvus with launch.py and waits until its
// /healthz answers OK.
func startMilvus(t *testing.T) *milvusServer {
	t.Helper()
	py := needMilvus(t)
	dir := t.TempDir()
	info := filepath.Join(dir, "info.json")
	t0 := time.Now()
	p := startProc(t, "milvus", exec.Command(py, "launch.py", "--dir", filepath.Join(dir, "milvus"), "--info", info))
	var inf struct {
		PID         int    `json:"pid"`
		Port        int    `json:"port"`
		MetricsPort int    `json:"metrics_port"`
		Version     string `json:"version"`
	}
	// The first start on a machine decompresses the binaries (~30 s).
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, err := os.ReadFile(info)
		if err == nil && json.Unmarshal(b, &inf) == nil && inf.Port != 0 {
			break
		}
		if p.exited() {
			t.Fatalf("launch.py exited before writing %s", info)
		}
		if time.Now().After(deadline) {
			t.Fatalf("launch.py wrote no %s in 3m", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := &milvusServer{
		Addr:    fmt.Sprintf("127.0.0.1:%d", inf.Port),
		Metrics: fmt.Sprintf("127.0.0.1:%d", inf.MetricsPort),
		Version: inf.Version,
		proc:    p,
	}
	health := "http://" + s.Metrics + "/healthz"
	deadline = time.Now().Add(2 * time.Minute)
	for !healthy(health) {
		if p.exited() {
			t.Fatalf("Milvus exited before it was healthy")
		}
		if time.Now().After(deadline) {
			t.Fatalf("Milvus not healthy at %s in 2m", health)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.Started = time.Since(t0)
	t.Logf("Milvus %s standalone healthy on %s after %v", s.Version, s.Addr, s.Started.Round(time.Millisecond))
	return s
}

func healthy(url string) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.Contains(string(b), "OK")
}

// listeningRE matches serve's first stdout line.
var listeningRE = regexp.MustCompile(`listening on (\S+) \(gRPC\), admin on (\S+)`)

// proxyServer is `milvus-ha-proxy serve` in its own process.
type proxyServer struct {
	Addr  string // gRPC
	Admin string // http://host:port
	proc  *proc
}

// startProxy runs `serve` with static discovery and leader as the only
// cluster (a real Milvus has no CDC: manual failover, nothing to switch
// to), and waits until /readyz answers 200.
func startProxy(t *testing.T, leader string) *proxyServer {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "proxy.yaml")
	yaml := strings.Join([]string{
		"listen: 127.0.0.1:0",
		"admin_listen: 127.0.0.1:0",
		"discovery: static",
		"clusters:",
		"  - id: a",
		"    uri: " + leader,
		"    role: leader",
		"failover:",
		"  mode: manual",
	}, "\n") + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "serve", "--config", cfg)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "serve", cmd)
	lines := make(chan string, 1)
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if listeningRE.MatchString(sc.Text()) {
				once.Do(func() { lines <- sc.Text() })
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	var line string
	select {
	case line = <-lines:
	case <-p.done:
		t.Fatal("serve exited before listening")
	case <-time.After(60 * time.Second):
		t.Fatal("serve printed no listening line in 60s")
	}
	m := listeningRE.FindStringSubmatch(line)
	s := &proxyServer{Addr: m[1], Admin: m[2], proc: p}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := waitReady(ctx, s.Admin+"/readyz"); err != nil {
		t.Fatalf("serve not ready: %v", err)
	}
	return s
}

func waitReady(ctx context.Context, url string) error {
	c := http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("not 200")
			}
			return fmt.Errorf("%s: %w (last: %v)", url, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
