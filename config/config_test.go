package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const minimal = `
discovery: static
clusters:
  - {id: a, uri: 127.0.0.1:19531, role: leader}
  - {id: b, uri: 127.0.0.1:19532, role: alternative}
`

func TestParseMinimalTakesDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Discovery = DiscoveryStatic
	want.Clusters = []Cluster{
		{ID: "a", URI: "127.0.0.1:19531", Role: RoleLeader},
		{ID: "b", URI: "127.0.0.1:19532", Role: RoleAlternative},
	}
	c.lines, want.lines = nil, nil
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got\n%s\nwant\n%s", c, want)
	}
	// The documented defaults (docs/config.md).
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "0.0.0.0:19530"},
		{"admin_listen", c.AdminListen, "127.0.0.1:9091"},
		{"admin_pprof", c.AdminPprof, false},
		{"read.leader_serves_reads", c.Read.LeaderServesReads, true},
		{"read.balance", c.Read.Balance, "p2c"},
		{"read.describe_failure_ttl", c.Read.DescribeFailureTTL.Std(), time.Second},
		{"consistency.bounded_staleness", c.Consistency.BoundedStaleness.Std(), 5 * time.Second},
		{"consistency.strong_reads", c.Consistency.StrongReads, StrongReadsLeader},
		{"consistency.max_wait", c.Consistency.MaxWait.Std(), time.Duration(0)},
		{"consistency.eventually_max_lag", c.Consistency.EventuallyMaxLag.Std(), time.Duration(0)},
		{"replication.poll_interval", c.Replication.PollInterval.Std(), 100 * time.Millisecond},
		{"failover.mode", c.Failover.Mode, FailoverAuto},
		{"failover.detect_after", c.Failover.DetectAfter.Std(), time.Second},
		{"failover.write_hold", c.Failover.WriteHold.Std(), 10 * time.Second},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
		{"runtime.gc_percent", c.Runtime.GCPercent, 400},
		{"runtime.memory_limit", c.Runtime.MemoryLimit, int64(0)},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if l := c.Leader(); l == nil || l.ID != "a" {
		t.Errorf("Leader() = %v, want a", l)
	}
	if c.Cluster("b") == nil || c.Cluster("zz") != nil {
		t.Errorf("Cluster lookup wrong")
	}
}

func TestParseEveryKey(t *testing.T) {
	dir := t.TempDir()
	pki := newPKI(t, dir)
	y := fmt.Sprintf(`
listen: 127.0.0.1:29530
admin_listen: 127.0.0.1:29091
discovery: replicate
clusters:
  - id: a
    uri: https://127.0.0.1:19531
    token: "root:Milvus"
    tls:
      ca_file: %[1]s
      cert_file: %[2]s
      key_file: %[3]s
      server_name: milvus-a
  - id: b
    uri: http://127.0.0.1:19532
    tls: {insecure_skip_verify: true}
    role: standby
tls:
  cert_file: %[2]s
  key_file: %[3]s
  client_ca_file: %[1]s
read: {leader_serves_reads: false, balance: p2c}
consistency: {bounded_staleness: 3s, strong_reads: wait, max_wait: 40ms, eventually_max_lag: 1m}
replication: {poll_interval: 50ms}
failover: {mode: manual, detect_after: 3s, write_hold: 0s}
health: {probe_interval: 1s, probe_timeout: 300ms}
drain: {grace_period: 5s}
arbiter: {}
telemetry: {otlp_endpoint: "collector:4317", service_name: edge, sample_ratio: 0.25}
log: {level: debug, format: json}
`, pki.caFile, pki.certFile, pki.keyFile)
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Cluster("a"), c.Cluster("b")
	if a.Token.Reveal() != "root:Milvus" || !a.Enabled() || a.Address() != "127.0.0.1:19531" {
		t.Errorf("cluster a = %#v, addr %q", a, a.Address())
	}
	if !b.Enabled() || b.Role != RoleStandby || b.Address() != "127.0.0.1:19532" {
		t.Errorf("cluster b = %#v", b)
	}
	if c.Consistency.MaxWait.Std() != 40*time.Millisecond || c.Consistency.EventuallyMaxLag.Std() != time.Minute ||
		c.Failover.Mode != FailoverManual || c.Telemetry.SampleRatio != 0.25 || c.Log.Format != "json" ||
		c.Health.ProbeTimeout.Std() != 300*time.Millisecond || c.Drain.GracePeriod.Std() != 5*time.Second ||
		c.Read.LeaderServesReads {
		t.Errorf("values not taken: %s", c)
	}
	ctls, err := a.TLSConfig()
	if err != nil || ctls == nil || ctls.RootCAs == nil || len(ctls.Certificates) != 1 || ctls.ServerName != "milvus-a" {
		t.Fatalf("cluster TLS = %+v, %v", ctls, err)
	}
	stls, err := c.TLS.Config()
	if err != nil || stls == nil || stls.ClientCAs == nil || len(stls.Certificates) != 1 {
		t.Fatalf("server TLS = %+v, %v", stls, err)
	}
}

// TestErrors is the contract that every bad config is refused with the key
// it is about.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	pki := newPKI(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	static := func(extra string) string { return minimal + extra }
	replicate := func(extra string) string {
		return "clusters:\n  - id: a\n    uri: 127.0.0.1:19531\n" + extra
	}
	tests := []struct {
		name, yaml string
		path       string // the key the first error must name
		msg        string // and a piece of its message
		line       int    // and its line, when not 0
	}{
		{"unknown top key", static("listn: :1\n"), "listn", "unknown key (did you mean listen?)", 6},
		{"unknown nested key", static("read:\n  leader_serve_reads: true\n"), "read.leader_serve_reads", "did you mean leader_serves_reads?", 7},
		{"unknown key lists known ones", static("failover:\n  zzzzzzz: 1\n"), "failover.zzzzzzz", "known keys: detect_after, mode, state_file, write_hold", 0},
		{"unknown cluster key", "clusters:\n  - {id: a, uri: 'h:1', tokn: x}\n", "clusters[0].tokn", "did you mean token?", 2},
		{"unknown tls key", "clusters:\n  - id: a\n    uri: h:1\n    tls: {ca: x}\n", "clusters[0].tls.ca", "unknown key", 4},
		{"key twice", static("listen: :1\nlisten: :2\n"), "listen", "key given twice (first on line 6)", 7},
		{"bad duration", static("consistency:\n  bounded_staleness: 5q\n"), "consistency.bounded_staleness", `invalid duration "5q"`, 7},
		{"bare number duration", static("replication: {poll_interval: 100}\n"), "replication.poll_interval", `invalid duration "100"`, 0},
		{"duration as mapping", static("failover: {detect_after: {s: 1}}\n"), "failover.detect_after", "want a duration", 0},
		{"negative duration", static("failover: {write_hold: -1s}\n"), "failover.write_hold", "must not be negative", 0},
		{"zero poll interval", static("replication: {poll_interval: 0s}\n"), "replication.poll_interval", "must be above 0", 0},
		{"zero detect_after", static("failover: {detect_after: 0s}\n"), "failover.detect_after", "must be above 0", 0},
		{"detect shorter than probes", static("failover: {detect_after: 100ms}\nhealth: {probe_interval: 1s}\n"), "failover.detect_after", "shorter than health.probe_interval", 0},
		{"zero probe timeout", static("health: {probe_timeout: 0s}\n"), "health.probe_timeout", "must be above 0", 0},
		{"negative grace", static("drain: {grace_period: -5s}\n"), "drain.grace_period", "must not be negative", 0},
		{"negative failure ttl", static("read: {describe_failure_ttl: -1s}\n"), "read.describe_failure_ttl", "must not be negative", 0},
		{"bool as string", static("read: {leader_serves_reads: yes}\n"), "read.leader_serves_reads", `want true or false, got "yes"`, 0},
		{"bad balance", static("read: {balance: rr}\n"), "read.balance", `unknown value "rr" (want p2c)`, 6},
		{"bad strong_reads", static("consistency: {strong_reads: follower}\n"), "consistency.strong_reads", "want leader or wait", 0},
		{"wait without max_wait", static("consistency: {strong_reads: wait}\n"), "consistency.max_wait", "must be above 0 with strong_reads: wait", 0},
		{"bad failover mode", static("failover: {mode: yolo}\n"), "failover.mode", "want auto or manual", 0},
		{"bad discovery", "discovery: dns\n" + "clusters: [{id: a, uri: 'h:1'}]\n", "discovery", "want replicate or static", 1},
		{"no clusters", "discovery: replicate\n", "clusters", "at least one cluster is required", 0},
		{"empty file", "", "clusters", "at least one cluster is required", 0},
		{"clusters not a list", "clusters: a\n", "clusters", "want a list", 1},
		{"missing id", "clusters:\n  - {uri: 'h:1'}\n", "clusters[0].id", "required", 2},
		{"bad id", "clusters:\n  - {id: 'a b', uri: 'h:1'}\n", "clusters[0].id", `invalid id "a b"`, 2},
		{"duplicate id", "discovery: static\nclusters:\n  - {id: a, uri: 'h:1', role: leader}\n  - {id: b, uri: 'h:2', role: alternative}\n  - {id: b, uri: 'h:3', role: alternative}\n",
			"clusters[2].id", `duplicate id "b" (also clusters[1])`, 5},
		{"missing uri", "clusters:\n  - {id: a}\n", "clusters[0].uri", "required", 0},
		{"uri without port", "clusters:\n  - {id: a, uri: 'http://h'}\n", "clusters[0].uri", "missing port", 0},
		{"uri bad scheme", "clusters:\n  - {id: a, uri: 'ftp://h:1'}\n", "clusters[0].uri", `unknown scheme "ftp"`, 0},
		{"uri not host:port", "clusters:\n  - {id: a, uri: 'justahost'}\n", "clusters[0].uri", "want host:port", 0},
		{"uri with path", "clusters:\n  - {id: a, uri: 'http://h:1/db'}\n", "clusters[0].uri", "a path is not supported", 0},
		{"duplicate address", "clusters:\n  - {id: a, uri: 'h:1'}\n  - {id: b, uri: 'http://h:1'}\n", "clusters[1].uri", "same address as clusters[0]", 0},
		{"static without leader", "discovery: static\nclusters:\n  - {id: a, uri: 'h:1', role: alternative}\n",
			"clusters", "static discovery needs exactly one cluster with role leader", 2},
		{"static two leaders", "discovery: static\nclusters:\n  - {id: a, uri: 'h:1', role: leader}\n  - {id: b, uri: 'h:2', role: leader}\n",
			"clusters[1].role", "static discovery needs exactly one cluster with role leader", 0},
		{"static missing role", "discovery: static\nclusters:\n  - {id: a, uri: 'h:1', role: leader}\n  - {id: b, uri: 'h:2'}\n",
			"clusters[1].role", "required with static discovery", 0},
		{"static bad role", "discovery: static\nclusters:\n  - {id: a, uri: 'h:1', role: leader}\n  - {id: b, uri: 'h:2', role: follower}\n",
			"clusters[1].role", `unknown value "follower"`, 0},
		{"replicate with leader role", "clusters:\n  - {id: a, uri: 'h:1', role: leader}\n", "clusters[0].role", "only for static discovery", 0},
		{"listen not host:port", static("listen: '19530'\n"), "listen", "is not host:port", 0},
		{"listen bad port", static("listen: 'h:99999'\n"), "listen", "port \"99999\" is not a number", 0},
		{"admin equals listen", static("listen: '127.0.0.1:1'\nadmin_listen: '127.0.0.1:1'\n"), "admin_listen", "same address as listen", 0},
		{"empty listen", static("listen: ''\n"), "listen", "required", 0},
		{"server key without cert", static("tls: {key_file: k.pem}\n"), "tls.cert_file", "required with key_file", 0},
		{"server cert without key", static(fmt.Sprintf("tls: {cert_file: %s}\n", pki.certFile)), "tls.key_file", "required with cert_file", 0},
		{"client ca without cert", static("tls: {client_ca_file: ca.pem}\n"), "tls.cert_file", "required with client_ca_file", 0},
		{"server cert missing file", static("tls: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\n"), "tls.cert_file", "no such file", 0},
		{"server client ca not PEM", static(fmt.Sprintf("tls: {cert_file: %s, key_file: %s, client_ca_file: %s}\n", pki.certFile, pki.keyFile, notPEM)),
			"tls.client_ca_file", "holds no PEM certificate", 0},
		{"cluster ca missing", replicate("") + "    tls: {ca_file: /nonexistent/ca.pem}\n", "clusters[0].tls.ca_file", "no such file", 0},
		{"cluster cert without key", replicate("") + fmt.Sprintf("    tls: {cert_file: %s}\n", pki.certFile), "clusters[0].tls.key_file", "required with cert_file", 0},
		{"cluster cert and key mismatch", replicate("") + fmt.Sprintf("    tls: {cert_file: %s, key_file: %s}\n", pki.certFile, pki.otherKeyFile),
			"clusters[0].tls.cert_file", "private key does not match", 0},
		{"cluster insecure with ca", replicate("") + fmt.Sprintf("    tls: {ca_file: %s, insecure_skip_verify: true}\n", pki.caFile),
			"clusters[0].tls.insecure_skip_verify", "conflicts with ca_file", 0},
		{"arbiter endpoints moved", replicate("arbiter: {endpoints: [etcd:2379]}\n"), "arbiter.endpoints", "moved to arbiter.etcd.endpoints", 0},
		{"etcd endpoint bad", replicate("arbiter: {etcd: {endpoints: ['etcd']}}\n"), "arbiter.etcd.endpoints[0]", "want host:port", 0},
		{"etcd endpoint scheme", replicate("arbiter: {etcd: {endpoints: ['unix://etcd:2379']}}\n"), "arbiter.etcd.endpoints[0]", `unknown scheme "unix"`, 0},
		{"etcd prefix relative", replicate("arbiter: {etcd: {endpoints: ['etcd:2379'], prefix: proxies}}\n"), "arbiter.etcd.prefix", "absolute key prefix", 0},
		{"etcd user without password", replicate("arbiter: {etcd: {endpoints: ['etcd:2379'], username: u}}\n"), "arbiter.etcd.password", "required with username", 0},
		{"etcd password without user", replicate("arbiter: {etcd: {endpoints: ['etcd:2379'], password: p}}\n"), "arbiter.etcd.username", "required with password", 0},
		{"etcd lease too short", replicate("arbiter: {etcd: {endpoints: ['etcd:2379'], lease_ttl: 1s}}\n"), "arbiter.etcd.lease_ttl", "below 2s", 0},
		{"etcd lease fractional", replicate("arbiter: {etcd: {endpoints: ['etcd:2379'], lease_ttl: 2500ms}}\n"), "arbiter.etcd.lease_ttl", "not whole seconds", 0},
		{"etcd tls cert without key", replicate(fmt.Sprintf("arbiter: {etcd: {endpoints: ['etcd:2379'], tls: {cert_file: %s}}}\n", pki.certFile)),
			"arbiter.etcd.tls.key_file", "required with cert_file", 0},
		{"proxy id bad", replicate("arbiter: {proxy_id: 'a b'}\n"), "arbiter.proxy_id", "want letters", 0},
		{"advertise bad", replicate("arbiter: {advertise_address: 'nohost'}\n"), "arbiter.advertise_address", "not host:port", 0},
		{"otlp bad scheme", replicate("telemetry: {otlp_endpoint: 'grpc://c:4317'}\n"), "telemetry.otlp_endpoint", `unknown scheme "grpc"`, 0},
		{"otlp no port", replicate("telemetry: {otlp_endpoint: 'https://c'}\n"), "telemetry.otlp_endpoint", "missing port", 0},
		{"sample ratio", replicate("telemetry: {sample_ratio: 2}\n"), "telemetry.sample_ratio", "outside 0..1", 0},
		{"sample ratio not a number", replicate("telemetry: {sample_ratio: lots}\n"), "telemetry.sample_ratio", "want a number", 0},
		{"empty service name", replicate("telemetry: {service_name: ''}\n"), "telemetry.service_name", "must not be empty", 0},
		{"bad log level", replicate("log: {level: loud}\n"), "log.level", "want debug, info, warn or error", 0},
		{"bad log format", replicate("log: {format: xml}\n"), "log.format", "want text or json", 0},
		{"section as scalar", replicate("read: fast\n"), "read", "want a mapping", 0},
		{"yaml syntax", "clusters: [\n", "", "did not find expected node content", 0},
		{"two documents", minimal + "---\nlisten: ':1'\n", "", "more than one YAML document", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", c)
			}
			var list Errors
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %v (%T) is not config.Errors", err, err)
			}
			first := list[0]
			if first.Path != tt.path || !strings.Contains(first.Msg, tt.msg) {
				t.Fatalf("first error = %q (path %q), want path %q and message containing %q", first, first.Path, tt.path, tt.msg)
			}
			if tt.line != 0 && first.Line != tt.line {
				t.Errorf("line = %d, want %d (%v)", first.Line, tt.line, first)
			}
			if tt.path != "" && !strings.HasPrefix(err.Error(), tt.path+": ") {
				t.Errorf("Error() = %q does not start with the key", err)
			}
			var one *Error
			if !errors.As(err, &one) || one != first {
				t.Errorf("errors.As(*Error) did not find the first error")
			}
		})
	}
}

// TestAnchorsAndMergeKeys: YAML anchors and merge keys work, and a key
// given next to a merge overrides the merged value.
func TestAnchorsAndMergeKeys(t *testing.T) {
	c, err := Parse([]byte(`
discovery: static
clusters:
  - &base
    id: a
    uri: 127.0.0.1:1
    token: shared
    role: alternative
  - <<: *base
    id: b
    uri: 127.0.0.1:2
    role: leader
`))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Cluster("b")
	if b.Token.Reveal() != "shared" || b.Role != RoleLeader || b.URI != "127.0.0.1:2" {
		t.Errorf("merged cluster = %+v (token %q)", b, b.Token.Reveal())
	}
	_, err = Parse([]byte("x: &d {bogus: 1}\n"))
	if err == nil || !strings.Contains(err.Error(), "x: unknown key") {
		t.Errorf("unknown anchored key: %v", err)
	}
}

func TestErrorsListsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`
discovery: static
clusters:
  - {id: a, uri: 'h:1', role: alternative}
  - {id: a, uri: 'h:2', role: alternative}
read: {balance: rr}
log: {format: xml}
`))
	var list Errors
	if !errors.As(err, &list) {
		t.Fatalf("err = %v", err)
	}
	var paths []string
	for _, e := range list {
		paths = append(paths, e.Path)
	}
	want := []string{"clusters[1].id", "clusters", "read.balance", "log.format"}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("paths = %q, want %q\n%v", paths, want, err)
	}
}

func TestValidateCodeBuiltConfig(t *testing.T) {
	c := Default()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "clusters: at least one cluster is required") {
		t.Fatalf("Validate(Default()) = %v", err)
	}
	c.Discovery = DiscoveryStatic
	c.Clusters = []Cluster{{ID: "a", URI: "127.0.0.1:1", Role: RoleLeader}, {ID: "b", URI: "127.0.0.1:2", Role: RoleAlternative}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	pki := newPKI(t, dir)
	// Relative TLS paths are relative to the config file, not the cwd.
	rel, _ := filepath.Rel(dir, pki.caFile)
	path := filepath.Join(dir, "proxy.yaml")
	write(t, path, "clusters:\n  - id: a\n    uri: h:1\n    tls: {ca_file: "+rel+"}\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Clusters[0].TLS.CAFile; got != pki.caFile {
		t.Errorf("ca_file = %q, want %q", got, pki.caFile)
	}

	bad := filepath.Join(dir, "bad.yaml")
	write(t, bad, minimal+"read:\n  leader_serve_reads: true\n")
	_, err = Load(bad)
	if err == nil || !strings.Contains(err.Error(), bad+": read.leader_serve_reads: unknown key (did you mean leader_serves_reads?) (line 7)") {
		t.Fatalf("Load(bad) = %v", err)
	}
	var list Errors
	if !errors.As(err, &list) {
		t.Errorf("Load error does not wrap Errors")
	}

	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestExamplesLoad(t *testing.T) {
	for _, name := range []string{"static.yaml", "replicate.yaml", "etcd-arbiter.yaml"} {
		t.Run(name, func(t *testing.T) {
			c, err := Load(filepath.Join("..", "examples", name))
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Clusters) < 2 {
				t.Errorf("example has %d clusters", len(c.Clusters))
			}
		})
	}
}

func TestResolvePath(t *testing.T) {
	t.Setenv(EnvConfig, "")
	if _, err := ResolvePath(""); err == nil || !strings.Contains(err.Error(), EnvConfig) {
		t.Errorf("ResolvePath with nothing = %v", err)
	}
	t.Setenv(EnvConfig, "/from/env.yaml")
	if p, _ := ResolvePath(""); p != "/from/env.yaml" {
		t.Errorf("env not used: %q", p)
	}
	if p, _ := ResolvePath("/from/flag.yaml"); p != "/from/flag.yaml" {
		t.Errorf("flag does not win: %q", p)
	}
}

// TestSecretNeverPrinted prints a config holding a token every way code in
// this repo might, and fails if the token shows.
func TestSecretNeverPrinted(t *testing.T) {
	const token = "root:S3cr3t-Pa55"
	c, err := Parse([]byte("clusters:\n  - {id: a, uri: 'h:1', token: '" + token + "'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Clusters[0].Token.Reveal() != token {
		t.Fatalf("Reveal() = %q", c.Clusters[0].Token.Reveal())
	}
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}), slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})} {
		l := slog.New(h)
		l.Debug("config", "cfg", c, "cluster", c.Clusters[0], "token", c.Clusters[0].Token)
		l.Debug("config", slog.Any("clusters", c.Clusters))
	}
	js, _ := json.Marshal(c)
	outs := map[string]string{
		"String": c.String(),
		"logs":   logs.String(),
		"json":   string(js),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		outs[verb] = fmt.Sprintf(verb, *c) + fmt.Sprintf(verb, c.Clusters[0]) + fmt.Sprintf(verb, c.Clusters[0].Token)
	}
	for how, out := range outs {
		if strings.Contains(out, token) || strings.Contains(out, "S3cr3t") ||
			strings.Contains(out, fmt.Sprintf("%x", token)) || strings.Contains(out, fmt.Sprintf("%X", token)) {
			t.Errorf("%s leaks the token: %s", how, out)
		}
	}
	if !strings.Contains(c.String(), "token: '[redacted]'") {
		t.Errorf("String() does not show that a token is set:\n%s", c)
	}
	if NewSecret("").String() != "" {
		t.Errorf("empty secret prints %q", NewSecret(""))
	}
}

func TestURIErrorsHidePasswords(t *testing.T) {
	for _, uri := range []string{"http://root:hunter2@h:1", "root:hunter2@h:1", "http://root:hunter2@h"} {
		_, err := Parse([]byte("clusters:\n  - {id: a, uri: '" + uri + "'}\n"))
		if err == nil {
			t.Fatalf("%s accepted", uri)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

// TestStringRoundTrips: what String prints loads back to the same config
// (tokens aside), so `serve --check` output is a valid config.
func TestStringRoundTrips(t *testing.T) {
	c, err := Load(filepath.Join("..", "examples", "replicate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse([]byte(c.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, c)
	}
	for i := range c.Clusters {
		c.Clusters[i].Token = back.Clusters[i].Token
	}
	c.lines, back.lines, c.baseDir = nil, nil, ""
	if !reflect.DeepEqual(c, back) {
		t.Fatalf("round trip differs:\n%s\nvs\n%s", c, back)
	}
}

func TestReferenceDocumentsEveryKey(t *testing.T) {
	ref := Reference()
	seen := map[string]bool{}
	for _, k := range ref {
		if k.Doc == "" {
			t.Errorf("key %s has no doc tag", k.Key)
		}
		if seen[k.Key] {
			t.Errorf("key %s listed twice", k.Key)
		}
		seen[k.Key] = true
	}
	for _, key := range []string{
		"listen", "admin_listen", "admin_pprof", "discovery", "clusters", "clusters[].id", "clusters[].uri", "clusters[].token",
		"clusters[].tls.ca_file", "clusters[].tls.cert_file", "clusters[].tls.key_file", "clusters[].tls.server_name",
		"clusters[].tls.insecure_skip_verify", "clusters[].role", "tls.cert_file", "tls.key_file", "tls.client_ca_file",
		"read.leader_serves_reads", "read.balance", "read.describe_failure_ttl", "consistency.bounded_staleness", "consistency.strong_reads",
		"consistency.max_wait", "consistency.eventually_max_lag", "replication.poll_interval", "failover.mode",
		"failover.detect_after", "failover.write_hold", "failover.state_file", "health.probe_interval", "health.probe_timeout",
		"drain.grace_period", "arbiter", "arbiter.etcd.endpoints", "arbiter.etcd.prefix", "arbiter.etcd.username",
		"arbiter.etcd.password", "arbiter.etcd.tls.ca_file", "arbiter.etcd.lease_ttl", "arbiter.proxy_id", "arbiter.advertise_address", "telemetry.otlp_endpoint", "telemetry.service_name",
		"telemetry.sample_ratio", "log.level", "log.format",
	} {
		if !seen[key] {
			t.Errorf("Reference misses %s", key)
		}
	}
	md := ReferenceMarkdown()
	for _, want := range []string{"| `consistency.bounded_staleness` | duration | `5s` |", "| `clusters[].token` | secret |  |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := json.Unmarshal([]byte(`"1m30s"`), &d); err != nil || d.Std() != 90*time.Second {
		t.Fatalf("d = %v, %v", d, err)
	}
	b, _ := json.Marshal(d)
	if string(b) != `"1m30s"` {
		t.Errorf("marshal = %s", b)
	}
	if err := json.Unmarshal([]byte(`"soon"`), &d); err == nil {
		t.Errorf("accepted soon")
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
