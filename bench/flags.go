package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// This file holds the `bench` command's flags and maps their values to this
// package's types, so the command only parses flags and runs; errors about
// a flag are *UsageError values naming it.

// Flags are the `bench` command's flags. Register binds them to a FlagSet;
// after it is parsed, Command checks them and says what to run.
type Flags struct {
	fs *flag.FlagSet // to learn which flags were given

	Target, Compare        string
	Workload, Consistency  string
	ReadRatio              float64
	Concurrency, Conns     int
	Duration, Warmup       time.Duration
	Ops                    int64
	Rounds                 int
	Dim, Preload           int
	Fvecs                  string
	TopK, NQ, Batch        int
	Seed                   uint64
	Collection, Setup      string
	Index, Metric          string
	Shards, VerifyEvery    int
	OpTimeout              time.Duration
	Out, Plot              string
	Token, Admin           string
	FaultAt                time.Duration
	FaultPost, FaultBody   string
	FaultKill              int
	Scenario, Alternatives string
	Lags, Levels, Leader   string
	SimCapacity            int
	SimMinLatency          time.Duration
	NoHAProxy              bool
	Progress, Verbose      bool
}

// Register defines the flags on fs with their defaults and help texts.
func (f *Flags) Register(fs *flag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.Target, "target", "", "Milvus API endpoint to measure, `[NAME=]ADDR` (required)")
	fs.StringVar(&f.Compare, "compare", "", "other endpoints measured in alternating rounds, comma-separated `[NAME=]ADDR`s")
	fs.StringVar(&f.Workload, "workload", "", "search, query, insert, upsert or mixed (required)")
	fs.Float64Var(&f.ReadRatio, "read-ratio", 0.9, "mixed: share of operations that are searches")
	fs.StringVar(&f.Consistency, "consistency", "bounded", "strong, session, bounded, eventually or customized")
	fs.IntVar(&f.Concurrency, "concurrency", 8, "workers (closed-loop clients, one Milvus session each) per target")
	fs.DurationVar(&f.Duration, "duration", 0, "measured time per target (or --ops)")
	fs.Int64Var(&f.Ops, "ops", 0, "measured operations per target (or --duration)")
	fs.IntVar(&f.Rounds, "rounds", 0, "rounds the measurement is split in, alternating targets (default 1, or 4 with --compare)")
	fs.DurationVar(&f.Warmup, "warmup", 0, "unrecorded load per target before measuring")
	fs.IntVar(&f.Conns, "conns", 1, "gRPC connections per target; workers are spread over them")
	fs.IntVar(&f.Dim, "dim", 0, "vector dimension (default 128, or the --fvecs file's)")
	fs.IntVar(&f.Preload, "preload", 10000, "rows inserted during setup")
	fs.StringVar(&f.Fvecs, "fvecs", "", "load vectors from this .fvecs `FILE` instead of the seeded generator")
	fs.IntVar(&f.TopK, "topk", 10, "search limit")
	fs.IntVar(&f.NQ, "nq", 1, "query vectors per search")
	fs.IntVar(&f.Batch, "batch", 1, "rows per insert or upsert")
	fs.Uint64Var(&f.Seed, "seed", 1, "seed of the data, query and operation streams")
	fs.StringVar(&f.Collection, "collection", "", "collection `NAME` (default bench_<dim>); dropped and recreated by setup")
	fs.StringVar(&f.Setup, "setup", "each", "where to set up the collection: each target, first (targets front the same cluster) or none")
	fs.StringVar(&f.Index, "index", "AUTOINDEX", "index_type of the vector index (AUTOINDEX, FLAT, HNSW, IVF_FLAT, ...)")
	fs.StringVar(&f.Metric, "metric", "L2", "metric_type: L2, IP or COSINE")
	fs.IntVar(&f.Shards, "shards", 1, "shards_num of the collection")
	fs.IntVar(&f.VerifyEvery, "verify-every", 10, "after every Nth insert of a worker, read the row back (strong/session/customized; -1: never)")
	fs.DurationVar(&f.OpTimeout, "op-timeout", 10*time.Second, "deadline of each call")
	fs.StringVar(&f.Out, "out", "", "write the report as JSON to `FILE`")
	fs.StringVar(&f.Plot, "plot", "", "write a PNG plot to `FILE`")
	fs.StringVar(&f.Token, "token", "", "Milvus token (user:password or API key); default $MILVUS_TOKEN")
	fs.StringVar(&f.Admin, "admin", "", "proxy admin `URL`, polled for leader changes (/api/v1/topology)")
	fs.DurationVar(&f.FaultAt, "fault-at", 0, "when to inject the --fault-post fault, after measurement starts")
	fs.StringVar(&f.FaultPost, "fault-post", "", "`URL` to POST at --fault-at (e.g. a sim control or the admin failover endpoint)")
	fs.StringVar(&f.FaultBody, "fault-body", "", "JSON body of the --fault-post request")
	fs.IntVar(&f.FaultKill, "fault-kill", 0, "`PID` to SIGKILL at --fault-at (a `sim` process: the leader dies)")
	fs.StringVar(&f.Scenario, "scenario", "", "run a scenario: overhead, read-scaling, failover or consistency-cost; without --target on clusters and a proxy it starts itself (see bench/README.md)")
	fs.StringVar(&f.Alternatives, "alternatives", "", "consistency-cost: clusters whose replication lag to set, `ID[=CONTROL_URL],...` (default: the --admin topology's alternatives, controlled through --admin)")
	fs.StringVar(&f.Lags, "lags", "0s,100ms,1s", "consistency-cost: replication lags to measure under")
	fs.StringVar(&f.Levels, "levels", "strong,session,bounded,eventually,customized", "consistency-cost: levels to measure")
	fs.StringVar(&f.Leader, "leader", "", "consistency-cost: the leader's cluster id (default: learned from the writes' header)")
	fs.IntVar(&f.SimCapacity, "sim-capacity", 0, "in-process read-scaling: searches each simulated cluster serves at once (default 2)")
	fs.DurationVar(&f.SimMinLatency, "sim-min-latency", 0, "in-process read-scaling: least time each search takes on a simulated cluster (default 10ms)")
	fs.BoolVar(&f.NoHAProxy, "no-haproxy", false, "in-process overhead: do not add HAProxy as a third target even when it is on PATH")
	fs.BoolVar(&f.Progress, "progress", false, "print progress lines even when stderr is not a terminal")
	fs.BoolVar(&f.Verbose, "v", false, "log setup steps to stderr")
}

// Command is what the flags ask the bench command to do: one measurement
// (Scenario empty) or a scenario, against Config.Targets or, InProcess, on
// clusters and a proxy the scenario starts itself.
type Command struct {
	Config    Config // Progress and Logger are left to the caller
	Scenario  string
	InProcess bool
	// ConsistencyCost: the levels and lags, and with targets the lag
	// controls, of the consistency-cost scenario.
	ConsistencyCost ConsistencyCostOptions
	// In-process scenarios only.
	SimCapacity   int
	SimMinLatency time.Duration
	SkipHAProxy   bool
	FaultAt       time.Duration

	Out, Plot         string // --out and --plot paths; empty: not asked for
	Progress, Verbose bool
}

// Command checks the parsed flags and builds the Command. Every error
// about a flag is a *UsageError naming it, found before anything runs;
// ctx bounds the one lookup that may happen here (the --admin topology of
// the consistency-cost scenario), whose failure is not a usage error.
func (f *Flags) Command(ctx context.Context) (Command, error) {
	set := map[string]bool{}
	if f.fs != nil {
		f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	}
	c := Command{
		Scenario: f.Scenario, SimCapacity: f.SimCapacity, SimMinLatency: f.SimMinLatency,
		SkipHAProxy: f.NoHAProxy, FaultAt: f.FaultAt,
		Out: f.Out, Plot: f.Plot, Progress: f.Progress, Verbose: f.Verbose,
	}
	var err error
	if c.Config, err = f.baseConfig(set); err != nil {
		return c, err
	}
	// A scenario without --target starts its own clusters and proxy.
	c.InProcess = f.Scenario != "" && f.Target == ""
	if err := f.addTargets(&c.Config, set, c.InProcess); err != nil {
		return c, err
	}
	if err := f.addFaults(&c.Config, c.InProcess); err != nil {
		return c, err
	}
	if err := checkOutputPath("out", f.Out); err != nil {
		return c, err
	}
	if err := checkOutputPath("plot", f.Plot); err != nil {
		return c, err
	}
	if f.Fvecs != "" {
		limit := 0
		if f.Preload > 0 {
			limit = f.Preload + 1024 // the preload plus a pool to draw queries from
		}
		if c.Config.Vectors, err = ReadFvecsFile(f.Fvecs, limit); err != nil {
			return c, &UsageError{Flag: "fvecs", Msg: err.Error()}
		}
	}
	if err := f.validate(c.Config, c.InProcess); err != nil {
		return c, err
	}
	switch {
	case f.Scenario != ScenarioConsistencyCost:
	case c.InProcess:
		// Only the levels and lags: the lab sets the lag itself.
		c.ConsistencyCost.Levels, c.ConsistencyCost.Lags, err = ParseLevelsLags(f.Levels, f.Lags)
	default:
		c.ConsistencyCost, err = ConsistencyCostFromFlags(ctx, f.Admin, f.Alternatives, f.Lags, f.Levels, f.Leader)
	}
	return c, err
}

// baseConfig maps the load and collection flags, and the scenario's own
// defaults where they were not given.
func (f *Flags) baseConfig(set map[string]bool) (Config, error) {
	cfg := Config{
		ReadRatio:   f.ReadRatio,
		Concurrency: f.Concurrency,
		Duration:    f.Duration,
		Ops:         f.Ops,
		Rounds:      f.Rounds,
		Warmup:      f.Warmup,
		Conns:       f.Conns,
		Dim:         f.Dim,
		Preload:     f.Preload,
		TopK:        f.TopK,
		NQ:          f.NQ,
		Batch:       f.Batch,
		Seed:        f.Seed,
		Collection:  f.Collection,
		Setup:       SetupMode(f.Setup),
		Index:       f.Index,
		Metric:      strings.ToUpper(f.Metric),
		Shards:      f.Shards,
		VerifyEvery: f.VerifyEvery,
		OpTimeout:   f.OpTimeout,
		Token:       f.Token,
		AdminURL:    f.Admin,
	}
	if cfg.Token == "" {
		cfg.Token = os.Getenv("MILVUS_TOKEN")
	}
	// Flags whose zero value would silently mean "default" in Config are
	// checked here, where "0" is what the user typed.
	for _, c := range []struct {
		name string
		v    int
	}{{"concurrency", f.Concurrency}, {"conns", f.Conns}, {"topk", f.TopK}, {"nq", f.NQ}, {"batch", f.Batch}, {"shards", f.Shards}} {
		if c.v <= 0 {
			return cfg, usageErr(c.name, "must be positive")
		}
	}
	if f.VerifyEvery == 0 {
		return cfg, usageErr("verify-every", "must be positive, or -1 for never")
	}
	if f.ReadRatio <= 0 && f.Workload == "mixed" {
		return cfg, usageErr("read-ratio", "must be in (0, 1]; use --workload insert for writes only")
	}
	if f.OpTimeout <= 0 {
		return cfg, usageErr("op-timeout", "must be positive")
	}
	switch f.Scenario {
	case "":
		if f.Workload == "" {
			return cfg, usageErr("workload", "required ("+joinNames(Workloads)+")")
		}
	case ScenarioOverhead, ScenarioReadScaling, ScenarioFailover, ScenarioConsistencyCost:
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
		return cfg, usageErr("scenario", fmt.Sprintf("unknown scenario %q (one of %s)", f.Scenario, strings.Join(Scenarios, ", ")))
	}
	var err error
	if f.Workload != "" {
		if cfg.Workload, err = ParseWorkload(f.Workload); err != nil {
			return cfg, err
		}
	}
	if f.Scenario == "" || set["consistency"] {
		if cfg.Consistency, err = ParseConsistency(f.Consistency); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// addTargets checks which flags go with where the scenario runs and adds
// --target and --compare.
func (f *Flags) addTargets(cfg *Config, set map[string]bool, inproc bool) error {
	switch {
	case inproc:
		for _, name := range []string{"compare", "admin", "alternatives", "leader", "fault-post", "fault-kill", "fault-body"} {
			if set[name] {
				return usageErr(name, "only with --target (the in-process scenario runs its own clusters)")
			}
		}
	case f.Target == "":
		return usageErr("target", "required")
	default:
		for _, name := range []string{"sim-capacity", "sim-min-latency", "no-haproxy"} {
			if set[name] {
				return usageErr(name, "only for in-process scenarios (without --target)")
			}
		}
		t, err := ParseTarget(f.Target)
		if err != nil {
			return usageErr("target", err.Error())
		}
		cfg.Targets = append(cfg.Targets, t)
	}
	if f.SimCapacity < 0 || f.SimMinLatency < 0 {
		return usageErr("sim-capacity", "capacity and latency must not be negative")
	}
	if f.Compare != "" {
		for _, s := range strings.Split(f.Compare, ",") {
			t, err := ParseTarget(strings.TrimSpace(s))
			if err != nil {
				return usageErr("compare", err.Error())
			}
			cfg.Targets = append(cfg.Targets, t)
		}
	}
	return nil
}

// addFaults checks --fault-at, --fault-post and --fault-kill and adds the
// fault they describe.
func (f *Flags) addFaults(cfg *Config, inproc bool) error {
	if f.FaultPost != "" && f.FaultKill != 0 {
		return usageErr("fault-kill", "give --fault-post or --fault-kill, not both")
	}
	if !inproc && (f.FaultPost == "" && f.FaultKill == 0) != (f.FaultAt == 0) {
		return usageErr("fault-at", "--fault-at goes with --fault-post or --fault-kill")
	}
	if f.FaultAt < 0 {
		return usageErr("fault-at", "must not be negative")
	}
	if f.FaultKill < 0 || f.FaultKill == os.Getpid() {
		return usageErr("fault-kill", "not a process to kill")
	}
	if f.FaultPost != "" {
		cfg.Faults = append(cfg.Faults, Fault{At: f.FaultAt, Name: "POST " + f.FaultPost, Do: HTTPPost(f.FaultPost, f.FaultBody)})
	}
	if f.FaultKill != 0 {
		cfg.Faults = append(cfg.Faults, Fault{At: f.FaultAt, Name: fmt.Sprintf("kill -9 %d", f.FaultKill), Do: KillProcess(f.FaultKill)})
	}
	return nil
}

// validate checks the whole Config; for a scenario, with the scenario's
// defaults standing in for unset fields, so flag errors still exit 2
// before anything runs.
func (f *Flags) validate(cfg Config, inproc bool) error {
	if f.Scenario == "" {
		return cfg.Validate()
	}
	if cfg.Workload == "" {
		cfg.Workload = WorkloadSearch
	}
	if inproc {
		cfg.Targets = []Target{{Addr: "in-process"}}
	}
	return cfg.Validate()
}

// checkOutputPath fails early, before a long run, when a result could not
// be written.
func checkOutputPath(flagName, path string) error {
	if path == "" {
		return nil
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return usageErr(flagName, fmt.Sprintf("directory %s does not exist", dir))
	}
	return nil
}

// ConsistencyCostFromFlags builds the lag controls: each alternative's
// replication delay is set through its control URL (the simulator's fault
// controls), by default the --admin URL of `demo`, where they live.
func ConsistencyCostFromFlags(ctx context.Context, admin, alts, lags, levels, leader string) (ConsistencyCostOptions, error) {
	var o ConsistencyCostOptions
	var err error
	if o.Levels, o.Lags, err = ParseLevelsLags(levels, lags); err != nil {
		return o, err
	}
	o.Leader = leader
	byURL := map[string][]string{}
	var order []string
	add := func(url, id string) {
		if _, ok := byURL[url]; !ok {
			order = append(order, url)
		}
		byURL[url] = append(byURL[url], id)
	}
	if alts == "" {
		if admin == "" {
			return o, &UsageError{Flag: "admin", Msg: "consistency-cost needs --admin (or --alternatives ID=CONTROL_URL,...)"}
		}
		l, ids, err := AdminTopology(ctx, admin)
		if err != nil {
			return o, fmt.Errorf("finding the alternatives: %w", err)
		}
		if len(ids) == 0 {
			return o, errors.New("the admin topology lists no alternatives")
		}
		if o.Leader == "" {
			o.Leader = l
		}
		for _, id := range ids {
			add(admin, id)
		}
	} else {
		for _, s := range strings.Split(alts, ",") {
			id, url, found := strings.Cut(strings.TrimSpace(s), "=")
			if !found {
				url = admin
			}
			if id == "" || url == "" {
				return o, &UsageError{Flag: "alternatives", Msg: fmt.Sprintf("%q: want ID=CONTROL_URL, or ID with --admin", s)}
			}
			add(url, id)
		}
	}
	setters := make([]func(context.Context, time.Duration) error, 0, len(order))
	for _, u := range order {
		setters = append(setters, SimLagSetter(u, byURL[u]))
	}
	o.SetLag = func(ctx context.Context, d time.Duration) error {
		for _, set := range setters {
			if err := set(ctx, d); err != nil {
				return err
			}
		}
		return nil
	}
	return o, nil
}

// ParseLevelsLags reads the comma-separated --levels (consistency levels)
// and --lags (non-negative durations) of the consistency-cost scenario.
func ParseLevelsLags(levels, lags string) ([]Consistency, []time.Duration, error) {
	var ls []Consistency
	var ds []time.Duration
	for _, s := range strings.Split(lags, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 {
			return nil, nil, &UsageError{Flag: "lags", Msg: fmt.Sprintf("bad duration %q", s)}
		}
		ds = append(ds, d)
	}
	for _, s := range strings.Split(levels, ",") {
		l, err := ParseConsistency(strings.TrimSpace(s))
		if err != nil {
			return nil, nil, &UsageError{Flag: "levels", Msg: err.Error()}
		}
		ls = append(ls, l)
	}
	return ls, ds, nil
}

// ParseTarget reads "[NAME=]ADDR".
func ParseTarget(s string) (Target, error) {
	name, addr, found := strings.Cut(s, "=")
	if !found {
		name, addr = "", s
	}
	if addr == "" || strings.ContainsAny(addr, " \t") {
		return Target{}, fmt.Errorf("bad endpoint %q (want [NAME=]HOST:PORT)", s)
	}
	if found && name == "" {
		return Target{}, fmt.Errorf("empty name in %q", s)
	}
	return Target{Name: name, Addr: addr}, nil
}
