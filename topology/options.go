package topology

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Discovery modes.
const (
	// DiscoveryReplicate takes roles from GetReplicateConfiguration: the
	// source of cross_cluster_topology leads, its targets are alternatives.
	DiscoveryReplicate = "replicate"
	// DiscoveryStatic takes roles from the options.
	DiscoveryStatic = "static"
)

// ClusterOptions describe one cluster the proxy may talk to.
type ClusterOptions struct {
	// ID is the Milvus cluster id; pchannels are named "<ID>-rootcoord-dml_<i>".
	ID string
	// URI is host:port (an http://, https:// or tcp:// prefix is stripped).
	URI string
	// Token is the proxy's own credential ("user:password" or an API key)
	// for its topology and health calls only. Client requests carry the
	// client's own credentials. Never logged. A leader change also puts it
	// in this cluster's connection entry of the replicate configurations
	// it sends, where the entry has none: Milvus never returns tokens, and
	// the source's CDC logs in to its targets with them.
	Token string
	// TLS, when not nil, secures the connection; nil means plaintext.
	TLS credentials.TransportCredentials
	// Role is the static role (static discovery). In replicate mode a
	// RoleStandby here keeps a replication target out of client traffic;
	// other values are ignored.
	Role Role
}

// Options configure a Manager. The zero value of every duration means its
// default.
type Options struct {
	Clusters []ClusterOptions
	// Discovery is DiscoveryReplicate (default) or DiscoveryStatic.
	Discovery string

	// PollInterval is how often checkpoints and the leader clock are
	// polled (default 100ms). PollTimeout bounds one poll round (default
	// max(500ms, 5*PollInterval)); a round that does not finish in time
	// makes the cluster's lag unknown.
	PollInterval time.Duration
	PollTimeout  time.Duration
	// DiscoveryInterval is how often the replicate configuration is read
	// again (default 1s). Discovery also runs right after a failure.
	DiscoveryInterval time.Duration

	// ProbeInterval is how often every cluster gets a CheckHealth probe
	// (default 250ms); ProbeTimeout bounds one (default 2*ProbeInterval).
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration

	// DetectAfter: the leader is declared lost when neither a probe nor a
	// data-path request has succeeded for this long (default 1s).
	DetectAfter time.Duration
	// WriteHold is how long WaitLeader waits for a leader (default 10s).
	WriteHold time.Duration
	// HoldObserver, when set, is told about every write WaitLeader holds
	// (metrics).
	HoldObserver HoldObserver

	// FollowsLeader, when set and true, says another proxy decides the
	// leader (the etcd arbiter's decider) and this one installs it with
	// InstallLeader: discovery then keeps the installed leader even when
	// the clusters' configurations name another, and only refreshes roles
	// and claims. Without it a follower whose discovery ran before the
	// decider's topology document arrived would route writes, for a
	// moment, to a leader of its own choosing (see docs/arbiter.md).
	// Discovery still chooses the first leader of a proxy that has none.
	FollowsLeader func() bool

	// Breaker tuning. BreakerFailures consecutive failures open a
	// cluster's breaker (default 5); it stays open BreakerOpenFor (default
	// 2s), then lets BreakerHalfOpenRequests trial requests through
	// (default 3) and closes after that many consecutive successes.
	BreakerFailures         uint32
	BreakerOpenFor          time.Duration
	BreakerHalfOpenRequests uint32

	// CollectionTTL bounds how long a DescribeCollection answer is cached
	// (default 30s). The proxy invalidates entries on DDL; the TTL only
	// catches changes made behind the proxy's back.
	CollectionTTL time.Duration
	// CollectionFailureTTL is how long a failed DescribeCollection (an
	// error status such as collection not found, a gRPC error, a timeout)
	// is remembered, so that reads while the leader struggles cost it one
	// call per period instead of one per read (default 1s; negative: not
	// at all). Reads meanwhile go to the leader as sent, which gives the
	// client its own answer.
	CollectionFailureTTL time.Duration

	// DialOptions are appended to the options every cluster connection
	// is created with (stats handlers, window sizes...). Do not set a
	// codec: the data path picks its own per call.
	DialOptions []grpc.DialOption

	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// Now is the clock (default time.Now); tests replace it.
	Now func() time.Time
}

func (o *Options) withDefaults() (Options, error) {
	c := *o
	if c.Discovery == "" {
		c.Discovery = DiscoveryReplicate
	}
	if c.Discovery != DiscoveryReplicate && c.Discovery != DiscoveryStatic {
		return c, fmt.Errorf("topology: unknown discovery mode %q (want %q or %q)", c.Discovery, DiscoveryReplicate, DiscoveryStatic)
	}
	if len(c.Clusters) == 0 {
		return c, errors.New("topology: no clusters")
	}
	seen := map[string]bool{}
	leaders := 0
	for i, cl := range c.Clusters {
		if cl.ID == "" {
			return c, fmt.Errorf("topology: clusters[%d]: empty id", i)
		}
		if cl.URI == "" {
			return c, fmt.Errorf("topology: cluster %q: empty uri", cl.ID)
		}
		if seen[cl.ID] {
			return c, fmt.Errorf("topology: duplicate cluster id %q", cl.ID)
		}
		seen[cl.ID] = true
		switch cl.Role {
		case RoleLeader:
			leaders++
		case RoleAlternative, RoleStandby, "":
		default:
			return c, fmt.Errorf("topology: cluster %q: unknown role %q", cl.ID, cl.Role)
		}
	}
	if c.Discovery == DiscoveryStatic && leaders != 1 {
		return c, fmt.Errorf("topology: static discovery needs exactly one leader, got %d", leaders)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.PollInterval, 100*time.Millisecond)
	def(&c.PollTimeout, max(500*time.Millisecond, 5*c.PollInterval))
	def(&c.DiscoveryInterval, time.Second)
	def(&c.ProbeInterval, 250*time.Millisecond)
	def(&c.ProbeTimeout, 2*c.ProbeInterval)
	def(&c.DetectAfter, time.Second)
	def(&c.WriteHold, 10*time.Second)
	def(&c.BreakerOpenFor, 2*time.Second)
	def(&c.CollectionTTL, 30*time.Second)
	if c.CollectionFailureTTL == 0 {
		c.CollectionFailureTTL = time.Second
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerHalfOpenRequests == 0 {
		c.BreakerHalfOpenRequests = 3
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}
