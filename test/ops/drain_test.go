package ops

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

const slowSearch = 300 * time.Millisecond

// slowSims are a leader and an alternative whose searches take at least
// slowSearch, with a loaded collection "drain".
func slowSims(t *testing.T) []*sim.Cluster {
	t.Helper()
	return testenv.StartSims(t, testenv.Options{Clusters: 2, Sim: func(o *sim.Options) { o.SearchMinLatency = slowSearch }})
}

// load fires n concurrent searches (half Strong, half Eventually) through
// c and reports each one's outcome on the returned channel, which is
// closed when all are done.
func load(c *milvusclient.Client, n int) <-chan error {
	out := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cl := entity.ClStrong
			if i%2 == 1 {
				cl = entity.ClEventually
			}
			res, err := c.Search(ctx, milvusclient.NewSearchOption("drain", 1, []entity.Vector{entity.FloatVector(testenv.Vec(int64(i)))}).
				WithANNSField("vec").WithConsistencyLevel(cl))
			switch {
			case err != nil:
				out <- fmt.Errorf("search %d (%v): %w", i, cl, err)
			case len(res) != 1 || res[0].ResultCount != 1:
				out <- fmt.Errorf("search %d (%v): %d result sets, want 1 with 1 hit", i, cl, len(res))
			default:
				out <- nil
			}
		}()
	}
	go func() { wg.Wait(); close(out) }()
	return out
}

// prepareDrain creates the "drain" collection with rows through the proxy
// at addr and waits until the alternative has it.
func prepareDrain(t *testing.T, sims []*sim.Cluster, addr string) *milvusclient.Client {
	t.Helper()
	c := testenv.Connect(t, addr, nil)
	testenv.MakeCollection(t, c, "drain")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := testenv.Insert(ctx, c, "drain", 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	waitLoaded(t, sims[1].Addr(), "drain")
	// A Strong search warms the SDK's schema cache, so the load below is
	// searches only.
	if err := testenv.Search(ctx, c, "drain", 1, entity.ClStrong); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitInFlight waits until the proxy reports n calls in flight to its
// clusters.
func waitInFlight(t *testing.T, adminAddr string, n int64) {
	t.Helper()
	testutil.EventuallyWhy(t, 10*time.Second, fmt.Sprintf("%d calls in flight", n), func() (bool, string) {
		var sum int64
		for _, c := range testenv.Topology(t, adminAddr).Clusters {
			sum += c.Outstanding
		}
		return sum == n, fmt.Sprint(sum)
	})
}

// watchHealth connects to the proxy at addr and starts a gRPC health
// Watch on that connection; t.Cleanup ends the watch and closes it.
func watchHealth(t *testing.T, addr string) (*grpc.ClientConn, healthpb.Health_WatchClient) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	wctx, wcancel := context.WithCancel(context.Background())
	t.Cleanup(wcancel)
	watch, err := healthpb.NewHealthClient(conn).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return conn, watch
}

// TestDrainUnderLoad: with many slow calls in flight, Shutdown turns
// /readyz to 503 and the gRPC health service to NOT_SERVING, refuses new
// calls, lets every call in flight finish successfully (none lost), and
// returns nil (nothing had to be cut). A client watching the health
// service (grpc-go client-side health checking does) must not hold the
// drain up.
func TestDrainUnderLoad(t *testing.T) {
	const inflight = 40
	sims := slowSims(t)
	cfg := replicateConfig(sims)
	a := testenv.StartApp(t, cfg, app.Options{})
	testenv.WaitReady(t, a.AdminAddr(), 1)
	c := prepareDrain(t, sims, a.Addr())

	// A health watcher and a plain client, both connected before the drain.
	conn, watch := watchHealth(t, a.Addr())
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before the drain: %v, %v; want SERVING", r, err)
	}
	if code, body := httpGet(t, "http://"+a.AdminAddr()+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before the drain: %d %s", code, body)
	}

	results := load(c, inflight)
	waitInFlight(t, a.AdminAddr(), inflight)

	grace := 20 * time.Second
	shutdownErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		shutdownErr <- a.Shutdown(ctx)
	}()

	// Health: the watcher sees NOT_SERVING.
	r, err := watch.Recv()
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health during the drain: %v, %v; want NOT_SERVING", r, err)
	}
	// Readiness: 503 while calls drain (the admin server outlives them).
	if code, body := httpGet(t, "http://"+a.AdminAddr()+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz during the drain: %d %q, want 503 naming the drain", code, body)
	}
	// New calls are refused: on a connection made before the drain...
	nctx, ncancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = milvuspb.NewMilvusServiceClient(conn).Search(nctx, &milvuspb.SearchRequest{CollectionName: "drain"})
	ncancel()
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a new call on an existing connection during the drain: %v, want Unavailable", err)
	}
	// ...and on a new one.
	conn2, err := grpc.NewClient(a.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	nctx, ncancel = context.WithTimeout(context.Background(), 5*time.Second)
	_, err = milvuspb.NewMilvusServiceClient(conn2).Search(nctx, &milvuspb.SearchRequest{CollectionName: "drain"})
	ncancel()
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a new call on a new connection during the drain: %v, want Unavailable", err)
	}

	// Every call in flight finished, successfully.
	lost := 0
	for err := range results {
		if err != nil {
			lost++
			t.Errorf("in-flight call lost: %v", err)
		}
	}
	if err := <-shutdownErr; err != nil {
		t.Errorf("Shutdown: %v (calls were cut instead of drained)", err)
	}
	t.Logf("%d calls in flight at the drain, %d lost", inflight, lost)
}

var listeningRE = regexp.MustCompile(`listening on (\S+) \(gRPC\), admin on http://(\S+)`)

// startServe runs the built binary's serve with args and returns the
// command, its gRPC and admin addresses, and its stderr so far (a
// function, safe to call after Wait).
func startServe(t *testing.T, bin string, env []string, args ...string) (cmd *exec.Cmd, grpcAddr, adminAddr string, stderr func() string) {
	t.Helper()
	cmd = exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = env
	var mu sync.Mutex
	var errBuf strings.Builder
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return errBuf.Write(p)
	})
	stderr = func() string { mu.Lock(); defer mu.Unlock(); return errBuf.String() }
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				lines <- sc.Text()
			}
		}
		close(lines)
	}()
	select {
	case l, ok := <-lines:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("serve exited before listening: %v\n%s", cmd.ProcessState, stderr())
		}
		m := listeningRE.FindStringSubmatch(l)
		return cmd, m[1], m[2], stderr
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not print its addresses\n%s", stderr())
	}
	return nil, "", "", nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var _ io.Writer = writerFunc(nil)

// TestServeSIGTERMDrains: the real binary, under load, gets SIGTERM: it
// turns /readyz to 503, every call in flight completes, and it exits 0.
func TestServeSIGTERMDrains(t *testing.T) {
	bin := buildBinary(t)
	const inflight = 20
	sims := slowSims(t)
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
discovery: replicate
clusters:
  - {id: a, uri: "%s"}
  - {id: b, uri: "%s"}
health: {probe_interval: 50ms}
replication: {poll_interval: 50ms}
drain: {grace_period: 15s}
`, sims[0].Addr(), sims[1].Addr())
	path := writeFile(t, t.TempDir(), "proxy.yaml", yaml)
	cmd, grpcAddr, adminAddr, stderr := startServe(t, bin, nil, "--config", path, "--log-format", "json")
	testenv.WaitReady(t, adminAddr, 1)
	c := prepareDrain(t, sims, grpcAddr)

	results := load(c, inflight)
	waitInFlight(t, adminAddr, inflight)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// /readyz says 503 while the calls drain; the first answers may still
	// predate the signal's delivery, so poll for it.
	saw503 := false
	for deadline := time.Now().Add(slowSearch); time.Now().Before(deadline) && !saw503; {
		code, _, err := tryGet("http://" + adminAddr + "/readyz")
		if err != nil {
			break // the admin server is gone: the drain is over
		}
		saw503 = code == http.StatusServiceUnavailable
		time.Sleep(5 * time.Millisecond)
	}
	if !saw503 {
		t.Errorf("/readyz never answered 503 during the drain")
	}
	for err := range results {
		if err != nil {
			t.Errorf("in-flight call lost: %v", err)
		}
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) || err != nil {
		t.Fatalf("serve exited with %v after SIGTERM, want 0\n%s", err, stderr())
	}
	if log := stderr(); !strings.Contains(log, "draining") || strings.Contains(log, "drain ended with errors") {
		t.Errorf("serve's log does not show a clean drain:\n%s", log)
	}
}

// tryGet is httpGet without failing the test.
func tryGet(url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// TestDrainWithIdleWatcherNotServing: a health watcher that was already
// told NOT_SERVING before the drain (no leader known) must not hold the
// drain up either.
func TestDrainWithIdleWatcherNotServing(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Clusters = []config.Cluster{{ID: "a", URI: dead}} // replicate discovery: no leader ever
	a := testenv.StartApp(t, cfg, app.Options{})

	_, watch := watchHealth(t, a.Addr())
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health with no leader: %v, %v; want NOT_SERVING", r, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with an idle health watcher: %v (it waited out the grace period)", err)
	}
}
