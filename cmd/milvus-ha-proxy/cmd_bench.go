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

// runBench is the bench subcommand: bench.Flags checks the flags and says
// what to run; this runs it and writes the results.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, benchSynopsis, benchAbout)
	var flags bench.Flags
	flags.Register(fs)
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
	c, err := flags.Command(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		if bench.IsUsageError(err) {
			return 2
		}
		return 1
	}
	cfg := c.Config
	cfg.Progress, cfg.ProgressTTY, cfg.Logger = benchOutput(stderr, c.Progress, c.Verbose)
	switch {
	case c.InProcess:
		return runScenario(ctx, func(ctx context.Context) (*bench.ScenarioReport, error) {
			return lab.Run(ctx, c.Scenario, cfg, lab.ScenarioOptions{
				Capacity: c.SimCapacity, MinLatency: c.SimMinLatency, FaultAt: c.FaultAt, SkipHAProxy: c.SkipHAProxy,
				Levels: c.ConsistencyCost.Levels, Lags: c.ConsistencyCost.Lags,
				Logger: cfg.Logger,
			})
		}, c.Out, c.Plot, stdout, stderr)
	case c.Scenario != "":
		return runScenario(ctx, func(ctx context.Context) (*bench.ScenarioReport, error) {
			return bench.RunScenario(ctx, c.Scenario, cfg, c.ConsistencyCost)
		}, c.Out, c.Plot, stdout, stderr)
	}
	return runMeasurement(ctx, cfg, c.Out, c.Plot, stdout, stderr)
}

// benchOutput is where progress and logs go: a live progress line when
// stderr is a terminal (or progress lines with --progress), and warnings
// (with -v, setup steps too).
func benchOutput(stderr io.Writer, progress, verbose bool) (io.Writer, bool, *slog.Logger) {
	var w io.Writer
	tty := false
	if f, ok := stderr.(*os.File); ok && isTerminal(f) {
		w, tty = stderr, true
	} else if progress {
		w = stderr
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	return w, tty, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// runMeasurement runs one measurement (no scenario) and prints its table;
// a run that failed part way prints what it measured.
func runMeasurement(ctx context.Context, cfg bench.Config, out, plotFile string, stdout, stderr io.Writer) int {
	rep, runErr := bench.Run(ctx, cfg)
	if rep == nil {
		fmt.Fprintf(stderr, "bench: %v\n", runErr)
		if bench.IsUsageError(runErr) {
			return 2
		}
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
	outputs := []output{{flag: "out", what: "JSON report", path: out, write: rep.WriteJSON}}
	if plotFile != "" {
		outputs = append(outputs, output{flag: "plot", what: "plot", path: plotFile, write: rep.WritePlot})
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
