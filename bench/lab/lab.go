// Package lab runs the benchmark scenarios (bench/README.md) by themselves: it
// starts simulated Milvus clusters (sim) joined by replication and the
// proxy (app) in this process, on loopback ports, points the bench harness
// at them, injects the scenario's faults through the simulator's handles,
// and tears everything down.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
)

// Options shape one lab: a leader "a" and Alternatives more clusters
// ("b", "c", …), all with the same capacity, behind one proxy.
type Options struct {
	Alternatives      int
	PChannels         int           // default 2
	ReplicationDelay  time.Duration // of every alternative
	SearchConcurrency int           // per-cluster capacity (0: unlimited)
	SearchMinLatency  time.Duration
	// Configure may adjust the proxy's configuration (failover timings,
	// read policy) before it starts.
	Configure func(*config.Config)
	Logger    *slog.Logger // default: discard
}

// Lab is a running set of clusters and their proxy.
type Lab struct {
	Clusters []*sim.Cluster
	app      *app.App
	log      *slog.Logger
}

// Start starts the clusters, joins them by replication, starts the proxy
// and waits until it is ready (a leader known).
func Start(ctx context.Context, o Options) (*Lab, error) {
	if o.Alternatives < 0 || o.Alternatives > 25 {
		return nil, fmt.Errorf("lab: %d alternatives, want 0..25", o.Alternatives)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Lab{log: o.Logger}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	for i := 0; i <= o.Alternatives; i++ {
		id := string(rune('a' + i))
		so := sim.Options{
			ClusterID:         id,
			PChannels:         o.PChannels,
			SearchConcurrency: o.SearchConcurrency,
			SearchMinLatency:  o.SearchMinLatency,
			Logger:            o.Logger.With("sim", id),
		}
		if i > 0 {
			so.ReplicationDelay = o.ReplicationDelay
		}
		c, err := sim.Start(ctx, so)
		if err != nil {
			return nil, fmt.Errorf("lab: starting cluster %s: %w", id, err)
		}
		l.Clusters = append(l.Clusters, c)
	}
	if len(l.Clusters) > 1 {
		jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := sim.JoinReplication(jctx, l.Clusters[0], l.Clusters[1:]...)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("lab: joining the clusters: %w", err)
		}
	}

	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Discovery = config.DiscoveryReplicate
	for _, c := range l.Clusters {
		cfg.Clusters = append(cfg.Clusters, config.Cluster{ID: c.ID(), URI: c.Addr()})
	}
	if len(l.Clusters) == 1 {
		// A lone cluster has no replication configuration to discover its
		// role from: name it the leader.
		cfg.Discovery = config.DiscoveryStatic
		cfg.Clusters[0].Role = config.RoleLeader
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lab: proxy config: %w", err)
	}
	a, err := app.New(ctx, app.Options{
		Config:        cfg,
		Logger:        o.Logger.With("component", "proxy"),
		AdminHandlers: map[string]http.Handler{"/sim/": sim.ControlHandler(l.lookup)},
	})
	if err != nil {
		return nil, fmt.Errorf("lab: building the proxy: %w", err)
	}
	if err := a.Start(); err != nil {
		return nil, fmt.Errorf("lab: starting the proxy: %w", err)
	}
	l.app = a
	if err := l.waitReady(ctx); err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}

func (l *Lab) lookup(id string) (*sim.Cluster, bool) {
	c := l.Cluster(id)
	return c, c != nil
}

// waitReady polls /readyz: the proxy is ready once it knows a reachable
// leader (and, with replicate discovery, the topology).
func (l *Lab) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	url := l.AdminURL() + "/readyz"
	last := ""
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status + ": " + strings.TrimSpace(string(body))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: proxy not ready (%s): %w", last, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ProxyAddr is the proxy's gRPC address.
func (l *Lab) ProxyAddr() string { return l.app.Addr() }

// AdminURL is the proxy's admin base URL (it also serves the simulator's
// /sim/{id}/... fault controls, as demo does).
func (l *Lab) AdminURL() string { return "http://" + l.app.AdminAddr() }

// Cluster returns the cluster with the given id, or nil.
func (l *Lab) Cluster(id string) *sim.Cluster {
	for _, c := range l.Clusters {
		if c.ID() == id {
			return c
		}
	}
	return nil
}

// Close stops the proxy, then the clusters.
func (l *Lab) Close() {
	var errs []error
	if l.app != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, l.app.Shutdown(ctx))
		cancel()
	}
	for _, c := range l.Clusters {
		c.Stop()
	}
	if err := errors.Join(errs...); err != nil {
		l.log.Warn("lab: stopping the proxy", "err", err)
	}
}
