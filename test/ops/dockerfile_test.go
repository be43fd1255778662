package ops

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

const (
	dockerfilePath   = "../../Dockerfile"
	dockerignorePath = "../../.dockerignore"
	repoRoot         = "../.."
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
	line int
}

// parseDockerfile splits a Dockerfile into instructions. No docker daemon
// or linter is available here, so this is the check we can make: the
// grammar's line structure, and the instructions the image relies on.
func parseDockerfile(t *testing.T, text string) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // comments inside a continued instruction are dropped
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		full := cur.String()
		cur.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
	}
	if cur.Len() > 0 {
		t.Fatalf("Dockerfile ends inside a continued line")
	}
	return out
}

// execForm decodes an exec-form (JSON array) argument.
func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(in.args), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("line %d: %s %s: not an exec-form JSON array: %v", in.line, in.cmd, in.args, err)
	}
	return argv
}

// TestDockerfile checks the Dockerfile as far as can be done without
// docker: its structure (multi-stage, static build flags, distroless
// non-root final stage, ports, health check), and, by running the binary
// with the very arguments of its ENTRYPOINT and HEALTHCHECK, that those
// commands exist and behave as the image needs.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	ins := parseDockerfile(t, string(b))
	known := map[string]bool{"FROM": true, "ARG": true, "WORKDIR": true, "COPY": true, "RUN": true, "USER": true,
		"EXPOSE": true, "HEALTHCHECK": true, "ENTRYPOINT": true, "CMD": true, "ENV": true, "LABEL": true}
	var froms, runs []instruction
	byCmd := map[string][]instruction{}
	stages := map[string]bool{}
	for _, in := range ins {
		if !known[in.cmd] {
			t.Errorf("line %d: unknown instruction %q", in.line, in.cmd)
		}
		byCmd[in.cmd] = append(byCmd[in.cmd], in)
		switch in.cmd {
		case "FROM":
			froms = append(froms, in)
			if f := strings.Fields(in.args); len(f) >= 3 && strings.EqualFold(f[len(f)-2], "AS") {
				stages[f[len(f)-1]] = true
			}
		case "RUN":
			runs = append(runs, in)
		case "COPY":
			if m := regexp.MustCompile(`--from=(\S+)`).FindStringSubmatch(in.args); m != nil && !stages[m[1]] {
				t.Errorf("line %d: COPY --from=%s names no earlier stage", in.line, m[1])
			}
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, got %d FROM", len(froms))
	}
	// The builder's Go matches go.mod's.
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVer := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goVer == nil || !strings.Contains(string(b), "GO_VERSION="+string(goVer[1])) || !strings.Contains(froms[0].args, "golang:${GO_VERSION}") {
		t.Errorf("the builder stage should be golang:%s (go.mod), got FROM %s", goVer[1], froms[0].args)
	}
	build := ""
	for _, r := range runs {
		if strings.Contains(r.args, "go build") {
			build = r.args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`, "./cmd/milvus-ha-proxy"} {
		if !strings.Contains(build, want) {
			t.Errorf("the go build step lacks %s: %s", want, build)
		}
	}
	final := froms[len(froms)-1].args
	if !strings.HasPrefix(final, "gcr.io/distroless/static") || !strings.Contains(final, "nonroot") {
		t.Errorf("final stage %q: want distroless/static, nonroot", final)
	}
	users := byCmd["USER"]
	if len(users) == 0 || users[len(users)-1].line < froms[len(froms)-1].line {
		t.Errorf("the final stage sets no USER")
	} else if u := users[len(users)-1].args; u == "0" || strings.HasPrefix(u, "root") || strings.HasPrefix(u, "0:") {
		t.Errorf("the final stage runs as %s", u)
	}
	ports := map[string]bool{}
	for _, e := range byCmd["EXPOSE"] {
		for _, p := range strings.Fields(e.args) {
			ports[p] = true
		}
	}
	if !ports["19530"] || !ports["9091"] {
		t.Errorf("EXPOSE %v: want 19530 and 9091", ports)
	}
	if len(byCmd["HEALTHCHECK"]) != 1 || len(byCmd["ENTRYPOINT"]) != 1 {
		t.Fatalf("want one HEALTHCHECK and one ENTRYPOINT")
	}
	hc := byCmd["HEALTHCHECK"][0]
	_, hcCmd, ok := strings.Cut(hc.args, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK without CMD: %s", hc.args)
	}
	health := execForm(t, instruction{cmd: "HEALTHCHECK CMD", args: hcCmd, line: hc.line})
	entry := execForm(t, byCmd["ENTRYPOINT"][0])
	if entry[0] != "/milvus-ha-proxy" || health[0] != "/milvus-ha-proxy" {
		t.Errorf("ENTRYPOINT %v and HEALTHCHECK %v should run /milvus-ha-proxy", entry, health)
	}
	if !strings.Contains(strings.Join(health, " "), "127.0.0.1:9091") || !strings.Contains(strings.Join(entry, " "), "--admin-listen 0.0.0.0:9091") {
		t.Errorf("the health check must reach the admin port the entrypoint opens: %v vs %v", health, entry)
	}

	// .dockerignore keeps everything the build needs.
	ig, err := os.ReadFile(dockerignorePath)
	if err != nil {
		t.Fatal(err)
	}
	files, err := exec.Command("git", "-C", repoRoot, "ls-files", "*.go", "go.mod", "go.sum").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Fields(string(files)) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		for _, pat := range strings.Split(string(ig), "\n") {
			pat = strings.TrimPrefix(strings.TrimSpace(pat), "/")
			if pat == "" || strings.HasPrefix(pat, "#") {
				continue
			}
			if ignored(pat, f) {
				t.Errorf(".dockerignore pattern %q excludes %s, which the build needs", pat, f)
			}
		}
	}

	// The ENTRYPOINT's flags exist and the last occurrence wins: run it
	// with --check and a config of our own appended, as `docker run image
	// --config ... --check` would.
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.yaml", staticBase)
	args := append(append([]string{}, entry[1:]...), "--config", cfg, "--check")
	code, out, errOut := runBinary(t, bin, nil, args...)
	if code != 0 || !strings.Contains(out, "0.0.0.0:9091") || !strings.Contains(out, "0.0.0.0:19530") {
		t.Errorf("ENTRYPOINT args %v --check: exit %d, want 0 with the container's listen addresses\n%s%s", args, code, out, errOut)
	}

	// The HEALTHCHECK command: 0 while the admin API answers, 1 when not.
	sims := testenv.StartSims(t, testenv.Options{Clusters: 1})
	a := testenv.StartApp(t, replicateConfig(sims), app.Options{})
	hargs := replaceArg(health[1:], "127.0.0.1:9091", a.AdminAddr())
	if code, out, errOut := runBinary(t, bin, nil, hargs...); code != 0 {
		t.Errorf("health check %v against a running proxy: exit %d, want 0\n%s%s", hargs, code, out, errOut)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	hargs = replaceArg(health[1:], "127.0.0.1:9091", dead)
	if code, _, errOut := runBinary(t, bin, nil, hargs...); code != 1 {
		t.Errorf("health check %v with nothing listening: exit %d, want 1\n%s", hargs, code, errOut)
	}
}

func replaceArg(args []string, from, to string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, from, to)
	}
	return out
}

// ignored approximates .dockerignore matching (Go filepath.Match on the
// path and on each of its parent directories; ** matches any depth).
func ignored(pat, file string) bool {
	if strings.HasPrefix(pat, "**/") {
		rest := strings.TrimPrefix(pat, "**/")
		parts := strings.Split(file, "/")
		for i := range parts {
			if ignored(rest, strings.Join(parts[i:], "/")) {
				return true
			}
		}
		return false
	}
	parts := strings.Split(file, "/")
	for i := 1; i <= len(parts); i++ {
		if ok, _ := filepath.Match(pat, strings.Join(parts[:i], "/")); ok {
			return true
		}
	}
	return false
}
