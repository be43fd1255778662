package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/rawmsg"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// BenchmarkSearch compares a Search (dim 128, top 10, the Go SDK's default
// consistency fields) sent directly to a backend with the same Search
// through, side by side:
//
//	haproxy     HAProxy, h2 frontend and h2 backend (skipped if not installed)
//	naive       generated grpc-go server + generated client (decode, re-encode)
//	raw         grpc-go UnknownServiceHandler + bytes codec, routing nothing
//	proxy-grpc  this proxy, grpc engine, routing by consistency
//	proxy       this proxy, relay engine, routing by consistency
//	proxy-inproc the relay in this process, for its allocations
//
// Each proxy but proxy-inproc runs in a child process; proxy-cpu-µs/op is
// that process's CPU time per request (/proc/<pid>/stat), with its read
// and write syscalls and context switches per request (/proc/<pid>/io and
// task status). Latency percentiles are per call, at each concurrency.
// Environment: PROXY_BENCH_KINDS (comma list), PROXY_BENCH_PROCS (GOMAXPROCS of the
// proxy and HAProxy's nbthread, default 2), PROXY_BENCH_CPUPROFILE (a CPU
// profile of the child). For example:
//
//	PROXY_BENCH_PROCS=1 go test -run x -bench BenchmarkSearch -benchtime 20000x -count 3 ./proxy

type benchBackend struct {
	milvuspb.UnimplementedMilvusServiceServer
	resp *milvuspb.SearchResults
}

func (b *benchBackend) Search(context.Context, *milvuspb.SearchRequest) (*milvuspb.SearchResults, error) {
	return b.resp, nil
}

func startBenchBackend(b *testing.B) string {
	ids := make([]int64, 10)
	scores := make([]float32, 10)
	for i := range ids {
		ids[i], scores[i] = int64(1000+i), float32(i)/10
	}
	srv := grpc.NewServer()
	milvuspb.RegisterMilvusServiceServer(srv, &benchBackend{resp: &milvuspb.SearchResults{
		Status:         &commonpb.Status{},
		CollectionName: "coll",
		Results: &schemapb.SearchResultData{NumQueries: 1, TopK: 10, Scores: scores, Topks: []int64{10},
			Ids: &schemapb.IDs{IdField: &schemapb.IDs_IntId{IntId: &schemapb.LongArray{Data: ids}}}},
	}})
	return serveBench(b, srv)
}

func serveBench(b *testing.B, srv *grpc.Server) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func dial(b *testing.B, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// naiveProxy is the obvious grpc-go design: generated server, generated
// client, every message decoded and re-encoded.
type naiveProxy struct {
	milvuspb.UnimplementedMilvusServiceServer
	up milvuspb.MilvusServiceClient
}

func (p *naiveProxy) Search(ctx context.Context, r *milvuspb.SearchRequest) (*milvuspb.SearchResults, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	return p.up.Search(metadata.NewOutgoingContext(ctx, md), r)
}

// rawPassThrough forwards any method as bytes and routes nothing: the
// floor for a grpc-go based proxy.
func rawPassThrough(b *testing.B, up *grpc.ClientConn) string {
	codec := rawmsg.NewCodec()
	opts := []grpc.CallOption{grpc.ForceCodecV2(codec)}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(codec), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		name, _ := grpc.MethodFromServerStream(ss)
		req := &frame{}
		if err := ss.RecvMsg(req); err != nil {
			return err
		}
		defer req.Free()
		md, _ := metadata.FromIncomingContext(ss.Context())
		resp := &frame{}
		if err := up.Invoke(metadata.NewOutgoingContext(ss.Context(), md), name, req, resp, opts...); err != nil {
			return err
		}
		defer resp.Free()
		return ss.SendMsg(resp)
	}))
	return serveBench(b, srv)
}

// benchTopo is a static Topology: leader a, alternatives b and c caught
// up, all on the same backend.
type benchTopo struct {
	snap    *topology.Snapshot
	changed chan struct{}
	info    topology.CollectionInfo
}

func (t *benchTopo) Snapshot() *topology.Snapshot { return t.snap }
func (t *benchTopo) Changed() <-chan struct{}     { return t.changed }
func (t *benchTopo) WaitLeader(context.Context) (*topology.Cluster, error) {
	return t.snap.Leader, nil
}
func (t *benchTopo) WaitWritable(context.Context, *topology.WriteWait) (*topology.Cluster, error) {
	return t.snap.Leader, nil
}
func allowDone(bool)                                  {}
func (t *benchTopo) Allow(string) (func(bool), error) { return allowDone, nil }
func (t *benchTopo) LeaderNow() uint64                { return hybridts.Now() }
func (t *benchTopo) AllocLeaderTimestamp(context.Context) (uint64, error) {
	return hybridts.Now(), nil
}
func (t *benchTopo) Collection(context.Context, string, string) (topology.CollectionInfo, error) {
	return t.info, nil
}
func (t *benchTopo) CachedCollection(string, string) (topology.CollectionInfo, bool, error) {
	return t.info, true, nil
}
func (t *benchTopo) InvalidateCollection(string, string) {}

func ourProxy(b *testing.B, backend string, engine Engine) string {
	topo := &benchTopo{changed: make(chan struct{}), info: topology.CollectionInfo{DB: "default", Name: "coll",
		ConsistencyLevel: int32(commonpb.ConsistencyLevel_Bounded), PChannels: []int{0, 1}}}
	snap := &topology.Snapshot{PublishedAt: time.Now()}
	far := hybridts.FromTime(time.Now().Add(time.Hour))
	dialOpts := BackendDialOptions()
	if engine == EngineGRPC {
		dialOpts = BackendDialOptionsFor(RelayLimits{}) // as app does
	}
	for i, id := range []string{"a", "b", "c"} {
		c := &topology.Cluster{ID: id, URI: backend, Role: topology.RoleAlternative, Order: i, Healthy: true, Breaker: topology.BreakerClosed,
			Checkpoints: []uint64{far, far}, CheckpointsKnown: true, Conn: dial(b, backend, dialOpts...),
			Outstanding: &atomic.Int64{}, Served: &atomic.Int64{}}
		if id == "a" {
			c.Role = topology.RoleLeader
			snap.Leader = c
		}
		snap.Clusters = append(snap.Clusters, c)
	}
	topo.snap = snap
	srv, err := New(Options{Engine: engine, Topology: topo, Router: router.New(router.Options{LeaderNow: topo.LeaderNow})})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return lis.Addr().String()
}

// benchSearch is what the Go SDK sends for a default Search: dim 128
// float vector, top 10, the collection's own consistency level.
func benchSearch() *milvuspb.SearchRequest {
	vec := make([]byte, 0, 4*128+16)
	vec = append(vec, 0x0a, 0x8a, 0x04, 0x0a, 0x02, '$', '0', 0x10, 0x65, 0x1a, 0x80, 0x04)
	vec = append(vec, make([]byte, 4*128)...)
	return &milvuspb.SearchRequest{
		CollectionName: "coll", Dsl: "", DslType: commonpb.DslType_BoolExprV1, Nq: 1,
		SearchInput: &milvuspb.SearchRequest_PlaceholderGroup{PlaceholderGroup: vec},
		SearchParams: []*commonpb.KeyValuePair{{Key: "anns_field", Value: "vector"}, {Key: "topk", Value: "10"},
			{Key: "metric_type", Value: "L2"}, {Key: "params", Value: `{"nprobe":16}`}, {Key: "round_decimal", Value: "-1"}},
		ConsistencyLevel: commonpb.ConsistencyLevel_Bounded, UseDefaultConsistency: true,
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkSearch(b *testing.B) {
	backend := startBenchBackend(b)
	benchTarget(b, "direct", backend, nil)
	kinds := []string{"haproxy", "naive", "raw", "proxy-grpc", "proxy"}
	if k := os.Getenv("PROXY_BENCH_KINDS"); k != "" {
		kinds = strings.Split(k, ",")
	}
	for _, kind := range kinds {
		if kind == "proxy-inproc" {
			// In this process: its allocations show in
			// process-allocs/op, next to direct's.
			benchTarget(b, kind, ourProxy(b, backend, EngineRelay), nil)
			continue
		}
		addr, child := spawnBenchProxy(b, kind, backend)
		benchTarget(b, kind, addr, child)
	}
}

// TestMain lets the benchmark run a proxy in a child process (the test
// binary again), so that the proxy's own CPU time can be read from
// /proc/<pid>/stat, apart from the client's and the backend's.
func TestMain(m *testing.M) {
	if kind := os.Getenv("PROXY_BENCH_CHILD"); kind != "" {
		os.Exit(benchChild(kind, os.Getenv("PROXY_BENCH_BACKEND")))
	}
	os.Exit(m.Run())
}

func benchChild(kind, backend string) int {
	b := &testing.B{}
	var addr string
	func() {
		defer func() {
			if r := recover(); r != nil {
				fmt.Fprintln(os.Stderr, "child:", r)
			}
		}()
		switch kind {
		case "naive":
			naive := grpc.NewServer()
			up, _ := grpc.NewClient(backend, grpc.WithTransportCredentials(insecure.NewCredentials()))
			milvuspb.RegisterMilvusServiceServer(naive, &naiveProxy{up: milvuspb.NewMilvusServiceClient(up)})
			addr = serveChild(naive)
		case "raw":
			up, _ := grpc.NewClient(backend, grpc.WithTransportCredentials(insecure.NewCredentials()))
			addr = rawPassThrough(b, up)
		case "proxy":
			addr = ourProxy(b, backend, EngineRelay)
		case "proxy-grpc":
			addr = ourProxy(b, backend, EngineGRPC)
		default:
			if f := extraBenchChildren[kind]; f != nil {
				addr = f(backend)
			}
		}
	}()
	if addr == "" {
		return 2
	}
	if f := os.Getenv("PROXY_BENCH_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err == nil {
			_ = pprof.StartCPUProfile(out)
			defer func() { pprof.StopCPUProfile(); out.Close() }()
		}
	}
	fmt.Println(addr)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
	return 0
}

// extraBenchChildren are other proxy designs under evaluation.
var extraBenchChildren = map[string]func(backend string) string{}

func serveChild(srv *grpc.Server) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = srv.Serve(lis) }()
	return lis.Addr().String()
}

type childProc struct {
	pid int
}

// counters returns the child's read and write syscalls (/proc/pid/io) and
// context switches (/proc/pid/status), all threads: noise-free signs of
// how much work a request costs.
func (c *childProc) counters() (reads, writes, ctxsw int64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", c.pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "syscr: "); ok {
				reads, _ = strconv.ParseInt(v, 10, 64)
			}
			if v, ok := strings.CutPrefix(line, "syscw: "); ok {
				writes, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", c.pid))
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", c.pid, t.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasSuffix(strings.Fields(line + " x")[0], "ctxt_switches:") {
				v, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
				ctxsw += v
			}
		}
	}
	return reads, writes, ctxsw
}

// cpu returns the child's user+system CPU time.
func (c *childProc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func spawnBenchProxy(b *testing.B, kind, backend string) (string, *childProc) {
	if kind == "haproxy" {
		return spawnHAProxy(b, backend)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	procs := os.Getenv("PROXY_BENCH_PROCS") // GOMAXPROCS of the proxy process
	if procs == "" {
		procs = "2"
	}
	cmd.Env = append(os.Environ(), "PROXY_BENCH_CHILD="+kind, "PROXY_BENCH_BACKEND="+backend, "GOMAXPROCS="+procs)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("%s child: %v", kind, err)
	}
	return strings.TrimSpace(line), &childProc{pid: cmd.Process.Pid}
}

func benchTarget(b *testing.B, name, addr string, child *childProc) {
	req := benchSearch()
	md := metadata.Pairs("authorization", "cm9vdDpNaWx2dXM=", "dbname", "default", "identifier", "4242",
		"client-request-unixmsec", "1700000000000")
	client := milvuspb.NewMilvusServiceClient(dial(b, addr))
	ctx := metadata.NewOutgoingContext(context.Background(), md)
	if _, err := client.Search(ctx, req); err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	for _, conc := range []int{1, 8} {
		b.Run(name+"/c"+string(rune('0'+conc)), func(b *testing.B) {
			b.ReportAllocs()
			lat := make([]time.Duration, 0, b.N)
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			cpu0 := cpuTime()
			var child0 time.Duration
			var r0, w0, cs0 int64
			if child != nil {
				child0 = child.cpu()
				r0, w0, cs0 = child.counters()
			}
			b.ResetTimer()
			if conc == 1 {
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					if _, err := client.Search(ctx, req); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
			} else {
				b.SetParallelism(max(1, (conc+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0)))
				var mu sync.Mutex
				b.RunParallel(func(pb *testing.PB) {
					var mine []time.Duration
					defer func() {
						mu.Lock()
						lat = append(lat, mine...)
						mu.Unlock()
					}()
					for pb.Next() {
						t0 := time.Now()
						if _, err := client.Search(ctx, req); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(t0))
					}
				})
			}
			b.StopTimer()
			if child != nil {
				b.ReportMetric(float64(child.cpu()-child0)/float64(time.Microsecond)/float64(b.N), "proxy-cpu-µs/op")
				r1, w1, cs1 := child.counters()
				n := float64(b.N)
				b.ReportMetric(float64(r1-r0)/n, "reads/op")
				b.ReportMetric(float64(w1-w0)/n, "writes/op")
				b.ReportMetric(float64(cs1-cs0)/n, "ctxsw/op")
			}
			cpu := float64(cpuTime()-cpu0) / float64(time.Microsecond) / float64(b.N)
			runtime.ReadMemStats(&ms1)
			if child == nil {
				b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N), "process-allocs/op")
			}
			if child == nil {
				b.ReportMetric(cpu, "cpu-µs/op")
			}
			if len(lat) > 0 {
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				b.ReportMetric(float64(lat[len(lat)/2])/1e3, "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100])/1e3, "p99-µs")
			}
		})
	}
}

// spawnHAProxy runs HAProxy as a generic L7 gRPC proxy (h2 frontend, h2
// backend), the calibration point of the proxy's speed goal (README.md,
// "Benchmarks").
func spawnHAProxy(b *testing.B, backend string) (string, *childProc) {
	path, err := exec.LookPath("haproxy")
	if err != nil {
		b.Skip("haproxy not installed")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	threads := os.Getenv("PROXY_BENCH_PROCS")
	if threads == "" {
		threads = "2"
	}
	cfg := fmt.Sprintf(`global
  nbthread %s
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind %s proto h2
  default_backend be
backend be
  server s1 %s proto h2
`, threads, addr, backend)
	f := b.TempDir() + "/haproxy.cfg"
	if err := os.WriteFile(f, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(path, "-db", "-f", f)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr, &childProc{pid: cmd.Process.Pid}
}
