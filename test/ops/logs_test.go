package ops

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

const (
	user     = "root"
	password = "SecretPassw0rd"
	token    = user + ":" + password
	wrongPwd = "WrongPassw0rd"
)

// forbidden are the forms a credential could leak in: the password, the
// token, the authorization header values the SDKs send (base64 of the
// token, with and without "Bearer "), and a wrong password a client tried.
func forbidden() []string {
	b64 := base64.StdEncoding.EncodeToString([]byte(token))
	return []string{
		password, token, b64, strings.TrimRight(b64, "="),
		base64.StdEncoding.EncodeToString([]byte(password)),
		base64.RawURLEncoding.EncodeToString([]byte(token)),
		wrongPwd, base64.StdEncoding.EncodeToString([]byte(user + ":" + wrongPwd)),
	}
}

func assertNoCredential(t *testing.T, what, logs string) {
	t.Helper()
	for _, f := range forbidden() {
		if i := strings.Index(logs, f); i >= 0 {
			lo, hi := max(0, i-200), min(len(logs), i+len(f)+100)
			t.Errorf("%s contains the credential form %q:\n...%s...", what, f, logs[lo:hi])
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the proxy's goroutines to write to
// while the test reads it.
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

func authSims(t *testing.T, n int) []*sim.Cluster {
	return testenv.StartSims(t, testenv.Options{Clusters: n, Sim: func(o *sim.Options) { o.Users = map[string]string{user: password} }})
}

// credentialTraffic drives the proxy at addr with clients that
// authenticate by user/password and by token, one with a wrong password,
// and every consistency level.
func credentialTraffic(t *testing.T, addr string) {
	t.Helper()
	c := testenv.Connect(t, addr, &milvusclient.ClientConfig{Username: user, Password: password})
	testenv.MakeCollection(t, c, "secrets")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := testenv.Insert(ctx, c, "secrets", 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []entity.ConsistencyLevel{entity.ClStrong, entity.ClSession, entity.ClBounded, entity.ClEventually} {
		if err := testenv.Search(ctx, c, "secrets", 1, cl); err != nil {
			t.Fatalf("search %v: %v", cl, err)
		}
	}
	k := testenv.Connect(t, addr, &milvusclient.ClientConfig{APIKey: token})
	if _, err := k.ListCollections(ctx, milvusclient.NewListCollectionOption()); err != nil {
		t.Fatalf("client with a token: %v", err)
	}
	// A wrong password: the cluster refuses it through the proxy.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	w, err := milvusclient.New(wctx, &milvusclient.ClientConfig{Address: addr, Username: user, Password: wrongPwd})
	if err == nil {
		_, err = w.ListCollections(wctx, milvusclient.NewListCollectionOption())
		_ = w.Close(ctx)
	}
	if err == nil {
		t.Fatalf("a client with a wrong password got through")
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unauthenticated && !strings.Contains(err.Error(), "auth") {
		t.Logf("wrong password refused with %v", err)
	}
}

// TestLogsCarryNoCredential runs the proxy at debug level with JSON logs
// into a buffer, in front of clusters that require auth, with the proxy's
// own token and clients that authenticate both ways (one with a wrong
// password), then makes a cluster fail so that health, breaker and error
// paths log too. No form of any credential may appear.
func TestLogsCarryNoCredential(t *testing.T) {
	sims := authSims(t, 3)
	var buf syncBuffer
	logger, err := telemetry.NewLogger(&buf, "debug", "json")
	if err != nil {
		t.Fatal(err)
	}
	cfg := replicateConfig(sims)
	for i := range cfg.Clusters {
		cfg.Clusters[i].Token = config.NewSecret(token)
	}
	cfg.Failover.Mode = config.FailoverManual
	a := testenv.StartApp(t, cfg, app.Options{Logger: logger})
	testenv.WaitReady(t, a.AdminAddr(), 2)
	// What the proxy logs of its own config at debug level.
	logger.Debug("effective config", "config", cfg.String(), "clusters", cfg.Clusters)

	credentialTraffic(t, a.Addr())
	sims[2].Crash()
	testutil.EventuallyWhy(t, 10*time.Second, "c reported down", func() (bool, string) {
		for _, c := range testenv.Topology(t, a.AdminAddr()).Clusters {
			if c.ID == "c" {
				return !c.Healthy, c.HealthReason
			}
		}
		return false, "no c"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	logs := buf.String()
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	if len(lines) < 3 || !strings.Contains(logs, `"level":"DEBUG"`) || !strings.Contains(logs, "cluster health changed") {
		t.Fatalf("the captured log is not the debug log it should be (%d lines):\n%s", len(lines), logs)
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Errorf("not a JSON line: %s", l)
		}
	}
	assertNoCredential(t, "the debug log", logs)
	t.Logf("%d log lines checked", len(lines))
}

// TestServeLogsCarryNoCredential: the binary at --log-level debug
// --log-format json, with the token in its config and an OTLP collector
// that is down, serving authenticated clients and then stopped by SIGINT:
// its stderr has only JSON lines and no credential; its --check output
// and its config errors carry none either.
func TestServeLogsCarryNoCredential(t *testing.T) {
	bin := buildBinary(t)
	sims := authSims(t, 2)
	dir := t.TempDir()
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
clusters:
  - {id: a, uri: "%s", token: "%s"}
  - {id: b, uri: "%s", token: "%s"}
health: {probe_interval: 50ms}
replication: {poll_interval: 50ms}
telemetry:
  otlp_endpoint: 127.0.0.1:1
drain: {grace_period: 5s}
`, sims[0].Addr(), token, sims[1].Addr(), token)
	path := writeFile(t, dir, "proxy.yaml", yaml)

	cmd, grpcAddr, adminAddr, stderr := startServe(t, bin, nil, "--config", path, "--log-level", "debug", "--log-format", "json")
	testenv.WaitReady(t, adminAddr, 1)
	credentialTraffic(t, grpcAddr)
	// SIGINT (Ctrl-C) drains like SIGTERM and exits 0.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGINT: %v, want exit 0\n%s", err, stderr())
	}
	logs := stderr()
	assertNoCredential(t, "serve's stderr", logs)
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("serve --log-format json wrote a line that is not JSON: %s", l)
		}
	}

	code, out, errOut := runBinary(t, bin, nil, "serve", "--config", path, "--check")
	if code != 0 {
		t.Fatalf("--check: exit %d\n%s", code, errOut)
	}
	assertNoCredential(t, "serve --check", out+errOut)

	// Credentials put where they do not belong (user-info in uris) are
	// refused without being echoed.
	bad := writeFile(t, dir, "bad.yaml", fmt.Sprintf(`discovery: static
clusters:
  - {id: a, uri: "http://%[1]s@127.0.0.1:19531", role: leader}
  - {id: b, uri: "%[1]s@127.0.0.1:19532", role: alternative}
  - {id: c, uri: "http://%[1]s@[::1", role: alternative}
telemetry:
  otlp_endpoint: "https://%[1]s@collector"
`, token))
	code, out, errOut = runBinary(t, bin, nil, "serve", "--config", bad)
	if code != 2 {
		t.Fatalf("config with credentials in uris: exit %d, want 2\n%s", code, errOut)
	}
	assertNoCredential(t, "serve's config errors", out+errOut)
}
