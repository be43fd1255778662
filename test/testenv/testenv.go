// Package testenv is the harness the end-to-end suites (test/e2e,
// test/ops) share: simulated clusters (sim) joined by replication,
// the real proxy (package app) in front of them on 127.0.0.1:0, a wait
// until it is ready, the Go SDK connected to it, and a small collection
// (id int64 primary key, vec float vector of Dim) to drive traffic with.
//
// Every resource a helper starts is stopped by t.Cleanup, so a test only
// says what it needs. Helpers fail the test (t.Fatalf) instead of
// returning setup errors; the traffic helpers (Insert, Search, SearchID)
// return errors because tests assert on them.
package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
)

// LogEnv is the environment variable that, when set, sends the sims' and
// the proxy's logs to stderr at debug level; otherwise they are discarded.
const LogEnv = "TESTENV_LOG"

// Logger is the default logger of the sims and the proxy (see LogEnv).
func Logger() *slog.Logger {
	if os.Getenv(LogEnv) != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Options says what StartSims and Start build.
type Options struct {
	// Clusters is how many simulated clusters to start, named a, b, c...;
	// a is the replication source (the leader), the others replicate from
	// it. 0 means 1.
	Clusters int
	// Logger is given to every sim and to the proxy; nil means Logger().
	Logger *slog.Logger
	// Sim, if set, adjusts each sim's options before it starts (after
	// ClusterID and Logger are filled in).
	Sim func(*sim.Options)
	// Config, if set, adjusts the proxy's config (ReplicateConfig of the
	// sims) before it is validated. Start only.
	Config func(*config.Config)
	// App is passed to app.New; Start fills in Config, and Logger when
	// it is nil. Start only.
	App app.Options
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return Logger()
}

// Env is a started topology: the sims, the proxy's config and the proxy.
type Env struct {
	Sims   []*sim.Cluster
	Config *config.Config
	App    *app.App
}

// Start starts the sims (StartSims), the proxy in front of them with
// replicate discovery (ReplicateConfig, then o.Config), and waits until
// the proxy is ready with every other sim a healthy alternative
// (WaitReady).
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	sims := StartSims(t, o)
	cfg := ReplicateConfig(sims)
	if o.Config != nil {
		o.Config(cfg)
	}
	opts := o.App
	if opts.Logger == nil {
		opts.Logger = o.logger()
	}
	a := StartApp(t, cfg, opts)
	WaitReady(t, a.AdminAddr(), len(sims)-1)
	return &Env{Sims: sims, Config: cfg, App: a}
}

// StartSims starts o.Clusters simulated clusters a, b, c... and, when
// there are several, joins them by replication with a as the source.
func StartSims(t testing.TB, o Options) []*sim.Cluster {
	t.Helper()
	ctx := context.Background()
	n := max(o.Clusters, 1)
	all := make([]*sim.Cluster, 0, n)
	for i := range n {
		id := string(rune('a' + i))
		so := sim.Options{ClusterID: id, Logger: o.logger().With("sim", id)}
		if o.Sim != nil {
			o.Sim(&so)
		}
		c, err := sim.Start(ctx, so)
		if err != nil {
			t.Fatalf("starting sim %s: %v", so.ClusterID, err)
		}
		t.Cleanup(c.Stop)
		all = append(all, c)
	}
	if n > 1 {
		jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := sim.JoinReplication(jctx, all[0], all[1:]...); err != nil {
			t.Fatalf("joining replication: %v", err)
		}
	}
	return all
}

// ReplicateConfig is the default config of a proxy in front of sims with
// replicate discovery, listening on 127.0.0.1:0 (gRPC and admin).
func ReplicateConfig(sims []*sim.Cluster) *config.Config {
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Discovery = config.DiscoveryReplicate
	for _, c := range sims {
		cfg.Clusters = append(cfg.Clusters, config.Cluster{ID: c.ID(), URI: c.Addr()})
	}
	return cfg
}

// StartApp validates cfg, builds and starts the proxy with opts (Config
// set to cfg, Logger defaulting to Logger()); t.Cleanup shuts it down
// (a no-op when the test already did).
func StartApp(t testing.TB, cfg *config.Config, opts app.Options) *app.App {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	opts.Config = cfg
	if opts.Logger == nil {
		opts.Logger = Logger()
	}
	a, err := app.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	if err := a.Start(); err != nil {
		t.Fatalf("app.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return a
}

// Topology fetches GET /api/v1/topology from the admin server at
// adminAddr.
func Topology(t testing.TB, adminAddr string) admin.View {
	t.Helper()
	c, err := admin.NewClient(adminAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := c.Topology(ctx)
	if err != nil {
		t.Fatalf("GET /api/v1/topology: %v", err)
	}
	return v
}

// WaitReady waits, through the admin API at adminAddr (so it works for
// the built binary too), until the proxy is ready and exactly
// alternatives clusters are healthy alternatives with a known lag.
func WaitReady(t testing.TB, adminAddr string, alternatives int) {
	t.Helper()
	testutil.EventuallyWhy(t, 15*time.Second, "the proxy to be ready", func() (bool, string) {
		v := Topology(t, adminAddr)
		known := 0
		for _, c := range v.Clusters {
			if c.Role == "alternative" && c.Healthy && c.LagKnown {
				known++
			}
		}
		return v.Ready && known == alternatives, fmt.Sprintf("%+v", v)
	})
}
