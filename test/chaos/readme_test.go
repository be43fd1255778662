package chaos_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeBlocks returns the ```sh blocks of the README section with the
// given heading.
func readmeBlocks(t *testing.T, heading string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n"+heading+"\n")
	if start < 0 {
		t.Fatalf("README.md has no %q section", heading)
	}
	section := text[start+1:]
	if end := strings.Index(section[len(heading):], "\n## "); end >= 0 {
		section = section[:len(heading)+end]
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, m[1])
	}
	if len(blocks) == 0 {
		t.Fatalf("README %q has no sh blocks", heading)
	}
	return blocks
}

// TestReadmeTryAFailover runs the README's "Try a failover" commands, as
// written, against the built binary's demo. The demo listens on ports
// chosen at run time; the commands' default addresses are rewritten to
// them, and `go run ./cmd/milvus-ha-proxy` to the built binary.
func TestReadmeTryAFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo and a 12 s benchmark")
	}
	blocks := readmeBlocks(t, "## Try a failover")
	demo := newProc(t, "demo", filepath.Join(t.TempDir(), "demo.log"))
	got, err := demo.Start([]string{"demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "warn"},
		"milvus-ha-proxy listening on ")
	if err != nil {
		t.Fatal(err)
	}
	defer demo.Signal(syscall.SIGTERM)
	grpcAddr, adminAddr, ok := strings.Cut(got[0], " (gRPC), admin on http://")
	if !ok {
		t.Fatalf("demo announced %q", got[0])
	}
	rewrite := strings.NewReplacer(
		"127.0.0.1:19530", grpcAddr,
		"127.0.0.1:9091", adminAddr,
		"go run ./cmd/milvus-ha-proxy status", binary+" status --admin http://"+adminAddr,
		"go run ./cmd/milvus-ha-proxy switchover", binary+" switchover --admin http://"+adminAddr,
		"go run ./cmd/milvus-ha-proxy failover", binary+" failover --admin http://"+adminAddr,
		"go run ./cmd/milvus-ha-proxy attach", binary+" attach --admin http://"+adminAddr,
		"go run ./cmd/milvus-ha-proxy", binary,
	)
	// What each block must print, besides exiting 0: what the README
	// says the reader will see.
	want := [][]string{
		{"leader change at", ": a -> "},
		{"a is down", "a is QUARANTINED", "never replicated"},
		{"crash, data wiped", "attach done: a is a replication target of"},
	}
	if len(blocks) != len(want) {
		t.Fatalf("README \"Try a failover\" has %d sh blocks; the test knows what %d of them print", len(blocks), len(want))
	}
	for i, block := range blocks {
		script := rewrite.Replace(block)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("README \"Try a failover\" block %d failed: %v\n--- script\n%s\n--- output\n%s", i+1, err, script, out)
		}
		if i == 0 {
			if msg := onlyUnknownOutcomes(string(out)); msg != "" {
				t.Errorf("README \"Try a failover\" block 1: %s\n--- output\n%s", msg, out)
			}
		}
		for _, w := range want[i] {
			if !strings.Contains(string(out), w) {
				t.Errorf("README \"Try a failover\" block %d: output lacks %q\n--- output\n%s", i+1, w, out)
			}
		}
	}
}

// onlyUnknownOutcomes checks a bench report for what the README promises
// during the crash: no errors, or only writes in flight at the crash whose
// outcome is unknown. It returns what is wrong, or "".
func onlyUnknownOutcomes(report string) string {
	if strings.Contains(report, "errors: none") {
		return ""
	}
	lines := strings.Split(report, "\n")
	for i, l := range lines {
		if !strings.Contains(l, "errors by code:") {
			continue
		}
		n := 0
		for _, e := range lines[i+1:] {
			if !strings.HasPrefix(e, "    ") {
				break
			}
			if !strings.Contains(e, "outcome unknown") {
				return "an error other than an unknown outcome: " + strings.TrimSpace(e)
			}
			n++
		}
		if n == 0 {
			return "errors counted but not listed"
		}
		return ""
	}
	return `neither "errors: none" nor an "errors by code" list`
}

func TestOnlyUnknownOutcomes(t *testing.T) {
	for _, tc := range []struct {
		report string
		ok     bool
	}{
		{"x:\n  errors: none\n  reads per cluster: a 1", true},
		{"x:\n  errors by code: milvus:65535=1\n    milvus:65535: milvus-ha-proxy: Insert outcome unknown: it was sent\n  reads per cluster: a 1", true},
		{"x:\n  errors by code: Unavailable=2\n    Unavailable: no leader\n  reads", false},
		{"x:\n  errors by code: Unavailable=2\n  reads", false},
		{"nothing", false},
	} {
		if got := onlyUnknownOutcomes(tc.report) == ""; got != tc.ok {
			t.Errorf("onlyUnknownOutcomes(%q) ok=%v, want %v", tc.report, got, tc.ok)
		}
	}
}
