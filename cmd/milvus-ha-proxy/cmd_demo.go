package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry"
)

// runDemo starts simulated clusters a (leader), b, c... in this process,
// joins them by replication exactly as a deployment would
// (UpdateReplicateConfiguration on every cluster), and runs the proxy in
// front of them with replicate discovery.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:19530", "gRPC listen address of the proxy")
	adminListen := fs.String("admin-listen", "127.0.0.1:9091", "admin HTTP listen address (also serves /sim/{id}/... fault controls)")
	alternatives := fs.Int("alternatives", 2, "number of alternative clusters (b, c, ...)")
	delay := fs.Duration("replication-delay", 0, "replication delay of every alternative")
	pchannels := fs.Int("pchannels", 2, "physical channels per cluster")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	setUsage(fs, "demo [--listen ADDR] [--admin-listen ADDR] [--alternatives N] [--replication-delay D]",
		"Starts simulated Milvus clusters a (leader), b, c... in this process, joins them by\n"+
			"replication and runs the proxy in front of them until Ctrl-C. No authentication.\n"+
			"The admin port also serves the simulator's fault controls (/sim/{id}/...).")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "demo: unexpected argument %q\n", fs.Arg(0))
		return 2
	case *alternatives < 0 || *alternatives > 25:
		fmt.Fprintf(stderr, "demo: --alternatives must be in [0, 25], got %d\n", *alternatives)
		return 2
	case *delay < 0:
		fmt.Fprintf(stderr, "demo: --replication-delay must not be negative\n")
		return 2
	}
	logger, err := telemetry.NewLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 2
	}

	// Each cluster keeps its WAL in a directory of its own, so that
	// POST /sim/{id}/crash and /restart on the admin port bring it back
	// with its data, as a crashed Milvus comes back.
	dataDir, err := os.MkdirTemp("", "milvus-ha-proxy-demo-")
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dataDir)
	fleet := sim.NewFleet()
	defer fleet.Stop()
	clusters, err := startDemoClusters(ctx, fleet, *alternatives+1, *pchannels, *delay, dataDir, logger)
	if err != nil {
		logger.Error("cannot set up the simulated clusters", "err", err)
		return 1
	}

	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = *listen, *adminListen
	cfg.Discovery = config.DiscoveryReplicate
	// The record of leader changes and quarantines lives as long as the
	// simulated clusters: a temporary file, as a deployment keeps one.
	if dir, err := os.MkdirTemp("", "milvus-ha-proxy-demo-"); err == nil {
		defer os.RemoveAll(dir)
		cfg.Failover.StateFile = filepath.Join(dir, "state.json")
	}
	for _, c := range clusters {
		cfg.Clusters = append(cfg.Clusters, config.Cluster{ID: c.ID(), URI: c.Addr()})
	}
	if err := cfg.Validate(); err != nil {
		logger.Error("demo config is invalid", "err", err)
		return 1
	}
	printDemoClusters(stdout, clusters)
	// The hints name the addresses the proxy got, which differ from the
	// flags' with port 0.
	hints := func(addr, adminAddr string) {
		fmt.Fprintf(stdout, "connect with: pymilvus MilvusClient(uri=\"http://%s\")  |  Go SDK milvusclient.New(ctx, &milvusclient.ClientConfig{Address: %q})\n", addr, addr)
		fmt.Fprintf(stdout, "status: go run ./cmd/milvus-ha-proxy status --admin http://%s   faults: curl -XPOST http://%s/sim/b/replication/pause   crash the leader: curl -XPOST http://%s/sim/a/crash\n", adminAddr, adminAddr, adminAddr)
		fmt.Fprintf(stdout, "status page: http://%s/ui   (the demo has no authentication: connect without a token)\n", adminAddr)
	}
	return runApp(ctx, app.Options{
		Config:        cfg,
		Logger:        logger,
		AdminHandlers: map[string]http.Handler{"/sim/": fleet.Handler()},
	}, stdout, hints)
}

// startDemoClusters starts n simulated clusters a, b, ... in fleet, each
// with its WAL in a directory of its own under dataDir, and joins them by
// replication with a as the source.
func startDemoClusters(ctx context.Context, fleet *sim.Fleet, n, pchannels int, delay time.Duration, dataDir string, logger *slog.Logger) ([]*sim.Cluster, error) {
	clusters := make([]*sim.Cluster, 0, n)
	for i := 0; i < n; i++ {
		id := string(rune('a' + i))
		c, err := fleet.Start(ctx, sim.Options{
			ClusterID:        id,
			PChannels:        pchannels,
			ReplicationDelay: delay,
			DataDir:          filepath.Join(dataDir, id),
			Logger:           logger.With("sim", id),
		})
		if err != nil {
			return nil, fmt.Errorf("cannot start simulated cluster %s: %w", id, err)
		}
		clusters = append(clusters, c)
	}
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	if len(clusters) > 1 {
		err = sim.JoinReplication(jctx, clusters[0], clusters[1:]...)
	} else {
		// A lone cluster gets a configuration naming only itself, so
		// replicate discovery finds it as the source (Milvus 2.6 answers
		// GetReplicateConfiguration only once one was set).
		err = sim.UpdateReplicateConfiguration(jctx, clusters[0].Addr(), "",
			&commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{clusters[0].Config()}}, false)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot configure replication: %w", err)
	}
	return clusters, nil
}

// printDemoClusters prints each cluster's address and role.
func printDemoClusters(stdout io.Writer, clusters []*sim.Cluster) {
	fmt.Fprintf(stdout, "simulated clusters:")
	for i, c := range clusters {
		role := "alternative"
		if i == 0 {
			role = "leader"
		}
		fmt.Fprintf(stdout, " %s=%s (%s)", c.ID(), c.Addr(), role)
	}
	fmt.Fprintln(stdout)
}
