package perf

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// BenchmarkProxy measures, in alternating rounds, these targets under the
// same load (a Search, dim 128, top 10, at the collection's default
// consistency, as the Go SDK sends it):
//
//	direct           the minimal backend, no proxy
//	haproxy          HAProxy (/usr/sbin/haproxy), h2 frontend and h2 backend
//	serve            milvus-ha-proxy serve, static discovery, default config
//	serve-base       the same with MHP_PERF_BASE_BIN (only when named)
//	sim-direct       simulated cluster a, no proxy
//	serve-replicate  serve, replicate discovery, clusters a, b, c
//
// Each round measures, per target: p50 and p99 over MHP_PERF_CALLS calls
// one at a time (c=1), then MHP_PERF_DURATION of 8 concurrent callers on
// one connection (c=8): throughput, the proxy process's CPU time per call
// (/proc/<pid>/stat utime+stime) and, for serve, its heap allocations
// per call (go_memstats_mallocs_total on /metrics, less the scrapes' own).
// The report is the median of MHP_PERF_ROUNDS rounds, as metrics of one
// sub-benchmark per target and as a Markdown table on stdout (and in
// MHP_PERF_TABLE when set). Run it once per invocation:
//
//	go test -run '^$' -bench '^BenchmarkProxy$' -benchtime 1x -timeout 30m ./test/perf/
//
// Environment: MHP_PERF_ROUNDS (3), MHP_PERF_DURATION (3s), MHP_PERF_CALLS
// (3000), MHP_PERF_TARGETS (comma list, default all), MHP_PERF_CPUPROFILE
// (a file: serve runs with admin_pprof on and, after the rounds, a CPU
// profile of it under the c=8 load is written there, and its allocations
// since it started to FILE.allocs), MHP_PERF_BASE_BIN
// (another milvus-ha-proxy binary, measured as target serve-base in the
// same rounds: what a change to the code bought).
func BenchmarkProxy(b *testing.B) {
	o := perfOptions{rounds: 3, duration: 3 * time.Second, calls: 3000, conc: 8,
		targets: []string{"direct", "haproxy", "serve", "sim-direct", "serve-replicate"}}
	if err := o.fromEnv(); err != nil {
		b.Fatal(err)
	}
	var targets []*target
	var backendAddr, simA string
	var sims map[string]string
	need := func(name string) bool { return slices.Contains(o.targets, name) }
	if need("direct") || need("haproxy") || need("serve") || need("serve-base") {
		out := startHelper(b, childBackend, regexp.MustCompile(`perf-backend listening on (\S+)`))
		backendAddr = out[1]
	}
	if need("sim-direct") || need("serve-replicate") {
		out := startHelper(b, childSims, regexp.MustCompile(`perf-sims a=(\S+) b=(\S+) c=(\S+)`))
		sims = map[string]string{"a": out[1], "b": out[2], "c": out[3]}
		simA = out[1]
	}
	for _, name := range o.targets {
		var tg *target
		switch name {
		case "direct":
			tg = &target{name: name, addr: backendAddr}
		case "haproxy":
			tg = startHAProxy(b, backendAddr)
		case "serve":
			tg = startServe(b, name, "", staticConfig(backendAddr, o.cpuProfile != ""))
		case "serve-base":
			if o.baseBin == "" {
				b.Fatal("MHP_PERF_TARGETS: serve-base needs MHP_PERF_BASE_BIN")
			}
			tg = startServe(b, name, o.baseBin, staticConfig(backendAddr, false))
		case "sim-direct":
			tg = &target{name: name, addr: simA}
		case "serve-replicate":
			tg = startServe(b, name, "", replicateConfig(sims, o.cpuProfile != ""))
		default:
			b.Fatalf("MHP_PERF_TARGETS: unknown target %q", name)
		}
		if tg == nil {
			continue
		}
		tg.dial(b)
		targets = append(targets, tg)
	}

	for round := range o.rounds {
		// Rotate the order so that no target always follows the same one.
		for i := range targets {
			tg := targets[(i+round)%len(targets)]
			s, err := measure(tg, o)
			if err != nil {
				b.Fatalf("round %d, %s: %v", round+1, tg.name, err)
			}
			tg.samples = append(tg.samples, s)
			fmt.Fprintf(os.Stderr, "round %d %-16s %s\n", round+1, tg.name, s)
		}
	}
	table := report(targets)
	fmt.Print(table)
	if f := os.Getenv("MHP_PERF_TABLE"); f != "" {
		if err := os.WriteFile(f, []byte(table), 0o644); err != nil {
			b.Error(err)
		}
	}
	for _, tg := range targets {
		m := tg.median()
		b.Run(tg.name, func(b *testing.B) {
			b.ReportMetric(m.qps, "qps-c8")
			b.ReportMetric(m.p50, "p50-µs-c1")
			b.ReportMetric(m.p99, "p99-µs-c1")
			if tg.pid != 0 {
				b.ReportMetric(m.cpu, "proxy-cpu-µs/op-c8")
				b.ReportMetric(m.reads, "proxy-reads/op-c8")
				b.ReportMetric(m.writes, "proxy-writes/op-c8")
				b.ReportMetric(m.switches, "proxy-ctxsw/op-c8")
			}
			if tg.admin != "" {
				b.ReportMetric(m.allocs, "proxy-allocs/op-c8")
			}
		})
	}
	if o.cpuProfile != "" {
		for _, tg := range targets {
			if tg.name == "serve" {
				if err := profile(tg, o); err != nil {
					b.Error(err)
				}
			}
		}
	}
}

type perfOptions struct {
	rounds     int
	duration   time.Duration
	calls      int
	conc       int
	targets    []string
	cpuProfile string
	baseBin    string
}

func (o *perfOptions) fromEnv() error {
	if v := os.Getenv("MHP_PERF_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 50 {
			return fmt.Errorf("MHP_PERF_ROUNDS=%q: want a number from 1 to 50", v)
		}
		o.rounds = n
	}
	if v := os.Getenv("MHP_PERF_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 100*time.Millisecond || d > 10*time.Minute {
			return fmt.Errorf("MHP_PERF_DURATION=%q: want a duration from 100ms to 10m", v)
		}
		o.duration = d
	}
	if v := os.Getenv("MHP_PERF_CALLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10 || n > 1_000_000 {
			return fmt.Errorf("MHP_PERF_CALLS=%q: want a number from 10 to 1000000", v)
		}
		o.calls = n
	}
	if v := os.Getenv("MHP_PERF_TARGETS"); v != "" {
		o.targets = strings.Split(v, ",")
	}
	o.cpuProfile = os.Getenv("MHP_PERF_CPUPROFILE")
	o.baseBin = os.Getenv("MHP_PERF_BASE_BIN")
	if o.baseBin == "" && slices.Contains(o.targets, "serve-base") {
		return fmt.Errorf("MHP_PERF_TARGETS: serve-base needs MHP_PERF_BASE_BIN")
	}
	return nil
}

// target is one way to reach a backend.
type target struct {
	name  string
	addr  string // gRPC address clients call
	pid   int    // the proxy's process (0: direct)
	admin string // serve's admin address ("" otherwise)
	// scrapeAllocs is what two scrapes of /metrics allocate in serve.
	scrapeAllocs float64

	conn    *grpc.ClientConn
	samples []sample
}

func (tg *target) dial(b *testing.B) {
	conn, err := grpc.NewClient(tg.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	tg.conn = conn
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The first call waits for the connection (and serve's first
	// DescribeCollection); retry while a replicate proxy settles.
	for {
		err := call(ctx, milvuspb.NewMilvusServiceClient(conn), searchRequest(), nil)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			b.Fatalf("%s: first search: %v", tg.name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sample is one round's measurement of one target.
type sample struct {
	qps, p50, p99, cpu, allocs float64
	// Per call at c=8, the proxy's read and write system calls and its
	// threads' context switches: the work the CPU time is spent on,
	// and steadier than the CPU time on a loaded machine.
	reads, writes, switches float64
	spread                  map[string]int64 // cluster (x-milvus-ha-cluster) -> calls at c=8
}

func (s sample) String() string {
	str := fmt.Sprintf("qps %7.0f  p50 %6.0f µs  p99 %6.0f µs", s.qps, s.p50, s.p99)
	if s.cpu > 0 {
		str += fmt.Sprintf("  cpu %5.1f µs/call", s.cpu)
	}
	if s.allocs > 0 {
		str += fmt.Sprintf("  allocs %5.1f/call", s.allocs)
	}
	if s.cpu > 0 {
		str += fmt.Sprintf("  read/write/switch %.2f/%.2f/%.2f per call", s.reads, s.writes, s.switches)
	}
	if len(s.spread) > 0 {
		str += "  " + spreadString(s.spread)
	}
	return str
}

// median is the per-field median of the target's samples (the spread of
// the last round).
func (tg *target) median() sample {
	med := func(f func(sample) float64) float64 {
		xs := make([]float64, len(tg.samples))
		for i, s := range tg.samples {
			xs[i] = f(s)
		}
		return median(xs)
	}
	return sample{
		qps:      med(func(s sample) float64 { return s.qps }),
		p50:      med(func(s sample) float64 { return s.p50 }),
		p99:      med(func(s sample) float64 { return s.p99 }),
		cpu:      med(func(s sample) float64 { return s.cpu }),
		allocs:   med(func(s sample) float64 { return s.allocs }),
		reads:    med(func(s sample) float64 { return s.reads }),
		writes:   med(func(s sample) float64 { return s.writes }),
		switches: med(func(s sample) float64 { return s.switches }),
		spread:   tg.samples[len(tg.samples)-1].spread,
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	sort.Float64s(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// searchRequest is what the Go SDK sends for a default Search: a dim-128
// float vector, top 10, the collection's own consistency level.
func searchRequest() *milvuspb.SearchRequest {
	values := make([]byte, 4*dim)
	for i := 0; i < dim; i++ {
		binary.LittleEndian.PutUint32(values[4*i:], math.Float32bits(float32(i%7)/7))
	}
	vec, err := proto.Marshal(&commonpb.PlaceholderGroup{Placeholders: []*commonpb.PlaceholderValue{
		{Tag: "$0", Type: commonpb.PlaceholderType_FloatVector, Values: [][]byte{values}}}})
	if err != nil {
		panic(err) // a fixed, valid message
	}
	return &milvuspb.SearchRequest{
		CollectionName: collection, DslType: commonpb.DslType_BoolExprV1, Nq: 1,
		SearchInput: &milvuspb.SearchRequest_PlaceholderGroup{PlaceholderGroup: vec},
		SearchParams: []*commonpb.KeyValuePair{{Key: "anns_field", Value: "vector"}, {Key: "topk", Value: strconv.Itoa(topK)},
			{Key: "metric_type", Value: "L2"}, {Key: "params", Value: `{"nprobe":16}`}, {Key: "round_decimal", Value: "-1"}},
		ConsistencyLevel: commonpb.ConsistencyLevel_Bounded, UseDefaultConsistency: true,
	}
}

// callMD is the metadata the Go SDK sends with every call.
var callMD = metadata.Pairs("authorization", "cm9vdDpNaWx2dXM=", "dbname", "default", "identifier", "4242")

// call sends one search and checks its answer; with hdr it also reads the
// response headers.
func call(ctx context.Context, svc milvuspb.MilvusServiceClient, req *milvuspb.SearchRequest, hdr *metadata.MD) error {
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, callMD), 10*time.Second)
	defer cancel()
	var opts []grpc.CallOption
	if hdr != nil {
		opts = append(opts, grpc.Header(hdr))
	}
	r, err := svc.Search(ctx, req, opts...)
	if err != nil {
		return err
	}
	if st := r.GetStatus(); st.GetErrorCode() != commonpb.ErrorCode_Success || st.GetCode() != 0 {
		return fmt.Errorf("search status %v: %s", st.GetErrorCode(), st.GetReason())
	}
	if n := len(r.GetResults().GetScores()); n != topK {
		return fmt.Errorf("search returned %d hits, want %d", n, topK)
	}
	return nil
}

// measure runs one round on tg: c=1 latency, then c=8 throughput, CPU
// and allocations.
func measure(tg *target, o perfOptions) (sample, error) {
	var s sample
	svc := milvuspb.NewMilvusServiceClient(tg.conn)
	req := searchRequest()
	ctx := context.Background()

	for range o.calls / 10 { // warm up
		if err := call(ctx, svc, req, nil); err != nil {
			return s, err
		}
	}
	lat := make([]time.Duration, 0, o.calls)
	for range o.calls {
		t0 := time.Now()
		if err := call(ctx, svc, req, nil); err != nil {
			return s, err
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	s.p50 = float64(lat[len(lat)/2]) / 1e3
	s.p99 = float64(lat[len(lat)*99/100]) / 1e3

	if _, err := load(tg, o, o.duration/6, nil); err != nil { // warm up
		return s, err
	}
	var mallocs0 float64
	if tg.admin != "" {
		m, err := mallocs(tg.admin)
		if err != nil {
			return s, err
		}
		mallocs0 = m
	}
	var cpu0 time.Duration
	var work0 procWork
	if tg.pid != 0 {
		cpu0, work0 = procCPU(tg.pid), readProcWork(tg.pid)
	}
	s.spread = map[string]int64{}
	n, err := load(tg, o, o.duration, s.spread)
	if err != nil {
		return s, err
	}
	s.qps = float64(n) / o.duration.Seconds()
	if tg.pid != 0 {
		s.cpu = float64(procCPU(tg.pid)-cpu0) / float64(time.Microsecond) / float64(n)
		w := readProcWork(tg.pid)
		s.reads = float64(w.reads-work0.reads) / float64(n)
		s.writes = float64(w.writes-work0.writes) / float64(n)
		s.switches = float64(w.switches-work0.switches) / float64(n)
	}
	if tg.admin != "" {
		m, err := mallocs(tg.admin)
		if err != nil {
			return s, err
		}
		s.allocs = (m - mallocs0 - tg.scrapeAllocs) / float64(n)
	}
	if len(s.spread) == 1 {
		if _, ok := s.spread[""]; ok {
			s.spread = nil // no proxy header: direct or HAProxy
		}
	}
	return s, nil
}

// load runs o.conc callers on tg's connection for d and returns the
// calls completed within d; spread, when not nil, counts them by the
// cluster that served them.
func load(tg *target, o perfOptions, d time.Duration, spread map[string]int64) (int64, error) {
	svc := milvuspb.NewMilvusServiceClient(tg.conn)
	var done atomic.Int64
	var stop atomic.Bool
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range o.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := searchRequest()
			mine := map[string]int64{}
			for !stop.Load() {
				var hdr metadata.MD
				if err := call(context.Background(), svc, req, &hdr); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				if stop.Load() {
					break
				}
				done.Add(1)
				if spread != nil {
					mine[strings.Join(hdr.Get("x-milvus-ha-cluster"), ",")]++
				}
			}
			mu.Lock()
			for k, v := range mine {
				spread[k] += v
			}
			mu.Unlock()
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	n := done.Load()
	wg.Wait()
	return n, firstErr
}

// procCPU is pid's user+system CPU time, all threads.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return parseStatCPU(string(b))
}

// procWork is a process's read and write system calls (/proc/<pid>/io
// syscr, syscw) and its threads' voluntary and involuntary context
// switches (/proc/<pid>/task/*/status), counted since it started.
type procWork struct{ reads, writes, switches int64 }

func readProcWork(pid int) procWork {
	var w procWork
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "syscr: "); ok {
				w.reads, _ = strconv.ParseInt(v, 10, 64)
			}
			if v, ok := strings.CutPrefix(line, "syscw: "); ok {
				w.writes, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if name, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(name, "ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				w.switches += n
			}
		}
	}
	return w
}

// parseStatCPU reads utime and stime (fields 14 and 15, in clock ticks of
// 1/100 s) from a /proc/<pid>/stat line; the command name in parentheses
// may hold spaces.
func parseStatCPU(stat string) time.Duration {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 || i+2 > len(stat) {
		return 0
	}
	f := strings.Fields(stat[i+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// mallocs reads go_memstats_mallocs_total from serve's /metrics.
func mallocs(admin string) (float64, error) {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return parseMallocs(body)
}

func parseMallocs(metrics []byte) (float64, error) {
	sc := bufio.NewScanner(bytes.NewReader(metrics))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_mallocs_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no go_memstats_mallocs_total in /metrics")
}

// startHelper re-executes the test binary as helper kind, waits for the
// line matching re on its stdout and returns the submatches; the
// benchmark's cleanup stops it (closing its stdin).
func startHelper(b *testing.B, kind string, re *regexp.Regexp) []string {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+kind)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m:
				default:
				}
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	b.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case m := <-found:
		return m
	case <-exited:
		b.Fatalf("helper %s exited: %s\n%s", kind, cmd.ProcessState, logs.String())
	case <-time.After(3 * time.Minute):
		b.Fatalf("helper %s did not start within 3m\n%s", kind, logs.String())
	}
	return nil
}

// buildServe builds the milvus-ha-proxy binary once per test process.
var buildServe = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "milvus-ha-proxy-perf-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "milvus-ha-proxy")
	cmd := exec.Command("go", "build", "-o", out, "github.com/milvus-ha-proxy/milvus-ha-proxy/cmd/milvus-ha-proxy")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, stderr.String())
	}
	return out, nil
})

var listeningRE = regexp.MustCompile(`listening on (\S+) \(gRPC\), admin on http://(\S+)`)

// staticConfig is serve's default configuration but for the addresses:
// static discovery of the one backend.
func staticConfig(backend string, pprof bool) string {
	return fmt.Sprintf(`listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
admin_pprof: %t
discovery: static
clusters:
  - {id: a, uri: "%s", role: leader}
`, pprof, backend)
}

// replicateConfig is serve's default configuration (replicate discovery)
// in front of the simulated clusters.
func replicateConfig(sims map[string]string, pprof bool) string {
	return fmt.Sprintf(`listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
admin_pprof: %t
clusters:
  - {id: a, uri: "%s"}
  - {id: b, uri: "%s"}
  - {id: c, uri: "%s"}
`, pprof, sims["a"], sims["b"], sims["c"])
}

// startServe runs serve (bin, or the binary built from this tree when
// empty) with config and waits until it is ready.
func startServe(b *testing.B, name, bin, config string) *target {
	if bin == "" {
		var err error
		if bin, err = buildServe(); err != nil {
			b.Fatal(err)
		}
	}
	cfg := filepath.Join(b.TempDir(), "proxy.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m:
				default:
				}
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	tg := &target{name: name, pid: cmd.Process.Pid}
	select {
	case m := <-found:
		tg.addr, tg.admin = m[1], m[2]
	case <-exited:
		b.Fatalf("%s exited: %s\n%s", name, cmd.ProcessState, logs.String())
	case <-time.After(time.Minute):
		b.Fatalf("%s did not print its addresses within 1m\n%s", name, logs.String())
	}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + tg.admin + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not ready within 1m\n%s", name, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// What scraping /metrics twice allocates by itself, to subtract.
	m0, err0 := mallocs(tg.admin)
	m1, err1 := mallocs(tg.admin)
	if err0 != nil || err1 != nil {
		b.Fatalf("%s: /metrics: %v %v", name, err0, err1)
	}
	tg.scrapeAllocs = m1 - m0
	return tg
}

// startHAProxy runs HAProxy relaying h2 (as gRPC clients speak it) to the
// backend in h2, with its defaults otherwise (one thread per CPU);
// without HAProxy installed the target is skipped.
func startHAProxy(b *testing.B, backend string) *target {
	const path = "/usr/sbin/haproxy"
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintf(os.Stderr, "haproxy: %v: skipped\n", err)
		return nil
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cfg := filepath.Join(b.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend grpc
    bind %s proto h2
    default_backend milvus
backend milvus
    server b1 %s proto h2
`, addr, backend)), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(path, "-db", "-f", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("haproxy does not listen on %s\n%s", addr, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &target{name: "haproxy", addr: addr, pid: cmd.Process.Pid}
}

// profile writes a CPU profile of serve under the c=8 load.
func profile(tg *target, o perfOptions) error {
	secs := max(1, int(o.duration.Seconds()))
	errc := make(chan error, 1)
	go func() {
		_, err := load(tg, o, time.Duration(secs)*time.Second+time.Second, nil)
		errc <- err
	}()
	time.Sleep(500 * time.Millisecond)
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", tg.admin, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", resp.Status)
	}
	f, err := os.Create(o.cpuProfile)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "CPU profile of %s under c=%d: %s\n", tg.name, o.conc, o.cpuProfile)
	if err := <-errc; err != nil {
		return err
	}
	// Next to it, what serve allocated since it started (nearly all of
	// it under the rounds' load): go tool pprof -sample_index=alloc_objects.
	return fetchTo(fmt.Sprintf("http://%s/debug/pprof/allocs", tg.admin), o.cpuProfile+".allocs")
}

// fetchTo writes what url answers to file.
func fetchTo(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "allocation profile: %s\n", file)
	return nil
}

// report is the Markdown table of the medians: ratios and added latency
// against direct (the backend) for direct, haproxy and serve, against
// sim-direct for serve-replicate.
func report(targets []*target) string {
	base := map[string]sample{}
	for _, tg := range targets {
		base[tg.name] = tg.median()
	}
	var sb strings.Builder
	sb.WriteString("| path | qps c=8 | ratio | p50 c=1 | added p50 | p99 c=1 | proxy CPU/call c=8 | allocs/call | reads by cluster |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, tg := range targets {
		m := base[tg.name]
		ref, hasRef := base["direct"]
		if strings.HasPrefix(tg.name, "sim") || strings.HasSuffix(tg.name, "replicate") {
			ref, hasRef = base["sim-direct"]
		}
		ratio, added := "–", "–"
		if hasRef && ref.qps > 0 {
			ratio = fmt.Sprintf("%.2f", m.qps/ref.qps)
			if tg.pid != 0 {
				added = fmt.Sprintf("+%.0f µs", m.p50-ref.p50)
			}
		}
		cpu, allocs, spread := "–", "–", "–"
		if tg.pid != 0 {
			cpu = fmt.Sprintf("%.1f µs", m.cpu)
		}
		if tg.admin != "" {
			allocs = fmt.Sprintf("%.0f", m.allocs)
		}
		if len(m.spread) > 1 {
			spread = spreadString(m.spread)
		}
		fmt.Fprintf(&sb, "| %s | %.1fk | %s | %.0f µs | %s | %.0f µs | %s | %s | %s |\n",
			tg.name, m.qps/1000, ratio, m.p50, added, m.p99, cpu, allocs, spread)
	}
	return sb.String()
}

// spreadString shows the share of calls per cluster: "a 34% b 33% c 33%".
func spreadString(spread map[string]int64) string {
	var total int64
	keys := make([]string, 0, len(spread))
	for k, v := range spread {
		total += v
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		name := k
		if name == "" {
			name = "?"
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", name, 100*float64(spread[k])/float64(max(total, 1))))
	}
	return strings.Join(parts, " ")
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
