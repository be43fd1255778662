// Package proxy is the data path of milvus-ha-proxy: a gRPC server that
// speaks milvus.proto.milvus.MilvusService by forwarding raw message bytes
// to the cluster each call belongs on. Writes and DDL go to the leader;
// reads go where their consistency level allows (docs/architecture.md,
// "Consistency rules"). Only the handful of fields routing needs are read
// from a message (protowire); a read's consistency fields are rewritten by
// appending, so a Search carrying megabytes of vectors is never
// unmarshalled or re-marshalled. docs/architecture.md follows a read and a
// failover function by function and lists the relay's goroutines and
// locks.
//
// Two engines carry the calls, with the same routing code: EngineGRPC, a
// grpc-go server with a bytes codec in front of the topology's grpc-go
// connections; and EngineRelay, which speaks HTTP/2 itself on both sides
// (frames, HPACK, flow control) and routes the common call inline on the
// connection goroutines with one write per read batch, at about half the
// CPU per call (see bench_test.go).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/consistency"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/rawmsg"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/relay"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	// Clients may compress requests with gzip; decompressing them needs
	// the compressor registered.
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// HeaderCluster names, on every response (and in the trailer of streams),
// the cluster that served it.
const HeaderCluster = relay.HeaderCluster

// LocalCluster is the HeaderCluster value of answers the proxy gives
// itself (CheckHealth).
const LocalCluster = "milvus-ha-proxy"

const defaultMaxMessageSize = 256 << 20

// Flow-control windows, on both sides of the proxy. Static windows turn off
// grpc-go's BDP estimator, which sends a PING (and reads its ack) around
// data frames: measurable syscalls per request on a proxy. 4 MiB per
// stream keeps a multi-megabyte Insert or Search flowing without waiting
// for window updates.
const (
	windowSize     = 4 << 20
	connWindowSize = 16 << 20
)

// BackendDialOptions are the dial options the data-path connections to
// the clusters (topology.Cluster.Conn) should use with the relay engine,
// next to credentials: the same static flow-control windows as the
// proxy's server side. The raw-bytes codec is set per call by the proxy,
// so these connections stay usable for ordinary typed calls too.
func BackendDialOptions() []grpc.DialOption { return backendDialOptions(windowSize) }

// BackendDialOptionsFor are BackendDialOptions for the grpc engine with
// limits lim: each call's stream window is lim.BackendStreamWindow, how
// far an answer may run ahead of the response budget (grpc_budget.go).
// The relay engine sends unary calls over its own connections, with the
// same window; there the topology's carry streams, probes and lookups.
func BackendDialOptionsFor(lim RelayLimits) []grpc.DialOption {
	return backendDialOptions(int32(lim.WithDefaults().BackendStreamWindow))
}

// Static windows turn off grpc-go's BDP estimator (pings around data).
func backendDialOptions(streamWindow int32) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindowSize),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaultMaxMessageSize), grpc.MaxCallSendMsgSize(defaultMaxMessageSize)),
	}
}

// Server is the proxy's gRPC server.
type Server struct {
	topo     Topology
	router   Router
	sessions *consistency.Tracker
	policy   router.ReadPolicy
	maxWait  time.Duration
	obs      Observer
	log      *slog.Logger

	engine  Engine
	hook    func(ctx context.Context, fullMethod string, md metadata.MD) (context.Context, func(error))
	creds   credentials.TransportCredentials
	maxMsg  int
	codec   *rawmsg.Codec
	up      upstream
	methods []*method
	byName  map[string]*method
	byPath  map[string]*method
	// grpcOpts are the call options for the clusters' grpc-go connections.
	grpcOpts []grpc.CallOption

	// One of the engines.
	grpc  *grpc.Server
	relay *relay.Server
	pool  *relay.Pool // the relay engine's connections to the clusters
	// gbudget is the grpc engine's response budget (grpc_budget.go).
	gbudget *grpcRespBudget

	health   *health.Server // grpc engine's health service
	hmu      sync.Mutex
	hstatus  healthpb.HealthCheckResponse_ServingStatus
	hchanged chan struct{} // closed when hstatus changes

	draining atomic.Bool
	headers  sync.Map // cluster id -> metadata.MD{HeaderCluster: id}, read-only once stored

	stopOnce  sync.Once
	stopWatch chan struct{}
	watchDone chan struct{}
}

// New builds a Server. Nothing listens until Serve.
func New(opts Options) (*Server, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	methods, err := buildMethods()
	if err != nil {
		return nil, err
	}
	s := &Server{
		topo:     opts.Topology,
		router:   opts.Router,
		sessions: opts.Sessions,
		policy: router.ReadPolicy{
			Rules:            consistency.Rules{BoundedStaleness: opts.BoundedStaleness},
			StrongWait:       opts.StrongReads == StrongWait,
			EventuallyMaxLag: opts.EventuallyMaxLag,
		},
		maxWait:   opts.MaxWait,
		obs:       opts.Observer,
		log:       opts.Logger,
		engine:    opts.Engine,
		hook:      opts.CallHook,
		creds:     opts.Creds,
		maxMsg:    opts.MaxMessageSize,
		codec:     rawmsg.NewCodec(),
		methods:   methods,
		byName:    make(map[string]*method, len(methods)),
		byPath:    make(map[string]*method, len(methods)),
		hchanged:  make(chan struct{}),
		stopWatch: make(chan struct{}),
		watchDone: make(chan struct{}),
	}
	grpcUp := &grpcUpstream{callOpts: []grpc.CallOption{
		grpc.ForceCodecV2(s.codec),
		grpc.MaxCallRecvMsgSize(opts.MaxMessageSize),
		grpc.MaxCallSendMsgSize(opts.MaxMessageSize),
	}}
	s.up = grpcUp
	s.grpcOpts = grpcUp.callOpts
	for _, m := range methods {
		s.byName[m.name] = m
		s.byPath[m.full] = m
		if !m.classified {
			s.log.Warn("proxy: method has no class; sending it to the leader", "method", m.name)
		}
	}
	if opts.Engine == EngineRelay {
		s.startRelay(&opts)
	} else {
		s.startGRPC(&opts)
	}
	s.updateHealth()
	go s.watchTopology()
	return s, nil
}

// DefaultEngine is the engine New uses when Options.Engine is empty; it is
// config.Default()'s engine too (app's tests hold the two together).
const DefaultEngine = EngineRelay

// setDefaults checks the options New cannot run without and fills in the
// defaults of the ones left zero.
func (o *Options) setDefaults() error {
	if o.Topology == nil || o.Router == nil {
		return errors.New("proxy: Options.Topology and Options.Router are required")
	}
	switch o.Engine {
	case "":
		o.Engine = DefaultEngine
	case EngineRelay, EngineGRPC:
	default:
		return fmt.Errorf("proxy: engine %q: want %q or %q", o.Engine, EngineRelay, EngineGRPC)
	}
	switch o.StrongReads {
	case "":
		o.StrongReads = StrongLeader
	case StrongLeader, StrongWait:
	default:
		return fmt.Errorf("proxy: strong_reads %q: want %q or %q", o.StrongReads, StrongLeader, StrongWait)
	}
	if o.BoundedStaleness <= 0 {
		o.BoundedStaleness = 5 * time.Second
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = defaultMaxMessageSize
	}
	if o.Sessions == nil {
		o.Sessions = consistency.NewTracker(o.SessionCapacity)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// startGRPC builds the grpc engine's server: grpc-go with the raw-bytes
// codec, every MilvusService method registered to the proxy's handlers,
// the health service, and the rapid-reset guard (grpc_guard.go) on every
// connection.
func (s *Server) startGRPC(opts *Options) {
	s.health = health.NewServer()

	// The client-connection limits the relay enforces bound grpc-go too,
	// where it has the same knob: a header list cap (else an 8 MiB header
	// block is decoded and forwarded), a stream cap, a handshake
	// deadline and an idle close (grpc-go keeps idle connections
	// forever by default).
	lim := opts.RelayLimits.WithDefaults()
	sopts := []grpc.ServerOption{
		grpc.MaxHeaderListSize(uint32(lim.MaxHeaderListSize)),
		grpc.MaxConcurrentStreams(lim.MaxConcurrentStreams),
		grpc.ConnectionTimeout(lim.HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: lim.IdleTimeout}),
		grpc.ForceServerCodecV2(s.codec),
		grpc.UnknownServiceHandler(s.unknownMethod),
		grpc.MaxRecvMsgSize(opts.MaxMessageSize),
		grpc.MaxSendMsgSize(opts.MaxMessageSize),
		// The SDKs ping every 5 s (Go) or 10 s (pymilvus) even when idle;
		// grpc-go's default policy would answer GOAWAY too_many_pings.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Reuse handler goroutines: each call runs a backend call on
		// its stack, and a fresh goroutine per stream pays to grow
		// that stack every time. (When all workers are busy gRPC starts
		// a goroutine anyway; nothing queues behind a slow call.)
		grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0))),
		// Static windows: no BDP-estimation pings per message, fewer
		// write syscalls per request.
		grpc.InitialWindowSize(windowSize),
		grpc.InitialConnWindowSize(connWindowSize),
	}
	// Every connection passes the rapid-reset guard (grpc_guard.go),
	// behind TLS when there is TLS.
	creds := opts.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	guard := &guardCreds{TransportCredentials: creds,
		rate: float64(lim.ResetsPerSecond), burst: 10 * float64(lim.ResetsPerSecond),
		maxBlock: lim.MaxHeaderListSize + relay.HeaderBlockByteMargin,
		penalty:  relay.NewPeerPenalty(lim.AbuseReconnectInterval)}
	if obs, ok := opts.Observer.(RelayObserver); ok {
		guard.onClose = func(reason string) { obs.RelayEvent(RelayConnClosed, reason) }
	}
	sopts = append(sopts, grpc.Creds(guard))
	// The response budget (grpc_budget.go).
	var event func(RelayEvent)
	if obs, ok := opts.Observer.(RelayObserver); ok {
		event = func(ev RelayEvent) { obs.RelayEvent(ev, "") }
	}
	s.gbudget = newGRPCRespBudget(lim, event)
	sopts = append(sopts, grpc.StatsHandler(grpcBudgetStats{s.gbudget}))
	sopts = append(sopts, opts.ServerOptions...)
	s.grpc = grpc.NewServer(sopts...)
	s.grpc.RegisterService(s.serviceDesc(), s)
	healthpb.RegisterHealthServer(s.grpc, s.health)
}

// serviceDesc is MilvusService as gRPC sees it: every method of the pinned
// proto, each handled by the proxy with raw frames.
func (s *Server) serviceDesc() *grpc.ServiceDesc {
	sd := &grpc.ServiceDesc{
		ServiceName: milvusServiceName,
		HandlerType: (*any)(nil),
		Metadata:    "milvus.proto",
	}
	for _, m := range s.methods {
		if m.stream {
			sd.Streams = append(sd.Streams, grpc.StreamDesc{
				StreamName:    m.name,
				Handler:       s.streamHandler(m),
				ServerStreams: m.serverStreams,
				ClientStreams: m.clientStreams,
			})
			continue
		}
		sd.Methods = append(sd.Methods, grpc.MethodDesc{MethodName: m.name, Handler: s.unaryHandler(m)})
	}
	return sd
}

// Serve accepts connections on lis until Shutdown. It returns nil after a
// Shutdown.
func (s *Server) Serve(lis net.Listener) error {
	if s.relay != nil {
		return s.relay.Serve(lis)
	}
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown drains the server: health turns NOT_SERVING, new calls are
// refused, calls in flight may finish until ctx is done; then the server
// stops hard. It returns ctx.Err() when it had to cut calls.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.stopOnce.Do(func() { close(s.stopWatch) })
	<-s.watchDone
	s.updateHealth() // NOT_SERVING, and stays so
	// Wake every health watcher even if the status did not change: the
	// relay ends Watch streams on drain, so one cannot hold the drain.
	s.hmu.Lock()
	close(s.hchanged)
	s.hchanged = make(chan struct{})
	s.hmu.Unlock()
	if s.health != nil {
		s.health.Shutdown()
	}
	if s.relay != nil {
		err := s.relay.Shutdown(ctx)
		s.pool.Close()
		return err
	}

	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-stopped
		return ctx.Err()
	}
}

// watchTopology keeps the health status in step with the topology:
// SERVING while a leader is known.
func (s *Server) watchTopology() {
	defer close(s.watchDone)
	for {
		ch := s.topo.Changed()
		s.updateHealth()
		select {
		case <-ch:
		case <-s.stopWatch:
			return
		}
	}
}

func (s *Server) updateHealth() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if snap := s.topo.Snapshot(); snap != nil && snap.Leader != nil && !s.draining.Load() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.hmu.Lock()
	if st != s.hstatus {
		s.hstatus = st
		close(s.hchanged)
		s.hchanged = make(chan struct{})
	}
	s.hmu.Unlock()
	if s.health != nil {
		s.health.SetServingStatus("", st)
		s.health.SetServingStatus(milvusServiceName, st)
	}
}

// healthState returns the serving status and a channel closed when it
// changes.
func (s *Server) healthState() (healthpb.HealthCheckResponse_ServingStatus, <-chan struct{}) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	return s.hstatus, s.hchanged
}

func (s *Server) unknownMethod(_ any, ss grpc.ServerStream) error {
	name, _ := grpc.MethodFromServerStream(ss)
	return status.Errorf(codes.Unimplemented, "milvus-ha-proxy: unknown method %s", name)
}

var errDraining = status.Error(codes.Unavailable, "milvus-ha-proxy: shutting down")

func (s *Server) grpcCallOpts() []grpc.CallOption { return s.grpcOpts }

// clusterHeader returns the (shared, read-only) header metadata naming a
// cluster.
func (s *Server) clusterHeader(id string) metadata.MD {
	if v, ok := s.headers.Load(id); ok {
		return v.(metadata.MD)
	}
	md := metadata.MD{HeaderCluster: []string{id}}
	v, _ := s.headers.LoadOrStore(id, md)
	return v.(metadata.MD)
}

// Methods returns the method table: every method of MilvusService with
// its class, in descriptor order. For status pages and tests.
func (s *Server) Methods() []MethodInfo {
	out := make([]MethodInfo, len(s.methods))
	for i, m := range s.methods {
		out[i] = MethodInfo{Name: m.name, Class: m.class, Idempotent: m.idempotent, Stream: m.stream}
	}
	return out
}

// MethodInfo describes one method of the table.
type MethodInfo struct {
	Name       string
	Class      Class
	Idempotent bool
	Stream     bool
}
