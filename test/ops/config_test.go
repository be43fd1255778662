package ops

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runBinary runs the built binary to completion and returns its exit code,
// stdout and stderr. env entries are added to a copy of the environment
// without MILVUS_HA_PROXY_CONFIG.
func runBinary(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(environWithout("MILVUS_HA_PROXY_CONFIG"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, stdout.String(), stderr.String()
		case errors.As(err, &ee):
			return ee.ExitCode(), stdout.String(), stderr.String()
		default:
			t.Fatalf("running %v: %v", args, err)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not exit; stderr:\n%s", args, stderr.String())
	}
	return -1, "", ""
}

func environWithout(key string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

const staticBase = `listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
discovery: static
clusters:
  - {id: a, uri: "127.0.0.1:19531", role: leader, token: "root:SecretPassw0rd"}
  - {id: b, uri: "127.0.0.1:19532", role: alternative}
`

// TestServeBadConfigExits2NamingTheKey: the binary refuses each broken
// config with exit code 2 and a message naming the offending key, whether
// the file comes from --config or from $MILVUS_HA_PROXY_CONFIG.
func TestServeBadConfigExits2NamingTheKey(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	notPEM := writeFile(t, dir, "not.pem", "this is not a certificate\n")
	cases := []struct {
		name    string
		yaml    string
		flags   []string
		wantKey string
	}{
		{"unknown key with a suggestion", staticBase + "read:\n  leader_serve_reads: true\n", nil, "read.leader_serve_reads: unknown key (did you mean leader_serves_reads?)"},
		{"bad duration", staticBase + "consistency:\n  bounded_staleness: 5q\n", nil, "consistency.bounded_staleness"},
		{"bare number as duration", staticBase + "failover:\n  write_hold: 10\n", nil, "failover.write_hold"},
		{"duplicate id", "discovery: static\nclusters:\n  - {id: a, uri: 'h:1', role: leader}\n  - {id: a, uri: 'h:2', role: alternative}\n", nil, "clusters[1].id"},
		{"no leader in static mode", "discovery: static\nclusters:\n  - {id: a, uri: 'h:1', role: alternative}\n", nil, "clusters"},
		{"no clusters", "listen: 127.0.0.1:0\n", nil, "clusters: at least one cluster is required"},
		{"bad enum", staticBase + "consistency:\n  strong_reads: sometimes\n", nil, "consistency.strong_reads"},
		{"wait without max_wait", staticBase + "consistency:\n  strong_reads: wait\n", nil, "consistency.max_wait"},
		{"missing server certificate", staticBase + "tls:\n  cert_file: missing.pem\n  key_file: missing-key.pem\n", nil, "tls.cert_file"},
		{"cluster CA not PEM", strings.Replace(staticBase, "role: alternative}", "role: alternative, tls: {ca_file: "+notPEM+"}}", 1), nil, "clusters[1].tls.ca_file"},
		{"sample ratio out of range", staticBase + "telemetry:\n  sample_ratio: 2\n", nil, "telemetry.sample_ratio"},
		{"bad otlp endpoint", staticBase + "telemetry:\n  otlp_endpoint: 'ftp://collector:4317'\n", nil, "telemetry.otlp_endpoint"},
		{"arbiter not implemented", staticBase + "arbiter:\n  endpoints: [etcd:2379]\n", nil, "arbiter.endpoints"},
		{"bad log level in the file", staticBase + "log:\n  level: loud\n", nil, "log.level"},
		{"bad --log-level flag", staticBase, []string{"--log-level", "loud"}, "log.level"},
		{"bad --log-format flag", staticBase, []string{"--log-format", "xml"}, "log.format"},
		{"bad --listen flag", staticBase, []string{"--listen", "nonsense"}, "listen"},
		{"YAML syntax error", staticBase + "read: [\n", nil, "line"},
		{"wrong type", staticBase + "read:\n  leader_serves_reads: yes please\n", nil, "read.leader_serves_reads"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, "bad"+string(rune('a'+i))+".yaml", tc.yaml)
			for _, via := range []string{"flag", "env"} {
				args := []string{"serve"}
				var env []string
				if via == "flag" {
					args = append(args, "--config", path)
				} else {
					env = []string{"MILVUS_HA_PROXY_CONFIG=" + path}
				}
				args = append(args, tc.flags...)
				code, _, stderr := runBinary(t, bin, env, args...)
				if code != 2 {
					t.Fatalf("via %s: exit %d, want 2; stderr:\n%s", via, code, stderr)
				}
				if !strings.Contains(stderr, tc.wantKey) {
					t.Fatalf("via %s: stderr does not name %q:\n%s", via, tc.wantKey, stderr)
				}
				if strings.Contains(stderr, "SecretPassw0rd") {
					t.Fatalf("via %s: the error output shows the token:\n%s", via, stderr)
				}
			}
		})
	}
}

// TestServeUsageErrors: no config at all, a missing file, an unknown flag
// or a stray argument exit 2; a valid config whose port is taken is a
// runtime failure, exit 1.
func TestServeUsageErrors(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	code, _, stderr := runBinary(t, bin, nil, "serve")
	if code != 2 || !strings.Contains(stderr, "MILVUS_HA_PROXY_CONFIG") {
		t.Errorf("serve with no config: exit %d, want 2 naming MILVUS_HA_PROXY_CONFIG:\n%s", code, stderr)
	}
	if code, _, stderr := runBinary(t, bin, nil, "serve", "--config", filepath.Join(dir, "absent.yaml")); code != 2 || !strings.Contains(stderr, "absent.yaml") {
		t.Errorf("missing file: exit %d, want 2 naming the file:\n%s", code, stderr)
	}
	good := writeFile(t, dir, "good.yaml", staticBase)
	if code, _, stderr := runBinary(t, bin, nil, "serve", "--config", good, "--no-such-flag"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2:\n%s", code, stderr)
	}
	if code, _, stderr := runBinary(t, bin, nil, "serve", "--config", good, "extra"); code != 2 {
		t.Errorf("stray argument: exit %d, want 2:\n%s", code, stderr)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	code, _, stderr = runBinary(t, bin, nil, "serve", "--config", good, "--listen", lis.Addr().String())
	if code != 1 || !strings.Contains(stderr, lis.Addr().String()) {
		t.Errorf("port in use: exit %d, want 1 naming the address:\n%s", code, stderr)
	}
}

// TestServeCheck: --check validates, prints the effective config (the
// token redacted, defaults filled in, relative TLS paths resolved against
// the file's directory) and exits 0 without serving; with
// $MILVUS_HA_PROXY_CONFIG too.
func TestServeCheck(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	pki := newPKI(t, dir)
	yaml := staticBase + "tls:\n  cert_file: server.pem\n  key_file: server-key.pem\n"
	if err := os.Rename(pki.serverCert, filepath.Join(dir, "server.pem")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(pki.serverKey, filepath.Join(dir, "server-key.pem")); err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, dir, "proxy.yaml", yaml)
	for _, via := range []string{"flag", "env"} {
		args := []string{"serve", "--check"}
		var env []string
		if via == "flag" {
			args = append(args, "--config", path)
		} else {
			env = []string{"MILVUS_HA_PROXY_CONFIG=" + path}
		}
		// Run from elsewhere: the TLS paths are relative to the file.
		code, stdout, stderr := runBinary(t, bin, env, args...)
		if code != 0 {
			t.Fatalf("via %s: --check exit %d, want 0:\n%s", via, code, stderr)
		}
		for _, want := range []string{path + ": ok", "bounded_staleness: 5s", "grace_period: 20s", filepath.Join(dir, "server.pem"), "[redacted]"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("via %s: --check output lacks %q:\n%s", via, want, stdout)
			}
		}
		if strings.Contains(stdout+stderr, "SecretPassw0rd") {
			t.Errorf("via %s: --check shows the token:\n%s", via, stdout)
		}
		if strings.Contains(stdout, "listening on") {
			t.Errorf("via %s: --check started serving:\n%s", via, stdout)
		}
	}
}
