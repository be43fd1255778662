package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
)

// runSim runs one simulated Milvus cluster in this process until ctx is
// cancelled (SIGINT/SIGTERM). Once it serves, it prints
// "sim <id> listening on <addr>" and, with --control,
// "sim <id> control on <addr>" to stdout.
func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f simFlags
	f.register(fs)
	setUsage(fs, "sim --cluster-id ID [--listen ADDR] [--control ADDR] [--data-dir DIR]",
		"Runs one simulated Milvus cluster (the Milvus gRPC API, replication and fault\n"+
			"controls) until SIGINT/SIGTERM. For tests and benchmarks: it is not a Milvus.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sim: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	opts, err := f.options(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "sim: %v\n", err)
		return 2
	}
	// A fleet of one: its controls can also crash the cluster in place
	// and restart it (POST /sim/{id}/crash, /restart) while the process
	// keeps running.
	fleet := sim.NewFleet()
	c, err := fleet.Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "sim: %v\n", err)
		return 1
	}
	defer fleet.Stop()
	var ctlAddr net.Addr
	if f.control != "" {
		lis, err := net.Listen("tcp", f.control)
		if err != nil {
			fmt.Fprintf(stderr, "sim: --control %s: %v\n", f.control, err)
			return 1
		}
		ctlAddr = lis.Addr()
		ctl := &http.Server{Handler: fleet.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go ctl.Serve(lis)
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			ctl.Shutdown(sctx)
		}()
	}
	fmt.Fprintf(stdout, "sim %s listening on %s\n", c.ID(), c.Addr())
	if ctlAddr != nil {
		fmt.Fprintf(stdout, "sim %s control on %s\n", c.ID(), ctlAddr)
	}
	<-ctx.Done()
	return 0
}

// simFlags are the sim command's flags.
type simFlags struct {
	id, listen, control, dataDir      string
	user, password, logLevel, shape   string
	pchannels, searchConc             int
	delay, tick, searchLat, guarantee time.Duration
}

func (f *simFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.id, "cluster-id", "", "cluster id (required); pchannels are <id>-rootcoord-dml_<i>")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:0", "gRPC listen address")
	fs.StringVar(&f.control, "control", "", "HTTP address for the fault controls (/sim/{id}/...); empty: off")
	fs.IntVar(&f.pchannels, "pchannels", 2, "number of physical channels")
	fs.DurationVar(&f.delay, "replication-delay", 0, "delay applied to incoming replication")
	fs.DurationVar(&f.tick, "tick", 50*time.Millisecond, "time tick interval of each pchannel")
	fs.StringVar(&f.dataDir, "data-dir", "", "persist the WAL here and replay it on start")
	fs.IntVar(&f.searchConc, "search-concurrency", 0, "capacity: at most N searches/queries at once (0: unlimited)")
	fs.DurationVar(&f.searchLat, "search-min-latency", 0, "capacity: each search/query takes at least this long")
	fs.DurationVar(&f.guarantee, "guarantee-timeout", 5*time.Second, "how long a read waits for its guarantee timestamp")
	fs.StringVar(&f.user, "user", "", "enable authentication with this user (needs --password)")
	fs.StringVar(&f.password, "password", "", "password of --user")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&f.shape, "force-promote-shape", sim.ForcePromoteSingle,
		"force_promote request accepted, as Milvus versions differ: single (a configuration of the cluster itself) or empty")
}

// options checks the flags and builds the cluster's options, logging to
// stderr; the error names the flag.
func (f *simFlags) options(stderr io.Writer) (sim.Options, error) {
	var err error
	switch {
	case f.id == "":
		err = errors.New("--cluster-id is required")
	case f.pchannels < 1 || f.pchannels > 256:
		err = fmt.Errorf("--pchannels must be in [1, 256], got %d", f.pchannels)
	case f.delay < 0:
		err = errors.New("--replication-delay must not be negative")
	case f.tick <= 0:
		err = errors.New("--tick must be positive")
	case f.searchConc < 0:
		err = errors.New("--search-concurrency must not be negative")
	case f.searchLat < 0:
		err = errors.New("--search-min-latency must not be negative")
	case f.guarantee <= 0:
		err = errors.New("--guarantee-timeout must be positive")
	case (f.user == "") != (f.password == ""):
		err = errors.New("--user and --password go together")
	case f.shape != sim.ForcePromoteSingle && f.shape != sim.ForcePromoteEmpty:
		err = fmt.Errorf("--force-promote-shape %q: want %s or %s", f.shape, sim.ForcePromoteSingle, sim.ForcePromoteEmpty)
	}
	if err != nil {
		return sim.Options{}, err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return sim.Options{}, fmt.Errorf("--log-level: %w", err)
	}
	opts := sim.Options{
		ClusterID: f.id, Listen: f.listen, PChannels: f.pchannels, TimeTickInterval: f.tick,
		ReplicationDelay: f.delay, GuaranteeTimeout: f.guarantee, DataDir: f.dataDir,
		SearchConcurrency: f.searchConc, SearchMinLatency: f.searchLat, ForcePromoteShape: f.shape,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}
	if f.user != "" {
		opts.Users = map[string]string{f.user: f.password}
	}
	return opts, nil
}
