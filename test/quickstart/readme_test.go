package quickstart

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
)

// readmeAddr is the address the README's examples connect to: demo's
// default. The test's demo listens on a free port, and that address is
// the only thing changed in a snippet.
const readmeAddr = "127.0.0.1:19530"

// connectSnippets returns the README's "## Connect" code blocks by
// language.
func connectSnippets(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Connect\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Connect" section`)
	}
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	if !strings.Contains(section, "no\nauthentication") && !strings.Contains(section, "no authentication") {
		t.Error(`README "## Connect" does not say that the demo has no authentication`)
	}
	out := map[string]string{}
	for _, m := range regexp.MustCompile("(?s)```(\\w+)\n(.*?)```").FindAllStringSubmatch(section, -1) {
		if _, dup := out[m[1]]; dup {
			t.Fatalf("README \"## Connect\" has two %s blocks; the test runs one of each", m[1])
		}
		out[m[1]] = m[2]
	}
	for _, lang := range []string{"python", "go", "javascript"} {
		s, ok := out[lang]
		if !ok {
			t.Fatalf("README \"## Connect\" has no %s example", lang)
		}
		if !strings.Contains(s, readmeAddr) {
			t.Fatalf("the %s example does not connect to %s (demo's default address)", lang, readmeAddr)
		}
	}
	return out
}

// TestReadmeConnectExamples runs the README's Python, Go and Node connect
// examples, as written, against a fresh demo: each creates a collection,
// inserts 1000 random rows and searches for row 7's vector at Session
// consistency, so row 7 must come first (the client reads its own
// writes). The examples run twice: the second run finds the collection
// of the first.
func TestReadmeConnectExamples(t *testing.T) {
	snippets := connectSnippets(t)
	d := startDemo(t)
	root := repoRoot(t)

	t.Run("python", func(t *testing.T) {
		py := pythonWithPymilvus(t, root)
		src := filepath.Join(t.TempDir(), "connect.py")
		if err := os.WriteFile(src, []byte(strings.ReplaceAll(snippets["python"], readmeAddr, d.addr)), 0o644); err != nil {
			t.Fatal(err)
		}
		for run := 1; run <= 2; run++ {
			out := runExample(t, d, exec.Command(py, src))
			if !regexp.MustCompile(`(?m)^\[7, \d+, \d+\]$`).MatchString(out) {
				t.Fatalf("run %d: want [7, x, y] (row 7 first, 3 hits), got:\n%s", run, out)
			}
		}
	})

	t.Run("node", func(t *testing.T) {
		modules := filepath.Join(root, "test", "sdk", "node", "node_modules")
		if _, err := os.Stat(filepath.Join(modules, "@zilliz", "milvus2-sdk-node")); err != nil {
			skipOrFail(t, "no Node SDK in %s (make sdk-deps installs it)", modules)
		}
		node, err := exec.LookPath("node")
		if err != nil {
			skipOrFail(t, "node not installed")
		}
		src := filepath.Join(t.TempDir(), "connect.js")
		if err := os.WriteFile(src, []byte(strings.ReplaceAll(snippets["javascript"], readmeAddr, d.addr)), 0o644); err != nil {
			t.Fatal(err)
		}
		for run := 1; run <= 2; run++ {
			cmd := exec.Command(node, src)
			cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
			out := runExample(t, d, cmd)
			if !regexp.MustCompile(`(?m)^\[ '7', '\d+', '\d+' \]$`).MatchString(out) {
				t.Fatalf("run %d: want [ '7', 'x', 'y' ] (row 7 first, 3 hits), got:\n%s", run, out)
			}
		}
	})

	t.Run("go", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "main.go")
		if err := os.WriteFile(src, []byte(strings.ReplaceAll(snippets["go"], readmeAddr, d.addr)), 0o644); err != nil {
			t.Fatal(err)
		}
		// Built inside this module, so it uses the SDK version go.mod pins.
		bin := filepath.Join(dir, "connect")
		build := exec.Command("go", "build", "-o", bin, src)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("the README's Go example does not build: %v\n%s", err, out)
		}
		for run := 1; run <= 2; run++ {
			out := runExample(t, d, exec.Command(bin))
			if !regexp.MustCompile(`^7\n\d+\n\d+\n$`).MatchString(out) {
				t.Fatalf("run %d: want 7 and two more ids, one a line, got:\n%s", run, out)
			}
		}
	})
}

// pythonWithPymilvus finds the test venv's Python ($PYTHON, else .venv in
// the repository, as `make test` creates it) and checks it has pymilvus.
func pythonWithPymilvus(t *testing.T, root string) string {
	t.Helper()
	py := os.Getenv("PYTHON")
	if py == "" {
		py = filepath.Join(root, ".venv", "bin", "python")
	}
	if _, err := os.Stat(py); err != nil {
		skipOrFail(t, "no Python venv at %s (make sdk-deps creates it)", py)
	}
	if out, err := exec.Command(py, "-c", "import pymilvus").CombinedOutput(); err != nil {
		skipOrFail(t, "%s cannot import pymilvus: %v\n%s", py, err, out)
	}
	return py
}

// runExample runs one example with a deadline and returns its stdout; a
// failure shows its stderr and the demo's log.
func runExample(t *testing.T, d *demo, cmd *exec.Cmd) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.Env = cmd.Env
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s\ndemo log:\n%s", cmd.Path, err, out, stderr.String(), d.log())
	}
	return string(out)
}

// setupCommands returns the README's "## Set up" command block that drives
// a demo (the one with the fault controls), one command a line.
func setupCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Set up\n")
	end := strings.Index(text, "\n## Connect\n")
	if start < 0 || end < start {
		t.Fatal(`README.md lacks "## Set up" followed by "## Connect"`)
	}
	for _, block := range regexp.MustCompile(`(?m)(?:^    \S.*\n)+`).FindAllString(text[start:end], -1) {
		if !strings.Contains(block, "/sim/") {
			continue
		}
		var cmds []string
		for _, l := range strings.Split(strings.TrimRight(block, "\n"), "\n") {
			cmds = append(cmds, strings.TrimSpace(l))
		}
		return cmds
	}
	t.Fatal(`README "## Set up" has no command block with the /sim/ fault controls`)
	return nil
}

// TestReadmeSetupCommands runs the README's demo commands in their order
// against a fresh demo, as a user would type them: every one must
// succeed (curl with --fail), and the story they tell must happen — a
// leads, the switchover makes b leader, crashing b fails over to another
// cluster, and the last status reports the salvage. Between commands the
// test waits only where a user would watch: for the failover after a
// crash and for the cluster to be back after a restart.
func TestReadmeSetupCommands(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		skipOrFail(t, "curl not installed")
	}
	cmds := setupCommands(t)
	d := startDemo(t)
	bin := binary(t)
	var outputs []string
	for i, line := range cmds {
		sh := strings.ReplaceAll(line, "go run ./cmd/milvus-ha-proxy", bin)
		sh = strings.ReplaceAll(sh, "127.0.0.1:9091", d.admin)
		sh = strings.ReplaceAll(sh, "curl ", "curl --fail --silent --show-error --max-time 60 ")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, "sh", "-c", sh)
		cmd.Env = append(os.Environ(), "MILVUS_HA_PROXY_ADMIN=http://"+d.admin)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("README command %d %q failed: %v\n%s\ndemo log:\n%s", i+1, line, err, out, tail(d.log(), 4000))
		}
		outputs = append(outputs, string(out))
		if m := regexp.MustCompile(`/sim/(\w+)/crash`).FindStringSubmatch(line); m != nil {
			waitTopology(t, d, "a leader other than the crashed "+m[1], func(v topologyView) bool { return v.Leader != "" && v.Leader != m[1] })
		}
		if m := regexp.MustCompile(`/sim/(\w+)/restart`).FindStringSubmatch(line); m != nil {
			waitTopology(t, d, m[1]+" healthy again", func(v topologyView) bool {
				for _, c := range v.Clusters {
					if c.ID == m[1] {
						return c.Healthy
					}
				}
				return false
			})
		}
	}
	first, last := outputs[0], outputs[len(outputs)-1]
	if !strings.HasPrefix(first, "leader a |") {
		t.Errorf("first status does not show a leading:\n%s", first)
	}
	for i, line := range cmds {
		if strings.Contains(line, "switchover --to b") && !strings.Contains(outputs[i], "leader is now b") {
			t.Errorf("switchover output:\n%s", outputs[i])
		}
	}
	if strings.HasPrefix(last, "leader b |") || !strings.Contains(last, "salvage (epoch") {
		t.Errorf("last status does not show the failover away from b and its salvage:\n%s", last)
	}
}

// topologyView is the part of /api/v1/topology the README test watches.
type topologyView struct {
	Leader   string `json:"leader"`
	Clusters []struct {
		ID      string `json:"id"`
		Healthy bool   `json:"healthy"`
	} `json:"clusters"`
}

func waitTopology(t *testing.T, d *demo, what string, ok func(topologyView) bool) {
	t.Helper()
	var last string
	testutil.EventuallyOr(t, 60*time.Second, what, func() bool {
		code, body := get(t, "http://"+d.admin+"/api/v1/topology")
		last = fmt.Sprintf("%d %s", code, body)
		var v topologyView
		return code == 200 && json.Unmarshal([]byte(body), &v) == nil && ok(v)
	}, func() string { return last + "\ndemo log:\n" + tail(d.log(), 4000) })
}
