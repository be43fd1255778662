// Package bench is the benchmark harness behind `milvus-ha-proxy bench`: it
// drives the Milvus gRPC API (raw milvuspb, so the harness measures the
// server and not an SDK) against one or more targets, records latency
// histograms, errors by code, which cluster served each read (the
// x-milvus-ha-cluster response header) and whether Session reads saw their
// own writes, and renders the result as a table, JSON and a PNG plot.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// Workload names what the workers send.
type Workload string

// Workloads.
const (
	WorkloadSearch Workload = "search" // ANN search of a random query vector
	WorkloadQuery  Workload = "query"  // query by a random preloaded primary key
	WorkloadInsert Workload = "insert" // insert of new rows with unique keys
	WorkloadUpsert Workload = "upsert" // upsert of random preloaded keys
	WorkloadMixed  Workload = "mixed"  // search with ReadRatio, insert otherwise
)

// Workloads lists the valid workloads, for usage text.
var Workloads = []Workload{WorkloadSearch, WorkloadQuery, WorkloadInsert, WorkloadUpsert, WorkloadMixed}

// Consistency is the consistency level reads ask for.
type Consistency string

// Consistency levels, as Milvus names them.
const (
	Strong     Consistency = "strong"
	Session    Consistency = "session"
	Bounded    Consistency = "bounded"
	Eventually Consistency = "eventually"
	Customized Consistency = "customized"
)

// Consistencies lists the valid levels, for usage text.
var Consistencies = []Consistency{Strong, Session, Bounded, Eventually, Customized}

// SetupMode says on which targets the harness creates and fills the
// collection.
type SetupMode string

// Setup modes.
const (
	// SetupEach sets up every target: for targets that are different
	// clusters (or proxies over different clusters).
	SetupEach SetupMode = "each"
	// SetupFirst sets up only the first target: for targets that front the
	// same cluster (a proxy and that proxy's leader directly), where a
	// second drop-and-create would pull the collection from under the
	// proxy's caches.
	SetupFirst SetupMode = "first"
	// SetupNone uses the collection as it is (it must exist and be loaded).
	SetupNone SetupMode = "none"
)

// Target is one endpoint speaking the Milvus API.
type Target struct {
	Name string // label in reports; defaults to Addr
	Addr string // host:port
}

// Fault is an action the harness takes at a set time after measurement
// starts, such as killing the leader. Its outcome is recorded in the report
// and marked on the plot.
type Fault struct {
	At   time.Duration
	Name string
	Do   func(ctx context.Context) error
}

// Config is everything one benchmark run needs. Zero values take the
// defaults documented on each field (see Config.withDefaults).
type Config struct {
	// Targets are measured in turn; the first is the one ratios are about
	// (ratio = first / other).
	Targets []Target

	Workload    Workload
	ReadRatio   float64 // mixed: share of searches, (0, 1]; default 0.9
	Consistency Consistency

	Concurrency int           // workers per target; default 8
	Duration    time.Duration // measured time per target; or
	Ops         int64         // measured operations per target
	Rounds      int           // rounds the measurement is split in, alternating targets; default 1, or 4 with several targets
	Warmup      time.Duration // per target, before its first round, not recorded
	Conns       int           // gRPC connections per target, workers spread over them; default 1

	Collection string      // default "bench_<dim>"
	Dim        int         // default 128 (or the fvecs file's)
	Preload    int         // rows loaded during setup (and the key range of query and upsert)
	Vectors    [][]float32 // optional data set (from an .fvecs file); nil: seeded generator
	Seed       uint64      // generator and worker seed; default 1
	TopK       int         // search limit; default 10
	NQ         int         // query vectors per search; default 1
	Batch      int         // rows per insert/upsert; default 1
	Setup      SetupMode   // default SetupEach
	Index      string      // index_type; default "AUTOINDEX"
	Metric     string      // metric_type; default "L2"
	Shards     int         // shards_num; default 1

	// VerifyEvery makes every Nth successful insert of a worker followed by
	// a read of that row at the configured level, with the write's
	// timestamp as guarantee (Strong, Session and Customized only, where a
	// miss is a consistency violation). 0: default 10; negative: never.
	VerifyEvery int

	Token    string // sent as Milvus's authorization metadata; never logged
	AdminURL string // proxy admin base URL: polled for leader changes (/api/v1/topology)

	Faults []Fault

	// OpTimeout bounds each call; default 10s.
	OpTimeout time.Duration

	Progress    io.Writer // live progress line; nil: none
	ProgressTTY bool      // rewrite one line with \r instead of printing lines
	Logger      *slog.Logger
}

// Hard limits: the harness is bounded in time, operations and size.
const (
	MaxConcurrency = 1024      // the id layout has 10 bits for the worker
	MaxTargets     = 64        // and 6 for the target
	MaxDuration    = time.Hour // per target; also bounds each --ops phase
	MaxDim         = 32768
)

// Validate reports the first bad field, naming it as the command line does.
func (c *Config) Validate() error {
	for _, check := range []func() error{c.validateTargets, c.validateWorkload, c.validateLength, c.validateShape} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// validateTargets checks the targets: at least one, at most MaxTargets,
// each with an address and a name of its own.
func (c *Config) validateTargets() error {
	if len(c.Targets) == 0 {
		return usageErr("target", "at least one target is required")
	}
	if len(c.Targets) > MaxTargets {
		return usageErr("compare", fmt.Sprintf("at most %d targets", MaxTargets))
	}
	seen := map[string]bool{}
	for _, t := range c.Targets {
		if t.Addr == "" {
			return usageErr("target", "empty address")
		}
		name := t.label()
		if seen[name] {
			return usageErr("compare", fmt.Sprintf("target %q given twice", name))
		}
		seen[name] = true
	}
	return nil
}

// validateWorkload checks the workload, its read ratio, consistency level
// and concurrency.
func (c *Config) validateWorkload() error {
	switch c.Workload {
	case WorkloadSearch, WorkloadQuery, WorkloadInsert, WorkloadUpsert, WorkloadMixed:
	case "":
		return usageErr("workload", "required")
	default:
		return usageErr("workload", fmt.Sprintf("unknown workload %q", c.Workload))
	}
	if c.ReadRatio < 0 || c.ReadRatio > 1 {
		return usageErr("read-ratio", "must be in [0, 1]")
	}
	switch c.Consistency {
	case Strong, Session, Bounded, Eventually, Customized, "":
	default:
		return usageErr("consistency", fmt.Sprintf("unknown level %q", c.Consistency))
	}
	if c.Concurrency < 0 || c.Concurrency > MaxConcurrency {
		return usageErr("concurrency", fmt.Sprintf("must be in [1, %d]", MaxConcurrency))
	}
	return nil
}

// validateLength checks how long each target is measured: --duration or
// --ops, rounds and warm-up.
func (c *Config) validateLength() error {
	if (c.Duration > 0) == (c.Ops > 0) {
		return usageErr("duration", "exactly one of --duration and --ops must be set")
	}
	if c.Duration < 0 || c.Duration > MaxDuration {
		return usageErr("duration", fmt.Sprintf("must be in (0, %s]", MaxDuration))
	}
	if c.Ops < 0 {
		return usageErr("ops", "must be positive")
	}
	if c.Rounds < 0 || (c.Ops > 0 && int64(c.Rounds) > c.Ops) {
		return usageErr("rounds", "must be in [1, ops]")
	}
	if c.Warmup < 0 || c.Warmup > MaxDuration {
		return usageErr("warmup", "must not be negative")
	}
	return nil
}

// validateShape checks the rest: connections, the data (dimension,
// preload, topk, nq, batch), setup, collection, shards, timeouts and
// faults.
func (c *Config) validateShape() error {
	if c.Conns < 0 {
		return usageErr("conns", "must not be negative")
	}
	if c.Dim < 0 || c.Dim > MaxDim {
		return usageErr("dim", fmt.Sprintf("must be in [1, %d]", MaxDim))
	}
	if len(c.Vectors) > 0 && c.Dim > 0 && len(c.Vectors[0]) != c.Dim {
		return usageErr("dim", fmt.Sprintf("%d differs from the vectors' dimension %d", c.Dim, len(c.Vectors[0])))
	}
	if c.Preload < 0 {
		return usageErr("preload", "must not be negative")
	}
	if c.TopK < 0 || c.TopK > 16384 {
		return usageErr("topk", "must be in [1, 16384]")
	}
	if c.NQ < 0 || c.NQ > 16384 {
		return usageErr("nq", "must be in [1, 16384]")
	}
	if c.Batch < 0 || c.Batch > 100000 {
		return usageErr("batch", "must be in [1, 100000]")
	}
	switch c.Setup {
	case SetupEach, SetupFirst, SetupNone, "":
	default:
		return usageErr("setup", fmt.Sprintf("unknown mode %q (each, first or none)", c.Setup))
	}
	if c.Collection != "" && !validName(c.Collection) {
		return usageErr("collection", "letters, digits and underscores, starting with a letter or underscore, at most 255")
	}
	if c.Shards < 0 || c.Shards > 64 {
		return usageErr("shards", "must be in [1, 64]")
	}
	if c.OpTimeout < 0 {
		return usageErr("op-timeout", "must not be negative")
	}
	for _, f := range c.Faults {
		if f.At < 0 || f.Do == nil {
			return usageErr("fault-at", "a fault needs a non-negative time and an action")
		}
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// withDefaults returns a copy with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.ReadRatio == 0 {
		c.ReadRatio = 0.9
	}
	if c.Consistency == "" {
		c.Consistency = Bounded
	}
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.Rounds == 0 {
		c.Rounds = 1
		if len(c.Targets) > 1 {
			c.Rounds = 4
		}
	}
	if c.Ops > 0 && int64(c.Rounds) > c.Ops {
		c.Rounds = int(c.Ops)
	}
	if c.Conns == 0 {
		c.Conns = 1
	}
	if c.Conns > c.Concurrency {
		c.Conns = c.Concurrency
	}
	if c.Dim == 0 {
		c.Dim = 128
		if len(c.Vectors) > 0 {
			c.Dim = len(c.Vectors[0])
		}
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.TopK == 0 {
		c.TopK = 10
	}
	if c.NQ == 0 {
		c.NQ = 1
	}
	if c.Batch == 0 {
		c.Batch = 1
	}
	if c.Setup == "" {
		c.Setup = SetupEach
	}
	if c.Collection == "" {
		c.Collection = fmt.Sprintf("bench_%d", c.Dim)
	}
	if c.Index == "" {
		c.Index = "AUTOINDEX"
	}
	if c.Metric == "" {
		c.Metric = "L2"
	}
	if c.Shards == 0 {
		c.Shards = 1
	}
	if c.VerifyEvery == 0 {
		c.VerifyEvery = 10
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for i := range c.Targets {
		if c.Targets[i].Name == "" {
			c.Targets[i].Name = c.Targets[i].Addr
		}
	}
	return c
}

func (t Target) label() string {
	if t.Name != "" {
		return t.Name
	}
	return t.Addr
}

// UsageError is a bad configuration value; Flag names the command-line
// flag it came from, so the CLI can exit 2 naming it.
type UsageError struct {
	Flag string
	Msg  string
}

func (e *UsageError) Error() string { return "--" + e.Flag + ": " + e.Msg }

func usageErr(flag, msg string) error { return &UsageError{Flag: flag, Msg: msg} }

// IsUsageError reports whether err is (or wraps) a UsageError.
func IsUsageError(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}

// ParseWorkload checks a workload name.
func ParseWorkload(s string) (Workload, error) {
	w := Workload(strings.ToLower(s))
	for _, v := range Workloads {
		if v == w {
			return w, nil
		}
	}
	return "", usageErr("workload", fmt.Sprintf("unknown workload %q (one of %s)", s, joinNames(Workloads)))
}

// ParseConsistency checks a consistency level name.
func ParseConsistency(s string) (Consistency, error) {
	c := Consistency(strings.ToLower(s))
	for _, v := range Consistencies {
		if v == c {
			return c, nil
		}
	}
	return "", usageErr("consistency", fmt.Sprintf("unknown level %q (one of %s)", s, joinNames(Consistencies)))
}

func joinNames[T ~string](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}
