package proxy

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/consistency"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/relay"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
)

// Topology is what the proxy needs from the topology manager.
type Topology interface {
	// Snapshot returns the current routing view (an atomic load).
	Snapshot() *topology.Snapshot
	// Changed returns a channel closed when a newer snapshot is published.
	Changed() <-chan struct{}
	// WaitLeader returns the leader; during a failover it blocks up to
	// write_hold and then fails with codes.Unavailable.
	WaitLeader(ctx context.Context) (*topology.Cluster, error)
	// WaitWritable returns the leader a write may be sent to now, waiting
	// across a call's attempts (one WriteWait per call) up to write_hold
	// while there is none, it is fenced, or it refused the last attempt.
	WaitWritable(ctx context.Context, w *topology.WriteWait) (*topology.Cluster, error)
	// Allow asks the cluster's circuit breaker for permission to send one
	// request; done reports its outcome. err is set when the breaker is
	// open (the request must not be sent).
	Allow(clusterID string) (done func(success bool), err error)
	// LeaderNow is a calibrated estimate of the leader's current TSO.
	LeaderNow() uint64
	// AllocLeaderTimestamp asks the leader for a fresh TSO.
	AllocLeaderTimestamp(ctx context.Context) (uint64, error)
	// Collection returns the collection's routing facts (cached
	// DescribeCollection on the leader); failures are cached too, for a
	// shorter time.
	Collection(ctx context.Context, db, name string) (topology.CollectionInfo, error)
	// CachedCollection is Collection without calling out or blocking: ok
	// reports whether a cached answer (success or failure) exists for the
	// current leader. The relay engine routes with it on its connection
	// goroutines.
	CachedCollection(db, name string) (info topology.CollectionInfo, ok bool, err error)
	// InvalidateCollection drops the cached facts of db.name; name ""
	// means every collection of db (after DropDatabase).
	InvalidateCollection(db, name string)
}

// Router picks the cluster that serves a read (router.Router).
type Router interface {
	PickRead(snap *topology.Snapshot, req router.ReadRequest) router.Decision
}

// StrongReads says where Strong reads go (config consistency.strong_reads).
type StrongReads string

// Strong read policies.
const (
	// StrongLeader sends Strong reads to the leader, unchanged: the
	// leader resolves "now" itself, exactly as without the proxy.
	StrongLeader StrongReads = "leader"
	// StrongWait takes a fresh timestamp from the leader and waits up to
	// MaxWait for an alternative that has replicated it, else the leader.
	StrongWait StrongReads = "wait"
)

// Options configure a Server.
type Options struct {
	// Topology and Router are required.
	Topology Topology
	Router   Router

	// StrongReads and MaxWait: config consistency.strong_reads and
	// max_wait. Empty means StrongLeader.
	StrongReads StrongReads
	MaxWait     time.Duration
	// BoundedStaleness: config consistency.bounded_staleness (0 means
	// Milvus's default, 5s).
	BoundedStaleness time.Duration
	// EventuallyMaxLag: config consistency.eventually_max_lag (0: no cap).
	EventuallyMaxLag time.Duration
	// (read.leader_serves_reads belongs to the Router:
	// router.Options.LeaderServesReads.)

	// Sessions records the writes and DDL of client sessions. nil: a
	// tracker of SessionCapacity entries.
	Sessions        *consistency.Tracker
	SessionCapacity int

	// Creds are the server's transport credentials (TLS); nil: plaintext.
	Creds credentials.TransportCredentials

	// Engine selects how calls are carried. EngineRelay (the default, as
	// in config.Default) speaks HTTP/2 frames on both sides. EngineGRPC is
	// a grpc-go server with the topology's grpc-go connections behind it:
	// ServerOptions (interceptors, stats handlers) apply. EngineRelay
	// speaks HTTP/2 frames on both sides and costs about half the CPU per
	// call; with it, CallHook stands in for interceptors and BackendCreds
	// for the TLS of the topology's connections.
	Engine Engine
	// CallHook (relay engine) runs when a call starts, with the client's
	// metadata: changes to md go on to the backend (e.g. a trace context
	// injected), the returned context is the call's, and end is called
	// once with the call's outcome.
	CallHook func(ctx context.Context, fullMethod string, md metadata.MD) (_ context.Context, end func(error))
	// DialBackend opens the relay engine's connection to a cluster. nil:
	// TCP to the cluster's URI.
	DialBackend func(ctx context.Context, c *topology.Cluster) (net.Conn, error)
	// BackendCreds returns the transport credentials (TLS) for the relay
	// engine's connections to a cluster; nil or a nil result: plaintext.
	BackendCreds func(c *topology.Cluster) credentials.TransportCredentials
	// BackendKeepalive (relay engine) pings a cluster's connection after
	// Time without a frame from it and closes the connection when nothing
	// arrives within Timeout, so that a cluster gone silent (host down,
	// network partition) fails its calls instead of holding them until
	// their deadlines. Zero Time: DefaultBackendKeepalive. A cluster that
	// answers GOAWAY too_many_pings gets half as many pings from then on,
	// as grpc-go does.
	BackendKeepalive keepalive.ClientParameters
	// RelayLimits (relay engine) bound each client connection's streams,
	// output and memory; zero fields take DefaultRelayLimits.
	RelayLimits RelayLimits
	// MaxMessageSize bounds messages in both directions, to clients and
	// to backends. 0: 256 MiB, Milvus's own server default.
	MaxMessageSize int
	// ServerOptions are appended to the gRPC server's options (stats
	// handlers, interceptors, keepalive overrides): grpc engine only. With
	// the relay engine, Observer is the hook.
	ServerOptions []grpc.ServerOption

	// Observer, when set, is told about every call once it ends.
	Observer Observer
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// DefaultBackendKeepalive is what the topology's grpc-go connections to
// the clusters use too; Milvus permits pings every 5 s, with or without
// calls.
var DefaultBackendKeepalive = relay.DefaultKeepalive

// Engine names a transport implementation.
type Engine string

// Engines.
const (
	EngineRelay Engine = "relay"
	EngineGRPC  Engine = "grpc"
)

// Observer receives one event per call the proxy handles. It runs on the
// request path: keep it cheap. With a nil Observer nothing is computed.
type Observer interface {
	ObserveCall(ctx context.Context, ev CallEvent)
}

// CallEvent describes one finished call.
type CallEvent struct {
	Method string // short method name, e.g. "Search"
	Class  Class
	// Cluster and Role name the cluster that served the final attempt;
	// empty when none did (no leader, local answer).
	Cluster string
	Role    topology.Role
	// Reason is the routing reason: a router.Reason for reads, or one of
	// the proxy's own (ReasonLeaderOnly, ReasonLocal, ...).
	Reason string
	// Level is the effective consistency level of a read, Required its
	// required timestamp R (0 for none or for Strong on the leader).
	Level    consistency.Level
	Required uint64
	// Code is the gRPC status of the call; MilvusCode the merr code of
	// the response's Milvus status (0 on success or no status).
	Code       codes.Code
	MilvusCode int32
	// Attempts counts the backends tried (retries after transport
	// failures and fallbacks to the leader included).
	Attempts int
	Duration time.Duration
}

// Routing reasons of the proxy's own, next to router.Reason values.
const (
	ReasonLeaderOnly        = "leader_only"                           // writes, DDL, leader-only methods
	ReasonLocal             = "local"                                 // answered by the proxy
	ReasonLeaderWait        = "leader_wait"                           // no cluster known; waited for a leader
	ReasonLeaderFallback    = string(router.ReasonLeaderFallback)     // an alternative could not serve it
	ReasonLeaderNoCollInfo  = string(router.ReasonLeaderNoCollection) // the collection's facts are unknown
	ReasonLeaderStrongAlloc = string(router.ReasonLeaderStrongAlloc)  // strong_reads: wait, AllocTimestamp failed
)

// RelayLimits bound what one client connection of the relay engine may
// hold or do (relay.Limits); zero fields take DefaultRelayLimits' values.
type RelayLimits = relay.Limits

// DefaultRelayLimits are the relay's limits when Options.RelayLimits
// leaves a field zero.
var DefaultRelayLimits = relay.DefaultLimits

// RelayEvent is what a RelayObserver is told (relay.Event).
type RelayEvent = relay.Event

// Relay events: see relay.EventRefused, relay.EventConnClosed,
// relay.EventStreamHeld and relay.EventStreamResumed.
const (
	RelayRefused       = relay.EventRefused
	RelayConnClosed    = relay.EventConnClosed
	RelayStreamHeld    = relay.EventStreamHeld
	RelayStreamResumed = relay.EventStreamResumed
)

// RelayObserver is told about the relay's refusals, the client
// connections it closes and the backend streams it holds back, when the
// Options.Observer implements it.
type RelayObserver = relay.Observer
