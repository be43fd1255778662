package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/bench"
)

// ScenarioOptions tune the in-process scenarios; zero values take the
// defaults in the comments.
type ScenarioOptions struct {
	// read-scaling: per-cluster capacity, so throughput measures routing,
	// not this machine's CPU (default 2 searches at once, each ≥ 10 ms:
	// 200 searches/s per cluster).
	Capacity   int
	MinLatency time.Duration
	// failover: when the leader crashes (default a third of the duration,
	// or 2 s in --ops runs).
	FaultAt time.Duration
	// overhead: also measure HAProxy in front of the cluster, when it is
	// on PATH (default true).
	SkipHAProxy bool
	// consistency-cost: levels and lags (default all five, and 0, 100 ms,
	// 1 s).
	Levels []bench.Consistency
	Lags   []time.Duration
	Logger *slog.Logger
}

// Run runs one scenario by name on clusters and a proxy it starts itself.
// base carries the load (concurrency, duration or ops, dim, preload, …);
// its Targets are filled in here.
func Run(ctx context.Context, name string, base bench.Config, o ScenarioOptions) (*bench.ScenarioReport, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch name {
	case bench.ScenarioOverhead:
		return overhead(ctx, base, o)
	case bench.ScenarioReadScaling:
		return readScaling(ctx, base, o)
	case bench.ScenarioFailover:
		return failover(ctx, base, o)
	case bench.ScenarioConsistencyCost:
		return consistencyCost(ctx, base, o)
	}
	return nil, &bench.UsageError{Flag: "scenario", Msg: fmt.Sprintf("unknown scenario %q", name)}
}

func overhead(ctx context.Context, base bench.Config, o ScenarioOptions) (*bench.ScenarioReport, error) {
	l, err := Start(ctx, Options{Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	a := l.Cluster("a")
	base.Targets = []bench.Target{{Name: "proxy", Addr: l.ProxyAddr()}, {Name: "direct", Addr: a.Addr()}}
	var note string
	if !o.SkipHAProxy {
		h, err := StartHAProxy(ctx, a.Addr())
		switch {
		case err == nil:
			defer h.Stop()
			base.Targets = append(base.Targets, bench.Target{Name: "haproxy", Addr: h.Addr})
		case errors.Is(err, ErrNoHAProxy):
			note = "haproxy is not on PATH: measured proxy and direct only"
		default:
			return nil, err
		}
	}
	s, err := bench.Overhead(ctx, base)
	if s != nil && note != "" {
		s.Notes = append(s.Notes, note)
	}
	return s, err
}

func readScaling(ctx context.Context, base bench.Config, o ScenarioOptions) (*bench.ScenarioReport, error) {
	capacity, lat := o.Capacity, o.MinLatency
	if capacity == 0 {
		capacity = 2
	}
	if lat == 0 {
		lat = 10 * time.Millisecond
	}
	if base.Concurrency == 0 {
		// Enough closed-loop workers to fill three clusters' slots twice
		// over, so the three-cluster case is not client-bound.
		base.Concurrency = 6 * capacity
	}
	base.Targets = nil
	for n := 1; n <= 3; n++ {
		l, err := Start(ctx, Options{Alternatives: n - 1, SearchConcurrency: capacity, SearchMinLatency: lat, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		defer l.Close()
		base.Targets = append(base.Targets, bench.Target{Name: fmt.Sprintf("%d-cluster", n), Addr: l.ProxyAddr()})
	}
	s, err := bench.ReadScaling(ctx, base)
	if s != nil {
		s.Notes = append(s.Notes, fmt.Sprintf("each cluster serves at most %d searches at once, each taking at least %s (%.0f/s)",
			capacity, lat, float64(capacity)/lat.Seconds()))
	}
	return s, err
}

func failover(ctx context.Context, base bench.Config, o ScenarioOptions) (*bench.ScenarioReport, error) {
	l, err := Start(ctx, Options{Alternatives: 2, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	at := o.FaultAt
	if at == 0 {
		at = base.Duration / 3
		if base.Duration == 0 {
			at = 2 * time.Second
		}
	}
	base.Targets = []bench.Target{{Name: "proxy", Addr: l.ProxyAddr()}}
	base.AdminURL = l.AdminURL()
	leader := l.Cluster("a")
	base.Faults = append(base.Faults, bench.Fault{At: at, Name: "crash leader a", Do: func(context.Context) error {
		leader.Crash()
		return nil
	}})
	return bench.Failover(ctx, base)
}

func consistencyCost(ctx context.Context, base bench.Config, o ScenarioOptions) (*bench.ScenarioReport, error) {
	l, err := Start(ctx, Options{Alternatives: 2, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	base.Targets = []bench.Target{{Name: "proxy", Addr: l.ProxyAddr()}}
	alts := l.Clusters[1:]
	return bench.ConsistencyCost(ctx, base, bench.ConsistencyCostOptions{
		Leader: "a",
		Levels: o.Levels,
		Lags:   o.Lags,
		SetLag: func(_ context.Context, d time.Duration) error {
			for _, c := range alts {
				c.SetReplicationDelay(d)
			}
			return nil
		},
	})
}
