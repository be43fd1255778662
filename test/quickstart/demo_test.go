// Package quickstart tests the first hour of a new user: the README's
// connect examples, extracted from README.md as they are written, run
// against a `milvus-ha-proxy demo` the test starts from the built binary,
// and the admin port's status page opened in a headless browser.
package quickstart

import (
	"bufio"
	"context"
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

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
)

// requireEnv makes a missing Python venv or browser a failure instead of a
// skip (CI, where `make test` installs them).
const requireEnv = "MHP_QUICKSTART_REQUIRE"

// repoRoot is the repository's top directory (this file is in
// test/quickstart).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test's source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// skipOrFail skips with the reason, or fails when requireEnv is set.
func skipOrFail(t *testing.T, format string, a ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, a...)
	if os.Getenv(requireEnv) == "1" {
		t.Fatalf("%s (%s=1: required)", msg, requireEnv)
	}
	t.Skipf("%s (set %s=1 to make this a failure)", msg, requireEnv)
}

var built struct {
	once sync.Once
	path string
	err  error
}

// binary builds cmd/milvus-ha-proxy once per test process; the robustness
// of what a user runs is tested on the binary, in its own process.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "quickstart-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "milvus-ha-proxy")
		cmd := exec.Command("go", "build", "-o", built.path, "./cmd/milvus-ha-proxy")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build ./cmd/milvus-ha-proxy: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.path != "" {
		os.RemoveAll(filepath.Dir(built.path))
	}
	os.Exit(code)
}

// demo is a running `milvus-ha-proxy demo` process.
type demo struct {
	addr, admin string // host:port of the gRPC and admin listeners
	log         func() string
}

var listeningRE = regexp.MustCompile(`^milvus-ha-proxy listening on (\S+) \(gRPC\), admin on http://(\S+)$`)

// startDemo runs the binary's demo on ports picked by the kernel, waits
// until /readyz says 200 and every alternative is healthy, and stops it
// (SIGINT, then SIGKILL) when the test ends.
func startDemo(t *testing.T, args ...string) *demo {
	t.Helper()
	bin := binary(t)
	cmd := exec.Command(bin, append([]string{"demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "warn"}, args...)...)
	var mu sync.Mutex
	var logs strings.Builder
	cmd.Stderr = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) })
	d := &demo{log: func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case m := <-found:
		d.addr, d.admin = m[1], m[2]
	case <-exited:
		t.Fatalf("demo exited before listening\n%s", d.log())
	case <-time.After(60 * time.Second):
		t.Fatalf("demo did not print its addresses in 60s\n%s", d.log())
	}
	var last string
	testutil.EventuallyOr(t, 60*time.Second, "the demo ready", func() bool {
		code, body := get(t, "http://"+d.admin+"/readyz")
		last = fmt.Sprintf("%d %s", code, body)
		return code == http.StatusOK
	}, func() string { return last + "\n" + d.log() })
	return d
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
