package abuse

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/abuse/backend"
)

// envNoFile, set in the environment of a re-executed test binary, makes
// TestMain lower RLIMIT_NOFILE (soft and hard: Go raises the soft limit to
// the hard one at start-up) and exec the command in its arguments, so the
// proxy runs with a low fd limit in its own process without prlimit.
const envNoFile = "MHP_ABUSE_EXEC_NOFILE"

// TestMain runs the suite, or is the fd-limit wrapper (envNoFile).
func TestMain(m *testing.M) {
	if n := os.Getenv(envNoFile); n != "" {
		execWithNoFile(n)
	}
	code := m.Run()
	binDir.Lock()
	if binDir.path != "" {
		_ = os.RemoveAll(binDir.path)
	}
	binDir.Unlock()
	os.Exit(code)
}

// execWithNoFile lowers RLIMIT_NOFILE to n and execs os.Args[1:]; it never
// returns.
func execWithNoFile(n string) {
	lim, err := strconv.ParseUint(n, 10, 64)
	if err == nil {
		err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim, Max: lim})
	}
	if err == nil && len(os.Args) < 2 {
		err = fmt.Errorf("no command to run")
	}
	if err == nil {
		env := make([]string, 0, len(os.Environ()))
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, envNoFile+"=") {
				env = append(env, kv)
			}
		}
		err = syscall.Exec(os.Args[1], os.Args[1:], env)
	}
	fmt.Fprintf(os.Stderr, "%s=%s: %v\n", envNoFile, n, err)
	os.Exit(3)
}

// binDir is the temporary directory of the built binaries; TestMain
// removes it.
var binDir struct {
	sync.Mutex
	path string
}

// builds holds one build per package: each binary is built once per test
// process, without -race whatever the test's flags (they are the
// programs under test, not the test).
var builds sync.Map // package path -> func() (string, error)

// buildBinary builds the main package pkg into the temporary directory
// once and returns the binary's path.
func buildBinary(pkg string) (string, error) {
	f, _ := builds.LoadOrStore(pkg, sync.OnceValues(func() (string, error) {
		binDir.Lock()
		if binDir.path == "" {
			dir, err := os.MkdirTemp("", "milvus-ha-proxy-abuse-")
			if err != nil {
				binDir.Unlock()
				return "", err
			}
			binDir.path = dir
		}
		dir := binDir.path
		binDir.Unlock()
		out := filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", out, pkg)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, stderr.String())
		}
		return out, nil
	}))
	return f.(func() (string, error))()
}

const (
	proxyPkg   = "github.com/milvus-ha-proxy/milvus-ha-proxy/cmd/milvus-ha-proxy"
	backendPkg = "github.com/milvus-ha-proxy/milvus-ha-proxy/test/abuse/backend/abuse-backend"
)

// backendProc is the minimal Milvus (package backend) in a process of
// its own.
type backendProc struct {
	addr   string
	cmd    *exec.Cmd
	stdin  io.Closer // closing it stops the backend
	conn   *grpc.ClientConn
	exited chan struct{}
}

var backendRE = regexp.MustCompile(`abuse-backend listening on (\S+)`)

// startBackend starts a backend; the test's cleanup stops it.
func startBackend(t testing.TB) *backendProc {
	t.Helper()
	bin, err := buildBinary(backendPkg)
	if err != nil {
		t.Fatal(err)
	}
	b := &backendProc{exited: make(chan struct{})}
	b.cmd = exec.Command(bin)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logs := &syncBuffer{}
	b.cmd.Stderr = logs
	stdin, err := b.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.stdin = stdin
	stdout, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := backendRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		_ = b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(b.stop)
	select {
	case b.addr = <-addr:
	case <-b.exited:
		t.Fatalf("abuse-backend exited: %s\n%s", b.cmd.ProcessState, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("abuse-backend did not print its address\n%s", logs.String())
	}
	b.conn, err = grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stats reads the backend's counters (empty when it cannot).
func (b *backendProc) stats() backend.Stats {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var st backend.Stats
	r, err := milvuspb.NewMilvusServiceClient(b.conn).GetMetrics(ctx, &milvuspb.GetMetricsRequest{Request: backend.StatsRequest})
	if err == nil {
		_ = json.Unmarshal([]byte(r.GetResponse()), &st)
	}
	return st
}

// stop stops the backend and waits for it.
func (b *backendProc) stop() {
	if b.conn != nil {
		b.conn.Close()
	}
	b.stdin.Close()
	select {
	case <-b.exited:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
}

// target is the process under test: the proxy with one engine, or
// HAProxy, in front of the backend.
type target struct {
	name string // relay, grpc or haproxy
	addr string // where clients connect
	pid  int

	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	killed bool          // the harness killed it (the probe was over)
	logs   *syncBuffer   // its stderr (and HAProxy's stdout)
}

// alive reports whether the process is still running.
func (tg *target) alive() bool {
	select {
	case <-tg.exited:
		return false
	default:
		return true
	}
}

// exitStatus describes how the process ended ("" while it runs).
func (tg *target) exitStatus() string {
	if tg.alive() {
		return ""
	}
	return tg.cmd.ProcessState.String()
}

// tail returns the last n bytes of its logs.
func (tg *target) tail(n int) string {
	s := tg.logs.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

// targetOptions say how to start a target.
type targetOptions struct {
	nofile int  // RLIMIT_NOFILE of the process; 0: inherited
	long   bool // the long form's config
}

// startTarget starts engine ("relay", "grpc" or "haproxy") in front of
// backendAddr and waits until it serves; the test's cleanup kills it.
func startTarget(t testing.TB, engine, backendAddr string, o targetOptions) *target {
	t.Helper()
	dir := t.TempDir()
	tg := &target{name: engine, exited: make(chan struct{}), logs: &syncBuffer{}}
	var argv []string
	var stdout io.Reader
	if engine == "haproxy" {
		tg.addr = freeAddr(t)
		cfg := filepath.Join(dir, "haproxy.cfg")
		writeFile(t, cfg, haproxyConfig(tg.addr, backendAddr, o.long))
		argv = []string{haproxyPath, "-db", "-f", cfg}
	} else {
		bin, err := buildBinary(proxyPkg)
		if err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(dir, "proxy.yaml")
		writeFile(t, cfg, proxyConfig(engine, backendAddr, o.long))
		argv = []string{bin, "serve", "--config", cfg}
	}
	var cmd *exec.Cmd
	if o.nofile > 0 {
		cmd = exec.Command(os.Args[0], argv...)
		cmd.Env = append(os.Environ(), envNoFile+"="+strconv.Itoa(o.nofile))
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
	}
	// The target dies with the test process, even one killed by a
	// timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = tg.logs
	pr, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout = pr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tg.cmd, tg.pid = cmd, cmd.Process.Pid
	listening := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case listening <- m:
				default:
				}
			}
			_, _ = tg.logs.Write(append(sc.Bytes(), '\n'))
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(tg.exited)
	}()
	t.Cleanup(func() {
		if tg.alive() {
			_ = cmd.Process.Kill()
			<-tg.exited
		}
	})

	deadline := time.After(30 * time.Second)
	if engine != "haproxy" {
		select {
		case m := <-listening:
			tg.addr = m[1]
			waitReadyz(t, tg, m[2], deadline)
		case <-tg.exited:
			t.Fatalf("%s exited before listening: %s\n%s", engine, tg.exitStatus(), tg.tail(4000))
		case <-deadline:
			t.Fatalf("%s did not print its addresses within 30s\n%s", engine, tg.tail(4000))
		}
		return tg
	}
	for {
		if c, err := net.DialTimeout("tcp", tg.addr, time.Second); err == nil {
			c.Close()
			return tg
		}
		select {
		case <-tg.exited:
			t.Fatalf("haproxy exited: %s\n%s", tg.exitStatus(), tg.tail(4000))
		case <-deadline:
			t.Fatalf("haproxy does not listen on %s\n%s", tg.addr, tg.tail(4000))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var listeningRE = regexp.MustCompile(`listening on (\S+) \(gRPC\), admin on http://(\S+)`)

// waitReadyz polls the proxy's /readyz until it answers 200.
func waitReadyz(t testing.TB, tg *target, admin string, deadline <-chan time.Time) {
	t.Helper()
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-tg.exited:
			t.Fatalf("%s exited before it was ready: %s\n%s", tg.name, tg.exitStatus(), tg.tail(4000))
		case <-deadline:
			t.Fatalf("%s not ready within 30s (last: %v)\n%s", tg.name, err, tg.tail(4000))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// idleTimeout is how long a client connection without a call may stay
// open: the relay's relay.idle_timeout and HAProxy's timeout client. The
// short form's is short enough for its idle probe to see every idle
// connection closed; the long form's is what grpc-go closes them after.
func idleTimeout(long bool) time.Duration {
	if long {
		return 30 * time.Second
	}
	return 500 * time.Millisecond
}

// proxyConfig is the proxy's config: static discovery of the one backend,
// fast health probes, quiet logs, the relay's defaults but for its idle
// timeout.
func proxyConfig(engine, backendAddr string, long bool) string {
	return fmt.Sprintf(`listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
discovery: static
engine: %s
clusters:
  - {id: a, uri: "%s", role: leader}
health: {probe_interval: 100ms, probe_timeout: 1s}
drain: {grace_period: 1s}
log: {level: warn}
relay: {idle_timeout: %s}
`, engine, backendAddr, idleTimeout(long))
}

// haproxyPath is where Debian installs HAProxy.
const haproxyPath = "/usr/sbin/haproxy"

// haproxyConfig relays h2 (prior knowledge, as gRPC clients speak it) to
// the backend in h2, with HAProxy's defaults otherwise (maxconn derived
// from the fd limit) but for the client timeout (idleTimeout).
func haproxyConfig(listen, backendAddr string, long bool) string {
	return fmt.Sprintf(`defaults
    mode http
    timeout connect 5s
    timeout client %dms
    timeout server 60s
frontend grpc
    bind %s proto h2
    default_backend milvus
backend milvus
    server b1 %s proto h2
`, idleTimeout(long).Milliseconds(), listen, backendAddr)
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rssBytes reads VmRSS of pid from /proc.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// openFDs counts the open file descriptors of pid.
func openFDs(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rssSampler samples a process's RSS every interval.
type rssSampler struct {
	mu      sync.Mutex
	samples []rssSample
	stop    context.CancelFunc
	done    chan struct{}
}

type rssSample struct {
	at  time.Time
	rss int64
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &rssSampler{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			if v, err := rssBytes(pid); err == nil {
				s.mu.Lock()
				s.samples = append(s.samples, rssSample{time.Now(), v})
				s.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) close() { s.stop(); <-s.done }

// window returns the peak and the last sample in [from, to).
func (s *rssSampler) window(from, to time.Time) (peak, last int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.samples {
		if x.at.Before(from) || !x.at.Before(to) {
			continue
		}
		peak = max(peak, x.rss)
		last = x.rss
	}
	return peak, last
}
