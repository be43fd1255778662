package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// ReportVersion is bumped when the JSON shape changes incompatibly.
const ReportVersion = 1

// Report is the result of one run: what was asked, how setup went, and per
// target what was measured. It is what --out writes as JSON.
type Report struct {
	Version     int            `json:"version"`
	StartedAt   time.Time      `json:"started_at"`
	Config      ReportConfig   `json:"config"`
	Setup       []SetupTimes   `json:"setup"`
	Targets     []TargetReport `json:"targets"`
	Ratios      []Ratio        `json:"ratios,omitempty"`
	Faults      []FaultEvent   `json:"faults,omitempty"`
	ElapsedS    float64        `json:"elapsed_s"` // measurement, all targets and rounds
	Interrupted bool           `json:"interrupted,omitempty"`
}

// ReportConfig is the part of Config that defines the measurement.
type ReportConfig struct {
	Workload    Workload    `json:"workload"`
	ReadRatio   float64     `json:"read_ratio,omitempty"`
	Consistency Consistency `json:"consistency"`
	Concurrency int         `json:"concurrency"`
	Conns       int         `json:"conns"`
	DurationS   float64     `json:"duration_s,omitempty"`
	Ops         int64       `json:"ops,omitempty"`
	Rounds      int         `json:"rounds"`
	WarmupS     float64     `json:"warmup_s"`
	Collection  string      `json:"collection"`
	Dim         int         `json:"dim"`
	Preload     int         `json:"preload"`
	FileVectors int         `json:"file_vectors,omitempty"`
	Seed        uint64      `json:"seed"`
	TopK        int         `json:"topk"`
	NQ          int         `json:"nq"`
	Batch       int         `json:"batch"`
	Index       string      `json:"index"`
	Metric      string      `json:"metric"`
	Setup       SetupMode   `json:"setup"`
	VerifyEvery int         `json:"verify_every"`
}

// Latency summarizes a latency distribution, in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func latencyOf(h *Histogram) Latency {
	f := func(ns int64) float64 { return float64(ns) / 1e6 }
	return Latency{
		Count: h.Count(),
		Mean:  h.Mean() / 1e6,
		P50:   f(h.Quantile(0.5)),
		P90:   f(h.Quantile(0.9)),
		P99:   f(h.Quantile(0.99)),
		P999:  f(h.Quantile(0.999)),
		Max:   f(h.Max()),
	}
}

// OpReport is one kind of operation's share of a target's results.
type OpReport struct {
	OK         uint64  `json:"ok"`
	Errors     uint64  `json:"errors"`
	Throughput float64 `json:"throughput"` // successful ops per second
	Latency    Latency `json:"latency"`
}

// Verify counts the read-your-writes checks: reads, at the configured
// level, of a row the same session had just written. At Strong, Session
// and Customized every miss is a consistency violation.
type Verify struct {
	Level  Consistency `json:"level"`
	Checks uint64      `json:"checks"`
	Misses uint64      `json:"misses"`
	// Skipped counts checks not made because the write returned no
	// timestamp to ask for.
	Skipped uint64 `json:"skipped,omitempty"`
}

// Point is one second of a target's measurement.
type Point struct {
	T       float64 `json:"t_s"`      // start of the second, since measurement start
	ActiveS float64 `json:"active_s"` // how much of the second the target was measured
	OK      uint64  `json:"ok"`
	Errors  uint64  `json:"errors"`
	Rate    float64 `json:"rate"`   // successful calls per second measured: OK / ActiveS
	P99     float64 `json:"p99_ms"` // of that second's successful calls
}

// Gap is the longest interval without a successful operation of a class.
type Gap struct {
	S    float64 `json:"s"`
	EndS float64 `json:"end_s"` // when it ended, since measurement start
}

// TargetReport is what one target did.
type TargetReport struct {
	Name            string              `json:"name"`
	Addr            string              `json:"addr"`
	DurationS       float64             `json:"duration_s"` // measured time (sum of its rounds)
	Ops             uint64              `json:"ops"`        // completed calls, ok or not
	OK              uint64              `json:"ok"`
	Errors          uint64              `json:"errors"`
	Throughput      float64             `json:"throughput"` // successful calls per second
	Latency         Latency             `json:"latency"`    // every successful call
	ByOp            map[string]OpReport `json:"by_op"`
	ErrorsByCode    map[string]uint64   `json:"errors_by_code"`
	ErrorSamples    map[string]string   `json:"error_samples,omitempty"`
	ReadsByCluster  map[string]uint64   `json:"reads_by_cluster"`
	WritesByCluster map[string]uint64   `json:"writes_by_cluster"`
	Verify          *Verify             `json:"verify,omitempty"`
	LeaderChanges   []LeaderChange      `json:"leader_changes"`
	WriteGap        *Gap                `json:"write_gap,omitempty"`
	ReadGap         *Gap                `json:"read_gap,omitempty"`
	Timeline        []Point             `json:"timeline"`
}

// Ratio compares the first target with another: Target / Baseline.
type Ratio struct {
	Target     string  `json:"target"`
	Baseline   string  `json:"baseline"`
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
}

func (r *runner) report(setups []SetupTimes, elapsed time.Duration) *Report {
	cfg := r.cfg
	rep := &Report{
		Version:   ReportVersion,
		StartedAt: r.t0.UTC(),
		Config: ReportConfig{
			Workload: cfg.Workload, Consistency: cfg.Consistency,
			Concurrency: cfg.Concurrency, Conns: cfg.Conns,
			DurationS: cfg.Duration.Seconds(), Ops: cfg.Ops, Rounds: cfg.Rounds,
			WarmupS: cfg.Warmup.Seconds(), Collection: cfg.Collection, Dim: cfg.Dim,
			Preload: cfg.Preload, FileVectors: len(cfg.Vectors), Seed: cfg.Seed,
			TopK: cfg.TopK, NQ: cfg.NQ, Batch: cfg.Batch, Index: cfg.Index,
			Metric: cfg.Metric, Setup: cfg.Setup, VerifyEvery: cfg.VerifyEvery,
		},
		Setup:    setups,
		ElapsedS: elapsed.Seconds(),
	}
	if cfg.Workload == WorkloadMixed {
		rep.Config.ReadRatio = cfg.ReadRatio
	}
	if rep.Setup == nil {
		rep.Setup = []SetupTimes{}
	}
	for _, ts := range r.targets {
		if ts.rec == nil {
			continue
		}
		rep.Targets = append(rep.Targets, ts.rec.targetReport(ts.t, cfg))
	}
	for i := 1; i < len(rep.Targets); i++ {
		rep.Ratios = append(rep.Ratios, ratio(rep.Targets[0], rep.Targets[i]))
	}
	r.faultMu.Lock()
	rep.Faults = slices.Clone(r.faults)
	r.faultMu.Unlock()
	sort.Slice(rep.Faults, func(i, j int) bool { return rep.Faults[i].At < rep.Faults[j].At })
	return rep
}

func ratio(t, b TargetReport) Ratio {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	return Ratio{
		Target: t.Name, Baseline: b.Name,
		Throughput: div(t.Throughput, b.Throughput),
		P50:        div(t.Latency.P50, b.Latency.P50),
		P99:        div(t.Latency.P99, b.Latency.P99),
	}
}

func (r *recorder) targetReport(t Target, cfg *Config) TargetReport {
	active := time.Duration(r.active.Load())
	per := func(n uint64) float64 {
		if active <= 0 {
			return 0
		}
		return float64(n) / active.Seconds()
	}
	tr := TargetReport{
		Name: t.Name, Addr: t.Addr,
		DurationS:       active.Seconds(),
		ByOp:            map[string]OpReport{},
		ErrorsByCode:    r.codes.snapshot(),
		ReadsByCluster:  r.reads.snapshot(),
		WritesByCluster: r.writes.snapshot(),
		LeaderChanges:   []LeaderChange{},
		Timeline:        []Point{},
	}
	all := NewHistogram(precisionTotal)
	var wrote, read bool
	for k := range numOpKinds {
		h := r.hist[k]
		e := r.errs[k].Load()
		if h.Count() == 0 && e == 0 {
			continue
		}
		if k.isWrite() {
			wrote = true
		} else {
			read = true
		}
		all.Merge(h)
		tr.OK += h.Count()
		tr.Errors += e
		tr.ByOp[k.String()] = OpReport{OK: h.Count(), Errors: e, Throughput: per(h.Count()), Latency: latencyOf(h)}
	}
	tr.Ops = tr.OK + tr.Errors
	tr.Throughput = per(tr.OK)
	tr.Latency = latencyOf(all)
	r.sampleMu.Lock()
	if len(r.samples) > 0 {
		tr.ErrorSamples = maps.Clone(r.samples)
	}
	r.sampleMu.Unlock()
	if wrote && cfg.VerifyEvery > 0 && (cfg.Workload == WorkloadInsert || cfg.Workload == WorkloadMixed) {
		switch cfg.Consistency {
		case Strong, Session, Customized:
			tr.Verify = &Verify{Level: cfg.Consistency, Checks: r.verifyChecks.Load(), Misses: r.verifyMisses.Load(),
				Skipped: r.verifySkipped.Load()}
		}
	}
	r.leaderMu.Lock()
	tr.LeaderChanges = append(tr.LeaderChanges, r.leaderEvents...)
	r.leaderMu.Unlock()
	gap := func(g *gapTracker) *Gap {
		return &Gap{S: time.Duration(g.max.Load()).Seconds(), EndS: time.Duration(g.maxEnd.Load()).Seconds()}
	}
	if wrote {
		tr.WriteGap = gap(&r.writeGap)
	}
	if read {
		tr.ReadGap = gap(&r.readGap)
	}
	tr.Timeline = r.timeline(tr.Timeline)
	return tr
}

// timeline appends to tl a point for every second the target was
// measured, including seconds in which nothing completed: an outage must
// show as zeros, not as a line bridging it.
func (r *recorder) timeline(tl []Point) []Point {
	r.tl.mu.Lock()
	defer r.tl.mu.Unlock()
	r.phaseMu.Lock()
	last := 0.0
	for _, p := range r.phases {
		last = max(last, p[1])
	}
	r.phaseMu.Unlock()
	n := max(len(r.tl.secs), int(math.Ceil(last)))
	for i := range n {
		var s *second
		if i < len(r.tl.secs) {
			s = r.tl.secs[i]
		}
		active := r.activeIn(float64(i), float64(i+1))
		// Skip slivers (a phase that ends a few ms into a second): their
		// rate would be noise. Seconds with completions always count.
		if s == nil && active < 0.05 {
			continue
		}
		p := Point{T: float64(i), ActiveS: active}
		if s != nil {
			p.OK, p.Errors = s.ok.Load(), s.errs.Load()
			p.P99 = float64(s.lat.Quantile(0.99)) / 1e6
		}
		// A call can complete a hair after its phase's recorded end; the
		// floor keeps such a sliver from turning into an absurd rate.
		p.Rate = float64(p.OK) / max(p.ActiveS, 0.05)
		tl = append(tl, p)
	}
	return tl
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteTable writes the human-readable summary.
func (rep *Report) WriteTable(w io.Writer) error {
	ew := &errWriter{w: w}
	c := rep.Config
	what := string(c.Workload)
	if c.Workload == WorkloadMixed {
		what = fmt.Sprintf("mixed (%.0f%% search)", 100*c.ReadRatio)
	}
	limit := fmt.Sprintf("%gs", c.DurationS)
	if c.Ops > 0 {
		limit = fmt.Sprintf("%d ops", c.Ops)
	}
	ew.printf("workload %s, consistency %s, concurrency %d, %s per target in %d round(s), dim %d, %d rows preloaded\n",
		what, c.Consistency, c.Concurrency, limit, c.Rounds, c.Dim, c.Preload)
	if rep.Interrupted {
		ew.printf("INTERRUPTED: partial results\n")
	}
	ew.printf("\n")

	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\top\tok\terrors\tops/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\t")
	for _, t := range rep.Targets {
		row := func(op string, ok, errs uint64, tput float64, l Latency) {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n",
				t.Name, op, ok, errs, tput, l.P50, l.P90, l.P99, l.P999, l.Max)
		}
		row("all", t.OK, t.Errors, t.Throughput, t.Latency)
		if len(t.ByOp) > 1 {
			for _, op := range slices.Sorted(maps.Keys(t.ByOp)) {
				o := t.ByOp[op]
				row(op, o.OK, o.Errors, o.Throughput, o.Latency)
			}
		}
	}
	tw.Flush()

	for _, r := range rep.Ratios {
		ew.printf("\n%s / %s: throughput %.3fx, p50 %.3fx, p99 %.3fx\n", r.Target, r.Baseline, r.Throughput, r.P50, r.P99)
	}
	for i := range rep.Targets {
		writeTargetDetails(ew, &rep.Targets[i])
	}
	for _, f := range rep.Faults {
		status := "ok"
		if f.Error != "" {
			status = "FAILED: " + f.Error
		}
		ew.printf("\nfault %q at %.2fs: %s\n", f.Name, f.At, status)
	}
	if len(rep.Setup) > 0 {
		ew.printf("\nsetup (not measured):\n")
		for _, s := range rep.Setup {
			ew.printf("  %s: drop %.0fms, create %.0fms, index %.0fms, load %.0fms, preload %d rows in %.0fms (%.0f rows/s)\n",
				s.Target, s.DropMS, s.CreateMS, s.IndexMS, s.LoadMS, s.PreloadRows, s.PreloadMS, s.PreloadRowsS)
		}
	}
	return ew.err
}

// writeTargetDetails writes what one target's table row does not show:
// errors by code, where calls went, read-your-writes checks, leader
// changes and the longest gaps.
func writeTargetDetails(ew *errWriter, t *TargetReport) {
	ew.printf("\n%s:\n", t.Name)
	if len(t.ErrorsByCode) > 0 {
		ew.printf("  errors by code:")
		for _, k := range slices.Sorted(maps.Keys(t.ErrorsByCode)) {
			ew.printf(" %s=%d", k, t.ErrorsByCode[k])
		}
		ew.printf("\n")
		for _, k := range slices.Sorted(maps.Keys(t.ErrorSamples)) {
			ew.printf("    %s: %s\n", k, t.ErrorSamples[k])
		}
	} else {
		ew.printf("  errors: none\n")
	}
	shares := func(title string, m map[string]uint64) {
		if len(m) == 0 {
			return
		}
		var total uint64
		for _, v := range m {
			total += v
		}
		ew.printf("  %s:", title)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			ew.printf(" %s %d (%.1f%%)", k, m[k], 100*float64(m[k])/float64(total))
		}
		ew.printf("\n")
	}
	shares("reads per cluster", t.ReadsByCluster)
	shares("writes per cluster", t.WritesByCluster)
	if v := t.Verify; v != nil {
		ew.printf("  read-your-writes (%s): %d misses in %d checks\n", v.Level, v.Misses, v.Checks)
		if v.Skipped > 0 {
			ew.printf("    %d checks skipped: the writes returned no timestamp\n", v.Skipped)
		}
	}
	for _, lc := range t.LeaderChanges {
		ew.printf("  leader change at %.2fs: %s -> %s (%s)\n", lc.At, lc.From, lc.To, lc.Source)
	}
	if g := t.WriteGap; g != nil {
		ew.printf("  longest time without a successful write: %.3fs (ended at %.2fs)\n", g.S, g.EndS)
	}
	if g := t.ReadGap; g != nil {
		ew.printf("  longest time without a successful read: %.3fs (ended at %.2fs)\n", g.S, g.EndS)
	}
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

// ReadShare is the share of a target's reads served by clusters other than
// leader (0 when it served none).
func (t *TargetReport) ReadShare(exclude string) float64 {
	var total, other uint64
	for k, v := range t.ReadsByCluster {
		total += v
		if !strings.EqualFold(k, exclude) {
			other += v
		}
	}
	if total == 0 {
		return 0
	}
	return float64(other) / float64(total)
}
