// Package app assembles one running milvus-ha-proxy from a validated
// config: topology manager, router, gRPC proxy, admin HTTP server and
// telemetry. `serve`, `demo` and the end-to-end tests all start the proxy
// through it, so what the tests prove is what the binary runs.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/credentials"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/etcdarbiter"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// Version is reported in traces and metrics.
const Version = "0.1.0"

// Options configure an App.
type Options struct {
	// Config is the validated configuration. Required.
	Config *config.Config
	// Logger: nil means slog.Default().
	Logger *slog.Logger
	// AdminHandlers are mounted on the admin server next to its own
	// endpoints (demo mounts the simulator's fault controls on "/sim/").
	AdminHandlers map[string]http.Handler
	// SpanExporter, when set, receives the traces (tests).
	SpanExporter sdktrace.SpanExporter
}

// App is one proxy process's worth of components. Start it once; stop it
// with Shutdown.
type App struct {
	cfg    *config.Config
	logger *slog.Logger

	tel     *telemetry.Telemetry
	topo    *topology.Manager
	arbiter *topology.Arbiter
	// etcd is the arbiter shared with other proxies; nil without one.
	etcd     *etcdarbiter.Arbiter
	router   *router.Router
	proxy    *proxy.Server
	admin    *admin.Server
	obs      *observer
	grpcLis  net.Listener
	adminLis net.Listener

	watches *watchEnder

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errc   chan error
}

// New builds every component; nothing listens or runs until Start.
func New(ctx context.Context, opts Options) (*App, error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("app: no config")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	a := &App{cfg: cfg, logger: logger, errc: make(chan error, 2)}

	tel, err := telemetry.New(ctx, telemetry.Options{
		ServiceName:    cfg.Telemetry.ServiceName,
		ServiceVersion: Version,
		OTLPEndpoint:   cfg.Telemetry.OTLPEndpoint,
		SampleRatio:    cfg.Telemetry.SampleRatio,
		SpanExporter:   opts.SpanExporter,
	})
	if err != nil {
		return nil, fmt.Errorf("app: starting telemetry: %w", err)
	}
	a.tel = tel
	if err := a.build(opts); err != nil {
		a.closePartial(ctx)
		return nil, err
	}
	return a, nil
}

// build makes the components after telemetry, each from the ones before
// it: the topology (and the etcd arbiter it may follow), the failover
// arbiter, the router, the proxy and the admin server.
func (a *App) build(opts Options) error {
	backendCreds, err := a.buildTopology()
	if err != nil {
		return err
	}
	if err := a.buildArbiter(); err != nil {
		return err
	}
	a.obs = &observer{tel: a.tel}
	a.router = router.New(router.Options{
		LeaderServesReads: a.cfg.Read.LeaderServesReads,
		LeaderNow:         a.topo.LeaderNow,
	})
	if err := a.buildProxy(backendCreds); err != nil {
		return err
	}
	a.tel.Metrics.SetStateSource(a.metricsState)

	a.admin = admin.New(admin.Options{
		Controller: &controller{app: a},
		Metrics:    a.tel.MetricsHandler(),
		Logger:     a.logger,
		Pprof:      a.cfg.AdminPprof,
	})
	for pattern, h := range opts.AdminHandlers {
		a.admin.Handle(pattern, h)
	}
	return nil
}

// buildTopology builds the topology manager and, when configured, the
// etcd arbiter shared with other proxies. It returns each cluster's TLS
// credentials (by cluster id), which the relay engine dials with.
func (a *App) buildTopology() (map[string]credentials.TransportCredentials, error) {
	topoOpts, err := topologyOptions(a.cfg, a.logger)
	if err != nil {
		return nil, err
	}
	backendCreds := map[string]credentials.TransportCredentials{}
	for _, co := range topoOpts.Clusters {
		if co.TLS != nil {
			backendCreds[co.ID] = co.TLS
		}
	}
	topoOpts.HoldObserver = a.tel.Metrics
	if a.cfg.Arbiter.Enabled() {
		// A proxy that does not decide routes by the decider's leader
		// only (a.etcd is set below, before the topology starts).
		topoOpts.FollowsLeader = func() bool { return a.etcd != nil && !a.etcd.Deciding() }
	}
	a.topo, err = topology.New(topoOpts)
	if err != nil {
		return nil, fmt.Errorf("app: building topology: %w", err)
	}
	a.etcd, err = newEtcdArbiter(a.cfg, a.topo, a.logger)
	if err != nil {
		return nil, err
	}
	return backendCreds, nil
}

// buildArbiter builds the failover arbiter: it decides alone, keeping its
// change record in failover.state_file, or, with an etcd arbiter, only
// while this proxy is the elected decider, keeping the record in etcd.
func (a *App) buildArbiter() error {
	cfg := a.cfg
	var store topology.ChangeStore
	if cfg.Failover.StateFile != "" {
		store = &topology.FileChangeStore{Path: cfg.Failover.StateFile}
	} else if !cfg.Arbiter.Enabled() && cfg.Discovery == config.DiscoveryReplicate {
		// Not a default path: two proxies on one host or volume would
		// share it silently, and a container's file system is not kept
		// unless a volume is mounted for it anyway. The leader does not
		// depend on it (discovery reads it from the clusters and fails
		// closed when they disagree); quarantines do.
		a.logger.Warn("failover.state_file is not set: a restarted proxy forgets which clusters it quarantined after a forced failover (a former leader holding diverged data would serve reads again) and cannot settle a change it was running; set it to a file on persistent storage")
	}
	arbOpts := topology.ArbiterOptions{
		Mode:     string(cfg.Failover.Mode),
		OnChange: a.recordChange,
		Store:    store,
		Logger:   a.logger,
	}
	if a.etcd != nil {
		// Only the elected proxy decides, and its change records live in
		// etcd, where the next decider finds them.
		arbOpts.Decides = a.etcd.Deciding
		arbOpts.Store = a.etcd.ChangeStore()
	}
	var err error
	a.arbiter, err = topology.NewArbiter(a.topo, arbOpts)
	if err != nil {
		return fmt.Errorf("app: building the failover arbiter: %w", err)
	}
	return nil
}

// buildProxy builds the gRPC proxy with the configured engine: grpc-go
// (tracing and the health-watch ender as interceptors) or the relay
// (tracing as a call hook, TLS to each cluster with backendCreds).
func (a *App) buildProxy(backendCreds map[string]credentials.TransportCredentials) error {
	cfg := a.cfg
	var creds credentials.TransportCredentials
	if cfg.TLS.CertFile != "" {
		tc, err := cfg.TLS.Config()
		if err != nil {
			return fmt.Errorf("app: tls: %w", err)
		}
		creds = credentials.NewTLS(tc)
	}
	pOpts := proxy.Options{
		Topology:         a.topo,
		Router:           a.router,
		StrongReads:      proxy.StrongReads(cfg.Consistency.StrongReads),
		MaxWait:          cfg.Consistency.MaxWait.Std(),
		BoundedStaleness: cfg.Consistency.BoundedStaleness.Std(),
		EventuallyMaxLag: cfg.Consistency.EventuallyMaxLag.Std(),
		Creds:            creds,
		Observer:         a.obs,
		Logger:           a.logger,
		// Both engines: grpc-go takes the header list, stream, handshake
		// and idle limits; the relay all of them.
		RelayLimits: relayLimits(&cfg.Relay),
	}
	tr := tracer{tel: a.tel}
	switch cfg.Engine {
	case config.EngineGRPC:
		pOpts.Engine = proxy.EngineGRPC
		if a.tel.TracingEnabled() {
			pOpts.ServerOptions = append(pOpts.ServerOptions, tr.interceptors()...)
		}
		a.watches = newWatchEnder()
		pOpts.ServerOptions = append(pOpts.ServerOptions, a.watches.interceptor())
	default:
		// The relay ends health watches on drain by itself.
		pOpts.Engine = proxy.EngineRelay
		if a.tel.TracingEnabled() {
			pOpts.CallHook = tr.hook
		}
		pOpts.BackendCreds = func(c *topology.Cluster) credentials.TransportCredentials {
			return backendCreds[c.ID]
		}
	}
	var err error
	a.proxy, err = proxy.New(pOpts)
	if err != nil {
		return fmt.Errorf("app: building proxy: %w", err)
	}
	return nil
}

// closePartial releases what New built before it failed.
func (a *App) closePartial(ctx context.Context) {
	if a.etcd != nil {
		_ = a.etcd.Close()
	}
	if a.topo != nil {
		_ = a.topo.Close()
	}
	if a.tel != nil {
		_ = a.tel.Shutdown(ctx)
	}
}

// Start listens on the configured addresses and serves until Shutdown.
// The listeners are bound before Start returns, so Addr is valid then.
func (a *App) Start() error {
	gl, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("app: listening for gRPC on %s: %w", a.cfg.Listen, err)
	}
	al, err := net.Listen("tcp", a.cfg.AdminListen)
	if err != nil {
		gl.Close()
		return fmt.Errorf("app: listening for admin HTTP on %s: %w", a.cfg.AdminListen, err)
	}
	a.grpcLis, a.adminLis = gl, al

	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.topo.Start()
	// The arbiter runs as one of the topology's goroutines: it stops when
	// Shutdown closes the topology.
	a.arbiter.Start()
	if a.etcd != nil {
		bound := al.Addr().String()
		a.etcd.SetIdentity(a.cfg.ProxyIDFor(bound), a.cfg.AdvertiseAddressFor(bound))
		a.etcd.Start()
	}
	_ = ctx
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		if err := a.proxy.Serve(gl); err != nil {
			a.errc <- fmt.Errorf("gRPC server: %w", err)
		}
	}()
	go func() {
		defer a.wg.Done()
		if err := a.admin.Serve(al); err != nil {
			a.errc <- fmt.Errorf("admin server: %w", err)
		}
	}()
	a.logger.Info("milvus-ha-proxy started", "grpc", gl.Addr().String(), "admin", al.Addr().String(),
		"discovery", string(a.cfg.Discovery), "clusters", len(a.cfg.Clusters))
	return nil
}

// Addr is the gRPC address the proxy listens on (after Start).
func (a *App) Addr() string { return a.grpcLis.Addr().String() }

// AdminAddr is the admin HTTP address (after Start).
func (a *App) AdminAddr() string { return a.adminLis.Addr().String() }

// Topology exposes the topology manager (tests, demo).
func (a *App) Topology() *topology.Manager { return a.topo }

// Arbiter exposes the failover/switchover state machine (tests).
func (a *App) Arbiter() *topology.Arbiter { return a.arbiter }

// Errors reports a server that stopped on its own.
func (a *App) Errors() <-chan error { return a.errc }

// Shutdown drains: /readyz turns 503 and the gRPC health service
// NOT_SERVING first, new calls are refused, calls in flight get until ctx
// ends, then everything stops. It returns ctx's error when calls were cut.
func (a *App) Shutdown(ctx context.Context) error {
	a.admin.SetDraining()
	if a.watches != nil {
		a.watches.drain()
	}
	var errs []error
	if err := a.proxy.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("draining gRPC calls: %w", err))
	}
	if a.cancel != nil {
		a.cancel()
	}
	// The admin server outlives the drain so probes see 503, not a refused
	// connection, while calls finish.
	actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := a.admin.Shutdown(actx); err != nil {
		errs = append(errs, fmt.Errorf("stopping admin server: %w", err))
	}
	if a.etcd != nil {
		// Resigns: another proxy decides at once, not after the lease.
		_ = a.etcd.Close()
	}
	if err := a.topo.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing topology: %w", err))
	}
	a.wg.Wait()
	if err := a.tel.Shutdown(actx); err != nil {
		errs = append(errs, fmt.Errorf("flushing telemetry: %w", err))
	}
	return errors.Join(errs...)
}

// topologyOptions maps the config onto the topology manager's options.
func topologyOptions(cfg *config.Config, logger *slog.Logger) (topology.Options, error) {
	o := topology.Options{
		Discovery:     string(cfg.Discovery),
		PollInterval:  cfg.Replication.PollInterval.Std(),
		ProbeInterval: cfg.Health.ProbeInterval.Std(),
		ProbeTimeout:  cfg.Health.ProbeTimeout.Std(),
		DetectAfter:   cfg.Failover.DetectAfter.Std(),
		WriteHold:     cfg.Failover.WriteHold.Std(),
		DialOptions:   proxy.BackendDialOptions(),
		Logger:        logger,
		// 0 in the config turns the failure cache off; 0 here means the
		// default.
		CollectionFailureTTL: cfg.Read.DescribeFailureTTL.Std(),
	}
	if o.CollectionFailureTTL == 0 {
		o.CollectionFailureTTL = -1
	}
	if cfg.Engine == config.EngineGRPC {
		// The grpc engine's answers come over these connections: their
		// stream window is what its response budget holds back.
		o.DialOptions = proxy.BackendDialOptionsFor(relayLimits(&cfg.Relay))
	}
	for i := range cfg.Clusters {
		c := &cfg.Clusters[i]
		co := topology.ClusterOptions{
			ID:    c.ID,
			URI:   c.Address(),
			Token: c.Token.Reveal(),
			Role:  topology.Role(c.Role),
		}
		if c.Enabled() {
			tc, err := c.TLSConfig()
			if err != nil {
				return o, fmt.Errorf("app: clusters[%d] (%s) tls: %w", i, c.ID, err)
			}
			co.TLS = credentials.NewTLS(tc)
		}
		o.Clusters = append(o.Clusters, co)
	}
	return o, nil
}

// compile-time checks that the adapters fit.
var (
	_ proxy.Topology                            = (*topology.Manager)(nil)
	_ admin.Controller                          = (*controller)(nil)
	_ admin.Attacher                            = (*controller)(nil)
	_ topology.HoldObserver                     = (*telemetry.Metrics)(nil)
	_ interface{ ObserveWrite(string, uint64) } = (*topology.Manager)(nil)
)
