package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Scenario names (bench/README.md, "Scenarios").
const (
	ScenarioOverhead        = "overhead"
	ScenarioReadScaling     = "read-scaling"
	ScenarioFailover        = "failover"
	ScenarioConsistencyCost = "consistency-cost"
)

// Scenarios lists the scenario names, for usage text.
var Scenarios = []string{ScenarioOverhead, ScenarioReadScaling, ScenarioFailover, ScenarioConsistencyCost}

// RunScenario runs the scenario called name against base.Targets; o is
// used by consistency-cost only.
func RunScenario(ctx context.Context, name string, base Config, o ConsistencyCostOptions) (*ScenarioReport, error) {
	switch name {
	case ScenarioOverhead:
		return Overhead(ctx, base)
	case ScenarioReadScaling:
		return ReadScaling(ctx, base)
	case ScenarioFailover:
		return Failover(ctx, base)
	case ScenarioConsistencyCost:
		return ConsistencyCost(ctx, base, o)
	}
	return nil, usageErr("scenario", fmt.Sprintf("unknown scenario %q (one of %s)", name, strings.Join(Scenarios, ", ")))
}

// ScenarioRun is one benchmark run inside a scenario.
type ScenarioRun struct {
	Label  string  `json:"label"`
	Report *Report `json:"report"`
}

// ScenarioReport is a scenario's runs plus the table that answers its
// question, and its headline numbers.
type ScenarioReport struct {
	Scenario string             `json:"scenario"`
	Runs     []ScenarioRun      `json:"runs"`
	Columns  []string           `json:"columns"`
	Rows     [][]string         `json:"rows"`
	Findings map[string]float64 `json:"findings"`
	Notes    []string           `json:"notes,omitempty"`
}

// WriteTable writes the scenario's summary table and findings.
func (s *ScenarioReport) WriteTable(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("scenario %s\n\n", s.Scenario)
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(s.Columns, "\t")+"\t")
	for _, r := range s.Rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
	if len(s.Findings) > 0 {
		ew.printf("\n")
		keys := make([]string, 0, len(s.Findings))
		for k := range s.Findings {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			ew.printf("%s: %.4g\n", k, s.Findings[k])
		}
	}
	for _, n := range s.Notes {
		ew.printf("note: %s\n", n)
	}
	return ew.err
}

// WriteJSON writes the scenario report as indented JSON.
func (s *ScenarioReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// Overhead measures the proxy against the cluster behind it (and,
// optionally, other front ends such as HAProxy over the same cluster) in
// alternating rounds. base.Targets must be [proxy, direct, others...], all
// fronting one cluster; the collection is set up once, through the first.
func Overhead(ctx context.Context, base Config) (*ScenarioReport, error) {
	if len(base.Targets) < 2 {
		return nil, usageErr("compare", "overhead needs the proxy (--target) and the cluster directly (--compare)")
	}
	cfg := base
	if cfg.Workload == "" {
		cfg.Workload = WorkloadSearch
	}
	if cfg.Setup == "" {
		cfg.Setup = SetupFirst
	}
	rep, err := Run(ctx, cfg)
	if rep == nil {
		return nil, err
	}
	s := &ScenarioReport{
		Scenario: ScenarioOverhead,
		Runs:     []ScenarioRun{{Label: "overhead", Report: rep}},
		Findings: map[string]float64{},
	}
	if len(rep.Targets) < 2 { // interrupted before the direct target ran
		return s, err
	}
	// Everything relative to the cluster itself: Targets[1].
	direct := rep.Targets[1]
	s.Columns = []string{"target", "ops/s", "p50 ms", "p99 ms", "errors", "ops/s vs " + direct.Name, "p50 added ms", "p99 added ms"}
	for i, t := range rep.Targets {
		s.Rows = append(s.Rows, []string{t.Name, f0(t.Throughput), f3(t.Latency.P50), f3(t.Latency.P99), fmt.Sprint(t.Errors),
			fx(safeDiv(t.Throughput, direct.Throughput)), f3(t.Latency.P50 - direct.Latency.P50), f3(t.Latency.P99 - direct.Latency.P99)})
		if i == 1 {
			continue
		}
		s.Findings["throughput_ratio_"+t.Name] = safeDiv(t.Throughput, direct.Throughput)
		s.Findings["p50_added_ms_"+t.Name] = t.Latency.P50 - direct.Latency.P50
		s.Findings["p99_added_ms_"+t.Name] = t.Latency.P99 - direct.Latency.P99
	}
	return s, err
}

// ReadScaling measures Eventually searches through proxies over 1, 2, 3…
// clusters of fixed capacity: base.Targets[i] is the proxy over i+1
// clusters, each set up through itself. Throughput should grow with the
// number of clusters.
func ReadScaling(ctx context.Context, base Config) (*ScenarioReport, error) {
	if len(base.Targets) < 2 {
		return nil, usageErr("compare", "read-scaling needs the proxy over 1 cluster (--target) and over more (--compare)")
	}
	cfg := base
	if cfg.Workload == "" {
		cfg.Workload = WorkloadSearch
	}
	if cfg.Consistency == "" {
		cfg.Consistency = Eventually
	}
	rep, err := Run(ctx, cfg)
	if rep == nil {
		return nil, err
	}
	s := &ScenarioReport{
		Scenario: ScenarioReadScaling,
		Runs:     []ScenarioRun{{Label: "read-scaling", Report: rep}},
		Columns:  []string{"target", "clusters serving reads", "ops/s", "speedup", "p50 ms", "p99 ms", "errors"},
		Findings: map[string]float64{},
	}
	first := rep.Targets[0]
	for i, t := range rep.Targets {
		sp := safeDiv(t.Throughput, first.Throughput)
		s.Rows = append(s.Rows, []string{t.Name, fmt.Sprint(len(t.ReadsByCluster)), f0(t.Throughput), fx(sp),
			f3(t.Latency.P50), f3(t.Latency.P99), fmt.Sprint(t.Errors)})
		if i > 0 {
			s.Findings[fmt.Sprintf("speedup_%s_vs_%s", t.Name, first.Name)] = sp
		}
	}
	return s, err
}

// Failover runs a mixed Session load (unless base says otherwise) through
// the proxy while base.Faults kill the leader, and reports how long writes
// and reads had no success, the leader changes seen, errors and
// read-your-writes misses.
func Failover(ctx context.Context, base Config) (*ScenarioReport, error) {
	if len(base.Faults) == 0 {
		return nil, usageErr("fault-at", "failover needs a fault (--fault-at with --fault-post or --fault-kill)")
	}
	cfg := base
	if cfg.Workload == "" {
		cfg.Workload = WorkloadMixed
	}
	if cfg.Consistency == "" {
		cfg.Consistency = Session
	}
	rep, err := Run(ctx, cfg)
	if rep == nil {
		return nil, err
	}
	s := &ScenarioReport{
		Scenario: ScenarioFailover,
		Runs:     []ScenarioRun{{Label: "failover", Report: rep}},
		Columns:  []string{"target", "ops/s", "p99 ms", "max ms", "errors", "write gap s", "read gap s", "leader changes", "session misses"},
		Findings: map[string]float64{},
	}
	for _, t := range rep.Targets {
		wg, rg := "-", "-"
		if t.WriteGap != nil {
			wg = f3(t.WriteGap.S)
			s.Findings["write_gap_s"] = t.WriteGap.S
		}
		if t.ReadGap != nil {
			rg = f3(t.ReadGap.S)
			s.Findings["read_gap_s"] = t.ReadGap.S
		}
		var changes []string
		for _, lc := range t.LeaderChanges {
			changes = append(changes, fmt.Sprintf("%s->%s@%.1fs", lc.From, lc.To, lc.At))
		}
		misses := "-"
		if t.Verify != nil {
			misses = fmt.Sprintf("%d/%d", t.Verify.Misses, t.Verify.Checks)
			s.Findings["session_misses"] = float64(t.Verify.Misses)
		}
		s.Rows = append(s.Rows, []string{t.Name, f0(t.Throughput), f3(t.Latency.P99), f3(t.Latency.Max), fmt.Sprint(t.Errors),
			wg, rg, orDash(strings.Join(changes, " ")), misses})
		s.Findings["leader_changes"] = float64(len(t.LeaderChanges))
	}
	for _, f := range rep.Faults {
		if f.Error != "" {
			s.Notes = append(s.Notes, fmt.Sprintf("fault %q failed: %s", f.Name, f.Error))
		}
	}
	return s, err
}

// ConsistencyCostOptions are the knobs of ConsistencyCost.
type ConsistencyCostOptions struct {
	Levels []Consistency   // default all five
	Lags   []time.Duration // default 0, 100ms, 1s
	// SetLag sets the replication delay of every alternative.
	SetLag func(ctx context.Context, d time.Duration) error
	// Leader is the leader's cluster id, to tell alternative reads from
	// leader reads; "" learns it from the writes' cluster header.
	Leader string
}

// ConsistencyCost runs the same load at each consistency level under each
// replication lag and reports which share of reads went to alternatives.
// base.Targets[0] is the proxy; the collection is set up in the first run
// only.
func ConsistencyCost(ctx context.Context, base Config, o ConsistencyCostOptions) (*ScenarioReport, error) {
	if o.SetLag == nil {
		return nil, usageErr("admin", "consistency-cost needs a way to set the replication lag (--admin with --alternatives)")
	}
	if len(o.Levels) == 0 {
		o.Levels = Consistencies
	}
	if len(o.Lags) == 0 {
		o.Lags = []time.Duration{0, 100 * time.Millisecond, time.Second}
	}
	cfg := base
	cfg.Targets = base.Targets[:1]
	if cfg.Workload == "" {
		// Writes in the mix make Session and Strong differ from Eventually.
		cfg.Workload = WorkloadMixed
	}
	s := &ScenarioReport{
		Scenario: ScenarioConsistencyCost,
		Columns:  []string{"lag", "level", "ops/s", "p50 ms", "p99 ms", "errors", "reads on alternatives", "session misses"},
		Findings: map[string]float64{},
	}
	setupDone := false
	learned := ""
	defer func() {
		// Leave the clusters as we found them: no artificial lag.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_ = o.SetLag(cctx, 0)
		cancel()
	}()
	for _, lag := range o.Lags {
		if err := o.SetLag(ctx, lag); err != nil {
			return s, fmt.Errorf("setting replication lag %s: %w", lag, err)
		}
		for _, lvl := range o.Levels {
			c := cfg
			c.Consistency = lvl
			if setupDone {
				c.Setup = SetupNone
			}
			rep, err := Run(ctx, c)
			if rep == nil {
				return s, fmt.Errorf("lag %s, %s: %w", lag, lvl, err)
			}
			setupDone = true
			label := fmt.Sprintf("lag=%s level=%s", lag, lvl)
			s.Runs = append(s.Runs, ScenarioRun{Label: label, Report: rep})
			t := rep.Targets[0]
			// The leader as the writes saw it, remembered across runs (a
			// short run may have drawn no write).
			if l := busiest(t.WritesByCluster); l != "" && o.Leader == "" {
				learned = l
			}
			leader := o.Leader
			if leader == "" {
				leader = learned
			}
			share := t.ReadShare(leader)
			misses := "-"
			if t.Verify != nil {
				misses = fmt.Sprintf("%d/%d", t.Verify.Misses, t.Verify.Checks)
			}
			s.Rows = append(s.Rows, []string{lag.String(), string(lvl), f0(t.Throughput), f3(t.Latency.P50), f3(t.Latency.P99),
				fmt.Sprint(t.Errors), fmt.Sprintf("%.1f%%", 100*share), misses})
			s.Findings[fmt.Sprintf("alt_share_%s_%s", lvl, lag)] = share
			if leader == "" {
				s.Notes = appendOnce(s.Notes, "leader unknown (no writes and no --leader): reads on alternatives count every cluster")
			}
			if err != nil {
				return s, err
			}
		}
	}
	return s, nil
}

// AdminTopology reads the leader and the alternatives from the proxy's
// admin API.
func AdminTopology(ctx context.Context, adminURL string) (leader string, alternatives []string, err error) {
	u := strings.TrimRight(adminURL, "/") + "/api/v1/topology"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	var doc struct {
		Leader   string `json:"leader"`
		Clusters []struct {
			ID   string `json:"id"`
			Role string `json:"role"`
		} `json:"clusters"`
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return "", nil, fmt.Errorf("GET %s: decoding: %w", u, err)
	}
	for _, c := range doc.Clusters {
		if c.Role == "alternative" {
			alternatives = append(alternatives, c.ID)
		}
		if c.Role == "leader" && doc.Leader == "" {
			doc.Leader = c.ID
		}
	}
	return doc.Leader, alternatives, nil
}

// SimLagSetter sets the replication delay of the given clusters through
// the simulator's fault controls (`demo`'s admin port or a `sim
// --control` address): POST {base}/sim/{id}/replication/delay?d=D.
func SimLagSetter(base string, ids []string) func(ctx context.Context, d time.Duration) error {
	base = strings.TrimRight(base, "/")
	return func(ctx context.Context, d time.Duration) error {
		for _, id := range ids {
			u := fmt.Sprintf("%s/sim/%s/replication/delay?d=%s", base, url.PathEscape(id), url.QueryEscape(d.String()))
			if err := HTTPPost(u, "")(ctx); err != nil {
				return err
			}
		}
		return nil
	}
}

func busiest(m map[string]uint64) string {
	best, n := "", uint64(0)
	for k, v := range m {
		if v > n || (v == n && k < best) {
			best, n = k, v
		}
	}
	return best
}

func appendOnce(xs []string, s string) []string {
	for _, x := range xs {
		if x == s {
			return xs
		}
	}
	return append(xs, s)
}

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func f0(v float64) string { return fmt.Sprintf("%.0f", v) }
func f3(v float64) string { return fmt.Sprintf("%.3f", v) }
func fx(v float64) string { return fmt.Sprintf("%.3fx", v) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
