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
	id := fs.String("cluster-id", "", "cluster id (required); pchannels are <id>-rootcoord-dml_<i>")
	listen := fs.String("listen", "127.0.0.1:0", "gRPC listen address")
	control := fs.String("control", "", "HTTP address for the fault controls (/sim/{id}/...); empty: off")
	pchannels := fs.Int("pchannels", 2, "number of physical channels")
	delay := fs.Duration("replication-delay", 0, "delay applied to incoming replication")
	tick := fs.Duration("tick", 50*time.Millisecond, "time tick interval of each pchannel")
	dataDir := fs.String("data-dir", "", "persist the WAL here and replay it on start")
	searchConc := fs.Int("search-concurrency", 0, "capacity: at most N searches/queries at once (0: unlimited)")
	searchLat := fs.Duration("search-min-latency", 0, "capacity: each search/query takes at least this long")
	guarantee := fs.Duration("guarantee-timeout", 5*time.Second, "how long a read waits for its guarantee timestamp")
	user := fs.String("user", "", "enable authentication with this user (needs --password)")
	password := fs.String("password", "", "password of --user")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fpShape := fs.String("force-promote-shape", sim.ForcePromoteSingle,
		"force_promote request accepted, as Milvus versions differ: single (a configuration of the cluster itself) or empty")
	setUsage(fs, "sim --cluster-id ID [--listen ADDR] [--control ADDR] [--data-dir DIR]",
		"Runs one simulated Milvus cluster (the Milvus gRPC API, replication and fault\n"+
			"controls) until SIGINT/SIGTERM. For tests and benchmarks: it is not a Milvus.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sim: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return bad("unexpected argument %q", fs.Arg(0))
	case *id == "":
		return bad("--cluster-id is required")
	case *pchannels < 1 || *pchannels > 256:
		return bad("--pchannels must be in [1, 256], got %d", *pchannels)
	case *delay < 0:
		return bad("--replication-delay must not be negative")
	case *tick <= 0:
		return bad("--tick must be positive")
	case *searchConc < 0:
		return bad("--search-concurrency must not be negative")
	case *searchLat < 0:
		return bad("--search-min-latency must not be negative")
	case *guarantee <= 0:
		return bad("--guarantee-timeout must be positive")
	case (*user == "") != (*password == ""):
		return bad("--user and --password go together")
	case *fpShape != sim.ForcePromoteSingle && *fpShape != sim.ForcePromoteEmpty:
		return bad("--force-promote-shape %q: want %s or %s", *fpShape, sim.ForcePromoteSingle, sim.ForcePromoteEmpty)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return bad("--log-level: %v", err)
	}
	opts := sim.Options{
		ClusterID: *id, Listen: *listen, PChannels: *pchannels, TimeTickInterval: *tick,
		ReplicationDelay: *delay, GuaranteeTimeout: *guarantee, DataDir: *dataDir,
		SearchConcurrency: *searchConc, SearchMinLatency: *searchLat, ForcePromoteShape: *fpShape,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}
	if *user != "" {
		opts.Users = map[string]string{*user: *password}
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
	var ctl *http.Server
	var ctlAddr string
	if *control != "" {
		lis, err := net.Listen("tcp", *control)
		if err != nil {
			fmt.Fprintf(stderr, "sim: --control %s: %v\n", *control, err)
			return 1
		}
		ctlAddr = lis.Addr().String()
		ctl = &http.Server{
			Handler:           fleet.Handler(),
			ReadHeaderTimeout: 5 * time.Second,
		}
		go ctl.Serve(lis)
	}
	fmt.Fprintf(stdout, "sim %s listening on %s\n", c.ID(), c.Addr())
	if ctl != nil {
		fmt.Fprintf(stdout, "sim %s control on %s\n", c.ID(), ctlAddr)
	}
	<-ctx.Done()
	if ctl != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ctl.Shutdown(sctx)
		cancel()
	}
	return 0
}
