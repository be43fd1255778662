package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/bench"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/bench/lab"
)

const benchSynopsis = `bench --target [NAME=]ADDR [--compare [NAME=]ADDR[,...]]
       --workload search|query|insert|upsert|mixed [--read-ratio 0.9]
       --consistency strong|session|bounded|eventually|customized
       --concurrency N (--duration D | --ops N) [--out FILE.json] [--plot FILE.png]
   or: milvus-ha-proxy bench --scenario overhead|read-scaling|failover|consistency-cost [--target ...]`

const benchAbout = `Drives the Milvus API (raw gRPC) against the proxy, a cluster directly, or
both in alternating rounds with the same seed (--compare), after setting up
the collection (create, index, load, preload; timed separately). Prints a
table; --out writes the same as JSON, --plot a PNG of throughput and p99
per second with leader changes marked, and both print where they wrote.`

// runBench is the bench subcommand.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, benchSynopsis, benchAbout)
	var (
		target      = fs.String("target", "", "Milvus API endpoint to measure, `[NAME=]ADDR` (required)")
		compare     = fs.String("compare", "", "other endpoints measured in alternating rounds, comma-separated `[NAME=]ADDR`s")
		workload    = fs.String("workload", "", "search, query, insert, upsert or mixed (required)")
		readRatio   = fs.Float64("read-ratio", 0.9, "mixed: share of operations that are searches")
		consistency = fs.String("consistency", "bounded", "strong, session, bounded, eventually or customized")
		concurrency = fs.Int("concurrency", 8, "workers (closed-loop clients, one Milvus session each) per target")
		duration    = fs.Duration("duration", 0, "measured time per target (or --ops)")
		ops         = fs.Int64("ops", 0, "measured operations per target (or --duration)")
		rounds      = fs.Int("rounds", 0, "rounds the measurement is split in, alternating targets (default 1, or 4 with --compare)")
		warmup      = fs.Duration("warmup", 0, "unrecorded load per target before measuring")
		conns       = fs.Int("conns", 1, "gRPC connections per target; workers are spread over them")
		dim         = fs.Int("dim", 0, "vector dimension (default 128, or the --fvecs file's)")
		preload     = fs.Int("preload", 10000, "rows inserted during setup")
		fvecs       = fs.String("fvecs", "", "load vectors from this .fvecs `FILE` instead of the seeded generator")
		topk        = fs.Int("topk", 10, "search limit")
		nq          = fs.Int("nq", 1, "query vectors per search")
		batch       = fs.Int("batch", 1, "rows per insert or upsert")
		seed        = fs.Uint64("seed", 1, "seed of the data, query and operation streams")
		collection  = fs.String("collection", "", "collection `NAME` (default bench_<dim>); dropped and recreated by setup")
		setupMode   = fs.String("setup", "each", "where to set up the collection: each target, first (targets front the same cluster) or none")
		index       = fs.String("index", "AUTOINDEX", "index_type of the vector index (AUTOINDEX, FLAT, HNSW, IVF_FLAT, ...)")
		metric      = fs.String("metric", "L2", "metric_type: L2, IP or COSINE")
		shards      = fs.Int("shards", 1, "shards_num of the collection")
		verifyEvery = fs.Int("verify-every", 10, "after every Nth insert of a worker, read the row back (strong/session/customized; -1: never)")
		opTimeout   = fs.Duration("op-timeout", 10*time.Second, "deadline of each call")
		out         = fs.String("out", "", "write the report as JSON to `FILE`")
		plotFile    = fs.String("plot", "", "write a PNG plot to `FILE`")
		token       = fs.String("token", "", "Milvus token (user:password or API key); default $MILVUS_TOKEN")
		admin       = fs.String("admin", "", "proxy admin `URL`, polled for leader changes (/api/v1/topology)")
		faultAt     = fs.Duration("fault-at", 0, "when to inject the --fault-post fault, after measurement starts")
		faultPost   = fs.String("fault-post", "", "`URL` to POST at --fault-at (e.g. a sim control or the admin failover endpoint)")
		faultBody   = fs.String("fault-body", "", "JSON body of the --fault-post request")
		faultKill   = fs.Int("fault-kill", 0, "`PID` to SIGKILL at --fault-at (a `sim` process: the leader dies)")
		scenario    = fs.String("scenario", "", "run a scenario: overhead, read-scaling, failover or consistency-cost; without --target on clusters and a proxy it starts itself (see bench/README.md)")
		alts        = fs.String("alternatives", "", "consistency-cost: clusters whose replication lag to set, `ID[=CONTROL_URL],...` (default: the --admin topology's alternatives, controlled through --admin)")
		lags        = fs.String("lags", "0s,100ms,1s", "consistency-cost: replication lags to measure under")
		levels      = fs.String("levels", "strong,session,bounded,eventually,customized", "consistency-cost: levels to measure")
		leader      = fs.String("leader", "", "consistency-cost: the leader's cluster id (default: learned from the writes' header)")
		simCap      = fs.Int("sim-capacity", 0, "in-process read-scaling: searches each simulated cluster serves at once (default 2)")
		simLat      = fs.Duration("sim-min-latency", 0, "in-process read-scaling: least time each search takes on a simulated cluster (default 10ms)")
		noHAProxy   = fs.Bool("no-haproxy", false, "in-process overhead: do not add HAProxy as a third target even when it is on PATH")
		progress    = fs.Bool("progress", false, "print progress lines even when stderr is not a terminal")
		verbose     = fs.Bool("v", false, "log setup steps to stderr")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // flag has printed the error, naming the flag, and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	usageFail := func(err error) int {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := bench.Config{
		ReadRatio:   *readRatio,
		Concurrency: *concurrency,
		Duration:    *duration,
		Ops:         *ops,
		Rounds:      *rounds,
		Warmup:      *warmup,
		Conns:       *conns,
		Dim:         *dim,
		Preload:     *preload,
		TopK:        *topk,
		NQ:          *nq,
		Batch:       *batch,
		Seed:        *seed,
		Collection:  *collection,
		Setup:       bench.SetupMode(*setupMode),
		Index:       *index,
		Metric:      strings.ToUpper(*metric),
		Shards:      *shards,
		VerifyEvery: *verifyEvery,
		OpTimeout:   *opTimeout,
		Token:       *token,
		AdminURL:    *admin,
	}
	if cfg.Token == "" {
		cfg.Token = os.Getenv("MILVUS_TOKEN")
	}
	// Flags whose zero value would silently mean "default" in bench.Config
	// are checked here, where "0" is what the user typed.
	for _, c := range []struct {
		name string
		v    int
	}{{"concurrency", *concurrency}, {"conns", *conns}, {"topk", *topk}, {"nq", *nq}, {"batch", *batch}, {"shards", *shards}} {
		if c.v <= 0 {
			return usageFail(fmt.Errorf("--%s: must be positive", c.name))
		}
	}
	if *verifyEvery == 0 {
		return usageFail(errors.New("--verify-every: must be positive, or -1 for never"))
	}
	if *readRatio <= 0 && *workload == "mixed" {
		return usageFail(errors.New("--read-ratio: must be in (0, 1]; use --workload insert for writes only"))
	}
	if *opTimeout <= 0 {
		return usageFail(errors.New("--op-timeout: must be positive"))
	}
	var err error
	switch *scenario {
	case "":
		if *workload == "" {
			return usageFail(errors.New("--workload: required (" + joinWorkloads() + ")"))
		}
	case bench.ScenarioOverhead, bench.ScenarioReadScaling, bench.ScenarioFailover, bench.ScenarioConsistencyCost:
		// A scenario picks its own workload, level, setup and concurrency
		// unless told.
		if !set["setup"] {
			cfg.Setup = ""
		}
		if !set["concurrency"] {
			cfg.Concurrency = 0
		}
		// A small collection keeps the backend's CPU out of the
		// measurement (on loopback the clusters share this machine).
		if !set["dim"] && !set["fvecs"] {
			cfg.Dim = 32
		}
		if !set["preload"] {
			cfg.Preload = 1000
		}
	default:
		return usageFail(fmt.Errorf("--scenario: unknown scenario %q (one of %s)", *scenario, strings.Join(bench.Scenarios, ", ")))
	}
	if *workload != "" {
		if cfg.Workload, err = bench.ParseWorkload(*workload); err != nil {
			return usageFail(err)
		}
	}
	if *scenario == "" || set["consistency"] {
		if cfg.Consistency, err = bench.ParseConsistency(*consistency); err != nil {
			return usageFail(err)
		}
	}
	// A scenario without --target starts its own clusters and proxy.
	inproc := *scenario != "" && *target == ""
	switch {
	case inproc:
		for _, f := range []string{"compare", "admin", "alternatives", "leader", "fault-post", "fault-kill", "fault-body"} {
			if set[f] {
				return usageFail(fmt.Errorf("--%s: only with --target (the in-process scenario runs its own clusters)", f))
			}
		}
	case *target == "":
		return usageFail(errors.New("--target: required"))
	default:
		for _, f := range []string{"sim-capacity", "sim-min-latency", "no-haproxy"} {
			if set[f] {
				return usageFail(fmt.Errorf("--%s: only for in-process scenarios (without --target)", f))
			}
		}
		t, err := bench.ParseTarget(*target)
		if err != nil {
			return usageFail(fmt.Errorf("--target: %w", err))
		}
		cfg.Targets = append(cfg.Targets, t)
	}
	if *simCap < 0 || *simLat < 0 {
		return usageFail(errors.New("--sim-capacity: capacity and latency must not be negative"))
	}
	if *compare != "" {
		for _, s := range strings.Split(*compare, ",") {
			t, err := bench.ParseTarget(strings.TrimSpace(s))
			if err != nil {
				return usageFail(fmt.Errorf("--compare: %w", err))
			}
			cfg.Targets = append(cfg.Targets, t)
		}
	}
	if *faultPost != "" && *faultKill != 0 {
		return usageFail(errors.New("--fault-kill: give --fault-post or --fault-kill, not both"))
	}
	if !inproc && (*faultPost == "" && *faultKill == 0) != (*faultAt == 0) {
		return usageFail(errors.New("--fault-at: --fault-at goes with --fault-post or --fault-kill"))
	}
	if *faultAt < 0 {
		return usageFail(errors.New("--fault-at: must not be negative"))
	}
	if *faultKill < 0 || *faultKill == os.Getpid() {
		return usageFail(errors.New("--fault-kill: not a process to kill"))
	}
	if *faultPost != "" {
		cfg.Faults = append(cfg.Faults, bench.Fault{At: *faultAt, Name: "POST " + *faultPost, Do: bench.HTTPPost(*faultPost, *faultBody)})
	}
	if *faultKill != 0 {
		cfg.Faults = append(cfg.Faults, bench.Fault{At: *faultAt, Name: fmt.Sprintf("kill -9 %d", *faultKill), Do: killProcess(*faultKill)})
	}
	if err := checkOutputPath("out", *out); err != nil {
		return usageFail(err)
	}
	if err := checkOutputPath("plot", *plotFile); err != nil {
		return usageFail(err)
	}
	if *fvecs != "" {
		limit := 0
		if *preload > 0 {
			limit = *preload + 1024 // the preload plus a pool to draw queries from
		}
		vecs, err := bench.ReadFvecsFile(*fvecs, limit)
		if err != nil {
			return usageFail(fmt.Errorf("--fvecs: %w", err))
		}
		cfg.Vectors = vecs
	}
	if *scenario == "" {
		if err := cfg.Validate(); err != nil {
			return usageFail(err)
		}
	} else {
		// Validate with the scenario's defaults standing in for unset
		// fields, so flag errors still exit 2 before anything runs.
		probe := cfg
		if probe.Workload == "" {
			probe.Workload = bench.WorkloadSearch
		}
		if inproc {
			probe.Targets = []bench.Target{{Addr: "in-process"}}
		}
		if err := probe.Validate(); err != nil {
			return usageFail(err)
		}
	}
	var ccOpts bench.ConsistencyCostOptions
	if inproc && *scenario == bench.ScenarioConsistencyCost {
		// Only the levels and lags: the lab sets the lag itself.
		if ccOpts.Levels, ccOpts.Lags, err = bench.ParseLevelsLags(*levels, *lags); err != nil {
			return usageFail(err)
		}
	} else if *scenario == bench.ScenarioConsistencyCost {
		if ccOpts, err = bench.ConsistencyCostFromFlags(ctx, *admin, *alts, *lags, *levels, *leader); err != nil {
			if bench.IsUsageError(err) {
				return usageFail(err)
			}
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
	}

	if f, ok := stderr.(*os.File); ok && isTerminal(f) {
		cfg.Progress, cfg.ProgressTTY = stderr, true
	} else if *progress {
		cfg.Progress = stderr
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if inproc {
		run := func(ctx context.Context) (*bench.ScenarioReport, error) {
			return lab.Run(ctx, *scenario, cfg, lab.ScenarioOptions{
				Capacity: *simCap, MinLatency: *simLat, FaultAt: *faultAt, SkipHAProxy: *noHAProxy,
				Levels: ccOpts.Levels, Lags: ccOpts.Lags,
				Logger: cfg.Logger,
			})
		}
		return runScenario(ctx, run, *out, *plotFile, stdout, stderr)
	}
	if *scenario != "" {
		run := func(ctx context.Context) (*bench.ScenarioReport, error) {
			switch *scenario {
			case bench.ScenarioOverhead:
				return bench.Overhead(ctx, cfg)
			case bench.ScenarioReadScaling:
				return bench.ReadScaling(ctx, cfg)
			case bench.ScenarioFailover:
				return bench.Failover(ctx, cfg)
			default:
				return bench.ConsistencyCost(ctx, cfg, ccOpts)
			}
		}
		return runScenario(ctx, run, *out, *plotFile, stdout, stderr)
	}

	rep, runErr := bench.Run(ctx, cfg)
	if rep == nil {
		if bench.IsUsageError(runErr) {
			return usageFail(runErr)
		}
		fmt.Fprintf(stderr, "bench: %v\n", runErr)
		return 1
	}
	code := 0
	if runErr != nil {
		fmt.Fprintf(stderr, "bench: %v (partial report follows)\n", runErr)
		code = 1
	}
	if err := rep.WriteTable(stdout); err != nil {
		fmt.Fprintf(stderr, "bench: writing the table: %v\n", err)
		code = 1
	}
	outputs := []output{{flag: "out", what: "JSON report", path: *out, write: rep.WriteJSON}}
	if *plotFile != "" {
		outputs = append(outputs, output{flag: "plot", what: "plot", path: *plotFile, write: rep.WritePlot})
	}
	return max(code, writeOutputs(stdout, stderr, outputs))
}

// output is one file bench writes: the JSON report (--out) or a plot
// (--plot).
type output struct {
	flag, what, path string
	write            func(io.Writer) error
}

// writeOutputs writes each output that has a path and prints where it went
// (absolute paths: a relative one is relative to a directory the reader
// may not know); with no --out and no --plot it says how to get them.
// It returns 1 when a file could not be written.
func writeOutputs(stdout, stderr io.Writer, outs []output) int {
	code, wrote := 0, false
	for _, o := range outs {
		if o.path == "" {
			continue
		}
		if err := writeFile(o.path, o.write); err != nil {
			fmt.Fprintf(stderr, "bench: --%s: %v\n", o.flag, err)
			code = 1
			continue
		}
		wrote = true
		where := o.path
		if abs, err := filepath.Abs(o.path); err == nil {
			where = abs
		}
		fmt.Fprintf(stdout, "wrote the %s to %s\n", o.what, where)
	}
	if !wrote && code == 0 {
		fmt.Fprintln(stdout, "(--out FILE.json saves this report as JSON, --plot FILE.png plots it)")
	}
	return code
}

// runScenario runs one of bench's scenarios (bench/README.md) and prints each run's table,
// then the scenario's summary.
func runScenario(ctx context.Context, run func(context.Context) (*bench.ScenarioReport, error), out, plotFile string, stdout, stderr io.Writer) int {
	s, err := run(ctx)
	if s == nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		if bench.IsUsageError(err) {
			return 2
		}
		return 1
	}
	code := 0
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v (partial results follow)\n", err)
		code = 1
	}
	for _, r := range s.Runs {
		fmt.Fprintf(stdout, "== %s\n", r.Label)
		if err := r.Report.WriteTable(stdout); err != nil {
			return 1
		}
		fmt.Fprintln(stdout)
	}
	if err := s.WriteTable(stdout); err != nil {
		return 1
	}
	outputs := []output{{flag: "out", what: "JSON report", path: out, write: s.WriteJSON}}
	if plotFile != "" {
		for i, r := range s.Runs {
			path, what := plotFile, "plot"
			if len(s.Runs) > 1 {
				ext := filepath.Ext(plotFile)
				path = fmt.Sprintf("%s-%d%s", strings.TrimSuffix(plotFile, ext), i+1, ext)
				what = "plot of " + r.Label
			}
			outputs = append(outputs, output{flag: "plot", what: what, path: path, write: r.Report.WritePlot})
		}
	}
	return max(code, writeOutputs(stdout, stderr, outputs))
}

// killProcess is the fault that kills a `sim` process the way a machine
// dies: SIGKILL, no chance to clean up.
func killProcess(pid int) func(context.Context) error {
	return func(context.Context) error {
		p, err := os.FindProcess(pid)
		if err != nil {
			return err
		}
		return p.Signal(syscall.SIGKILL)
	}
}

func joinWorkloads() string {
	s := make([]string, len(bench.Workloads))
	for i, w := range bench.Workloads {
		s[i] = string(w)
	}
	return strings.Join(s, ", ")
}

// checkOutputPath fails early, before a long run, when a result could not
// be written.
func checkOutputPath(flagName, path string) error {
	if path == "" {
		return nil
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("--%s: directory %s does not exist", flagName, dir)
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
