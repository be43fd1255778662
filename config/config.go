// Package config is milvus-ha-proxy's YAML configuration: the types, their
// defaults, strict loading (unknown keys are errors) and validation whose
// errors name the offending key, so `serve` can exit 2 with a message an
// operator can act on.
//
// Every key carries a `doc` struct tag; Reference lists them with their
// defaults for the README, and a test fails when a key has no doc.
package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"
)

// EnvConfig names the environment variable that may hold the config file's
// path when no --config flag is given.
const EnvConfig = "MILVUS_HA_PROXY_CONFIG"

// Discovery is how the proxy learns the clusters' roles.
type Discovery string

// Discovery modes.
const (
	// DiscoveryReplicate asks the clusters (GetReplicateConfiguration).
	DiscoveryReplicate Discovery = "replicate"
	// DiscoveryStatic takes the roles from this file.
	DiscoveryStatic Discovery = "static"
)

// Role is a cluster's role in static discovery.
type Role string

// Roles (docs/architecture.md, "Roles").
const (
	RoleLeader      Role = "leader"
	RoleAlternative Role = "alternative"
	RoleStandby     Role = "standby"
)

// StrongReads says where Strong reads go.
type StrongReads string

// Strong read policies.
const (
	StrongReadsLeader StrongReads = "leader"
	StrongReadsWait   StrongReads = "wait"
)

// Engine names the proxy's transport implementation.
type Engine string

// Engines.
const (
	EngineRelay Engine = "relay"
	EngineGRPC  Engine = "grpc"
)

// FailoverMode says whether the proxy promotes a new leader by itself.
type FailoverMode string

// Failover modes.
const (
	FailoverAuto   FailoverMode = "auto"
	FailoverManual FailoverMode = "manual"
)

// Config is the whole file. Build one with Default (then Validate) or with
// Load/Parse, which apply defaults and validate.
type Config struct {
	Listen      string      `yaml:"listen" doc:"gRPC listen address (host:port) for Milvus clients; --listen overrides it."`
	AdminListen string      `yaml:"admin_listen" doc:"Admin HTTP listen address: /metrics, /healthz, /readyz, /api/v1/...; --admin-listen overrides it. Keep it off public networks: it can trigger failovers."`
	AdminPprof  bool        `yaml:"admin_pprof" doc:"Serve Go's runtime profiles on the admin port under /debug/pprof/ (go tool pprof http://ADMIN/debug/pprof/profile). Off by default: a CPU profile or trace costs CPU while it runs."`
	Discovery   Discovery   `yaml:"discovery" doc:"How cluster roles are learned: replicate (GetReplicateConfiguration on the clusters) or static (the role keys below)."`
	Clusters    []Cluster   `yaml:"clusters" doc:"Every Milvus cluster the proxy may talk to, in order of preference (the order breaks ties)."`
	TLS         ServerTLS   `yaml:"tls,omitempty" doc:"TLS for Milvus clients connecting to the proxy. Off when cert_file is empty."`
	Engine      Engine      `yaml:"engine" doc:"How calls are carried: relay (the default: the proxy speaks HTTP/2 itself on both sides and relays frames between client and cluster, at about half the CPU per call of grpc) or grpc (a grpc-go server in front of grpc-go client connections)."`
	Relay       Relay       `yaml:"relay" doc:"Limits of each client connection of the relay engine (engine: relay): what one client may hold or do before it is refused or closed, so that it cannot hurt the others. The keys that say so bound the grpc engine too."`
	Read        Read        `yaml:"read" doc:"Where reads go."`
	Consistency Consistency `yaml:"consistency" doc:"How consistency levels map to required timestamps."`
	Replication Replication `yaml:"replication" doc:"Tracking of replication progress on the alternatives."`
	Failover    Failover    `yaml:"failover" doc:"Leader-loss detection and promotion."`
	Health      Health      `yaml:"health" doc:"Health probes of every cluster."`
	Drain       Drain       `yaml:"drain" doc:"Graceful stop on SIGTERM/SIGINT."`
	Arbiter     Arbiter     `yaml:"arbiter" doc:"Coordination of several proxies in front of the same clusters through etcd. Empty: this proxy decides alone, and then only one proxy may run with failover.mode auto."`
	Telemetry   Telemetry   `yaml:"telemetry" doc:"Tracing; metrics are always served on the admin port at /metrics."`
	Log         Log         `yaml:"log" doc:"Logging to stderr."`
	Runtime     Runtime     `yaml:"runtime" doc:"The Go runtime's garbage collector, as serve sets it at start."`

	// baseDir resolves relative file paths (TLS files); the config file's
	// directory when loaded with Load, the working directory otherwise.
	baseDir string
	// lines maps key paths to the lines they were read from, so errors
	// found after loading can still point into the file.
	lines map[string]int
}

// Cluster is one Milvus cluster.
type Cluster struct {
	ID    string     `yaml:"id" doc:"The cluster's id; with replicate discovery it must equal the Milvus cluster_id in the replicate configuration. Letters, digits, '.', '_', '-'."`
	URI   string     `yaml:"uri" doc:"Address of the cluster's Milvus proxy: host:port, http://host:port or https://host:port (https turns TLS on)."`
	Token Secret     `yaml:"token,omitempty" doc:"The proxy's own credentials (\"user:password\" or an API key) for its topology calls (discovery, checkpoints, failover). Client calls carry the client's own credentials. Never logged."`
	TLS   ClusterTLS `yaml:"tls,omitempty" doc:"TLS towards this cluster. On when the uri is https:// or any key here is set."`
	Role  Role       `yaml:"role,omitempty" doc:"Static discovery: leader, alternative or standby (exactly one leader). Replicate discovery takes roles from the clusters; only standby (take no client traffic) may be given there."`
}

// ClusterTLS is the client side of TLS towards one cluster.
type ClusterTLS struct {
	CAFile             string `yaml:"ca_file,omitempty" doc:"PEM CA bundle that signs the cluster's certificate; empty uses the system roots."`
	CertFile           string `yaml:"cert_file,omitempty" doc:"PEM client certificate for mutual TLS (needs key_file)."`
	KeyFile            string `yaml:"key_file,omitempty" doc:"PEM private key of cert_file."`
	ServerName         string `yaml:"server_name,omitempty" doc:"Name to verify the cluster's certificate against, when it differs from the uri's host."`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify,omitempty" doc:"Do not verify the cluster's certificate. For tests only: it allows anyone in the path to read the traffic."`
}

// ServerTLS is TLS for clients connecting to the proxy.
type ServerTLS struct {
	CertFile     string `yaml:"cert_file,omitempty" doc:"PEM certificate the proxy serves gRPC with; setting it turns TLS on (needs key_file)."`
	KeyFile      string `yaml:"key_file,omitempty" doc:"PEM private key of cert_file."`
	ClientCAFile string `yaml:"client_ca_file,omitempty" doc:"PEM CA bundle; when set, clients must present a certificate it signs (mutual TLS)."`
}

// Relay is the relay engine's per-connection limits.
type Relay struct {
	MaxConcurrentStreams   int      `yaml:"max_concurrent_streams" doc:"Calls one client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); a call past it is refused (REFUSED_STREAM) and clients retry it."`
	MaxHeaderListSize      int      `yaml:"max_header_list_size" doc:"Bytes of request headers (decoded, as HTTP/2 counts them: name + value + 32 per field) one call may carry (SETTINGS_MAX_HEADER_LIST_SIZE); a larger call is refused with ResourceExhausted, a header block far over it or whose CONTINUATION frames take over 10s closes the connection."`
	HandshakeTimeout       Duration `yaml:"handshake_timeout" doc:"How long a new client connection may take for its TLS handshake and HTTP/2 preface."`
	IdleTimeout            Duration `yaml:"idle_timeout" doc:"A client connection without a call for this long (pings do not count) is sent GOAWAY and closed; clients reconnect on their next call (grpc-go's MaxConnectionIdle). Checked once per period, so it closes between one and two periods of idleness."`
	WriteTimeout           Duration `yaml:"write_timeout" doc:"A client connection whose socket accepts nothing for this long (the client stopped reading) is closed; it never holds up answers to other clients."`
	ConnOutputBuffer       int      `yaml:"conn_output_buffer" doc:"Bytes of answers one client connection may have waiting for its socket before further answers to it wait; at 4x + 4 MiB (frames piling up regardless) the connection is closed."`
	ConnResponseBuffer     int      `yaml:"conn_response_buffer" doc:"Bytes of cluster answers the proxy may hold for one client connection (received, not yet written to its socket). Past it the proxy stops granting the clusters flow-control window for that connection's calls until the client reads (back-pressure, never more buffering); other clients' calls on the same cluster connections keep flowing. Each call may run ahead by backend_stream_window, and one answer larger than this still completes. Both engines (grpc: a call reads its answer from the cluster only once the budget admits it)."`
	ResponseBuffer         int64    `yaml:"response_buffer" doc:"The same bound as conn_response_buffer for all client connections together: past it, calls beyond each connection's oldest wait for window. Both engines."`
	BackendStreamWindow    int      `yaml:"backend_stream_window" doc:"The flow-control window each call starts with towards a cluster (SETTINGS_INITIAL_WINDOW_SIZE, at least 65535): how far one answer may run ahead of the response budgets. Larger windows move multi-megabyte answers in fewer round trips. Both engines (grpc: the stream window of the clusters' grpc-go connections)."`
	KeepaliveMinTime       Duration `yaml:"keepalive_min_time" doc:"Keepalive enforcement, as grpc-go's server: a client pinging more often than this three times without an answer in between is closed with GOAWAY ENHANCE_YOUR_CALM too_many_pings. The SDKs ping every 5 s (Go) or 10 s (pymilvus)."`
	KeepaliveWithoutCalls  bool     `yaml:"keepalive_permit_without_calls" doc:"Whether clients may ping while they have no call open (the SDKs do)."`
	ResetsPerSecond        int      `yaml:"resets_per_second" doc:"Resets of calls not yet answered one client connection may send per second, bursting to 10x (the HTTP/2 rapid reset attack, CVE-2023-44487); past it the connection is closed with GOAWAY ENHANCE_YOUR_CALM. Cancelling calls now and then, as SDKs do, stays far below. The grpc engine enforces it too."`
	ControlFramesPerSecond int      `yaml:"control_frames_per_second" doc:"SETTINGS frames and empty DATA or CONTINUATION frames one client connection may send per second, bursting to 10x; past it the connection is closed with GOAWAY ENHANCE_YOUR_CALM."`
	AbuseReconnectInterval Duration `yaml:"abuse_reconnect_interval" doc:"After the proxy closed a client connection with GOAWAY ENHANCE_YOUR_CALM (too many resets, empty frames, SETTINGS, or a header block too large), new connections from the same IP address are served one per this interval for the next 10 s, each waiting for its turn (one more than 1 s away is closed at once), so that a client reconnecting in a loop cannot take the CPU. Open connections are never touched; clients behind one NAT address share the wait. Both engines; 0 turns it off."`
}

// Read is the read-routing policy.
type Read struct {
	LeaderServesReads  bool     `yaml:"leader_serves_reads" doc:"Whether the leader takes a share of reads alongside eligible alternatives. It always serves reads no alternative can."`
	Balance            string   `yaml:"balance" doc:"Load balancing among eligible clusters: p2c (power of two choices on outstanding requests)."`
	DescribeFailureTTL Duration `yaml:"describe_failure_ttl" doc:"How long a failed DescribeCollection (collection not found, or the leader overloaded, restarting or not implementing it) is remembered before it is asked again. Reads meanwhile go to the leader as sent and get its own answer, so a struggling leader sees one DescribeCollection per collection per period instead of one per read. 0: not remembered."`
}

// Consistency is how levels turn into required timestamps.
type Consistency struct {
	BoundedStaleness Duration    `yaml:"bounded_staleness" doc:"How stale a Bounded read may be (Milvus's common.gracefulTime)."`
	StrongReads      StrongReads `yaml:"strong_reads" doc:"Strong reads go to the leader (leader), or to an alternative that catches up within max_wait (wait)."`
	MaxWait          Duration    `yaml:"max_wait" doc:"With strong_reads: wait, how long a Strong read waits for an alternative before it goes to the leader."`
	EventuallyMaxLag Duration    `yaml:"eventually_max_lag" doc:"Eventually reads skip alternatives lagging more than this; 0 means no cap."`
}

// Replication is how replication progress is tracked.
type Replication struct {
	PollInterval Duration `yaml:"poll_interval" doc:"How often each alternative's replication checkpoints are polled (GetReplicateInfo)."`
}

// Failover is leader-loss handling.
type Failover struct {
	Mode        FailoverMode `yaml:"mode" doc:"auto: promote the most caught-up alternative when the leader is lost; manual: only on POST /api/v1/failover (milvus-ha-proxy failover)."`
	DetectAfter Duration     `yaml:"detect_after" doc:"How long probes and data-path calls must fail before the leader is declared lost."`
	WriteHold   Duration     `yaml:"write_hold" doc:"How long writes wait for a new leader during a failover or switchover before failing with Unavailable."`
	StateFile   string       `yaml:"state_file" doc:"File that keeps the record of the latest leader change (its steps) and the quarantines in force, so a restarted proxy settles an interrupted change and keeps reads and switchovers away from clusters that lack data. Empty: kept in memory only (lost on restart)."`
}

// Health is the probing of clusters.
type Health struct {
	ProbeInterval Duration `yaml:"probe_interval" doc:"How often every cluster is probed."`
	ProbeTimeout  Duration `yaml:"probe_timeout" doc:"How long one probe may take before it counts as failed."`
}

// Drain is the graceful stop.
type Drain struct {
	GracePeriod Duration `yaml:"grace_period" doc:"On SIGTERM/SIGINT, /readyz turns 503 and new calls are refused; calls in flight get this long to finish before the proxy exits. Keep it below the orchestrator's kill timeout (Kubernetes: 30s)."`
}

// Arbiter coordinates several proxies in front of the same clusters: they
// elect one decider through an etcd lease, and every proxy routes by the
// topology the decider writes to etcd.
type Arbiter struct {
	Etcd             Etcd   `yaml:"etcd,omitempty" doc:"The etcd cluster (3.4 or later; the one Milvus runs on will do) the proxies coordinate through. Off when endpoints is empty."`
	ProxyID          string `yaml:"proxy_id,omitempty" doc:"This proxy's name among the proxies, unique per prefix; empty: the host name and the admin port (host-9091). Letters, digits, '.', '_', '-'."`
	AdvertiseAddress string `yaml:"advertise_address,omitempty" doc:"The admin address (host:port) other proxies forward switchover and failover requests to while this proxy decides; empty: admin_listen, with a wildcard host replaced by the host name."`
}

// Etcd is the etcd connection of the arbiter.
type Etcd struct {
	Endpoints []string   `yaml:"endpoints,omitempty" doc:"etcd client endpoints: host:port, http://host:port or https://host:port (https turns TLS on). Setting them turns the etcd arbiter on."`
	Prefix    string     `yaml:"prefix,omitempty" doc:"Key prefix of this set of proxies in etcd; empty: /milvus-ha-proxy/ followed by the cluster ids, sorted and joined with '+' (/milvus-ha-proxy/a+b+c). Proxies in front of the same clusters must share it."`
	Username  string     `yaml:"username,omitempty" doc:"etcd user (etcd authentication); needs password."`
	Password  Secret     `yaml:"password,omitempty" doc:"Password of username. Never logged."`
	TLS       ClusterTLS `yaml:"tls,omitempty" doc:"TLS towards etcd. On when an endpoint is https:// or any key here is set."`
	LeaseTTL  Duration   `yaml:"lease_ttl" doc:"TTL of this proxy's etcd lease, in whole seconds: a decider that dies is replaced after about this long, and a proxy cut off from etcd for longer holds writes (up to failover.write_hold), then refuses them."`
}

// Enabled reports whether the etcd arbiter is configured.
func (a *Arbiter) Enabled() bool { return len(a.Etcd.Endpoints) > 0 }

// EtcdPrefix returns arbiter.etcd.prefix, or its default for the clusters
// of c.
func (c *Config) EtcdPrefix() string {
	if p := c.Arbiter.Etcd.Prefix; p != "" {
		return strings.TrimSuffix(p, "/")
	}
	ids := make([]string, 0, len(c.Clusters))
	for _, cl := range c.Clusters {
		ids = append(ids, cl.ID)
	}
	slices.Sort(ids)
	return "/milvus-ha-proxy/" + strings.Join(ids, "+")
}

// EtcdEndpoints returns the etcd endpoints as host:port (the form the etcd
// client dials) and whether TLS is on.
func (c *Config) EtcdEndpoints() (eps []string, useTLS bool, err error) {
	t := c.Arbiter.Etcd.TLS
	useTLS = t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
	for _, raw := range c.Arbiter.Etcd.Endpoints {
		addr, tls, err := parseURI(raw)
		if err != nil {
			return nil, false, err
		}
		useTLS = useTLS || tls
		eps = append(eps, addr)
	}
	return eps, useTLS, nil
}

// EtcdTLSConfig returns the TLS configuration towards etcd, or nil (and no
// error) when TLS is off.
func (c *Config) EtcdTLSConfig() (*tls.Config, error) {
	_, on, err := c.EtcdEndpoints()
	if err != nil || !on {
		return nil, err
	}
	cfg, kerr := clientTLS(c.Arbiter.Etcd.TLS)
	if kerr != nil {
		return nil, fmt.Errorf("arbiter.etcd.tls.%w", kerr)
	}
	return cfg, nil
}

// ProxyID returns arbiter.proxy_id, or its default: the host name and the
// admin port.
func (c *Config) ProxyID() string { return c.ProxyIDFor(c.AdminListen) }

// ProxyIDFor is ProxyID for an admin listener bound at adminAddr (its
// port stands in for the configured one, which may be 0).
func (c *Config) ProxyIDFor(adminAddr string) string {
	if c.Arbiter.ProxyID != "" {
		return c.Arbiter.ProxyID
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "proxy"
	}
	_, port, _ := net.SplitHostPort(adminAddr)
	return host + "-" + port
}

// AdvertiseAddress returns arbiter.advertise_address, or admin_listen with
// a wildcard host replaced by the host name.
func (c *Config) AdvertiseAddress() string { return c.AdvertiseAddressFor(c.AdminListen) }

// AdvertiseAddressFor is AdvertiseAddress for an admin listener bound at
// adminAddr.
func (c *Config) AdvertiseAddressFor(adminAddr string) string {
	if c.Arbiter.AdvertiseAddress != "" {
		return c.Arbiter.AdvertiseAddress
	}
	host, port, err := net.SplitHostPort(adminAddr)
	if err != nil {
		return adminAddr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host, _ = os.Hostname()
	}
	return net.JoinHostPort(host, port)
}

// Telemetry is tracing.
type Telemetry struct {
	OTLPEndpoint string  `yaml:"otlp_endpoint" doc:"OTLP/gRPC collector for traces: host:port (plaintext), http://host:port (plaintext) or https://host:port (TLS). Empty: no traces."`
	ServiceName  string  `yaml:"service_name" doc:"service.name of the traces and the metrics' target_info."`
	SampleRatio  float64 `yaml:"sample_ratio" doc:"Fraction of new traces sampled, 0 to 1; a client's sampled trace is always continued."`
}

// Log is logging.
type Log struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error; --log-level overrides it. No level logs tokens or passwords."`
	Format string `yaml:"format" doc:"text or json; --log-format overrides it."`
}

// Runtime is the garbage collector's settings for serve.
type Runtime struct {
	GCPercent   int   `yaml:"gc_percent" doc:"How far the heap may grow past what was live after the last collection before the next one, in percent (Go's GOGC; -1 turns collection off until memory_limit). The proxy's live heap is small and it allocates on every call, so at Go's default of 100 it collects several times a second under load; 400 collects a quarter as often, for about a fifth less CPU per call (make bench-proxy), at the cost of a heap up to 5x the live one. The GOGC environment variable, when set, wins."`
	MemoryLimit int64 `yaml:"memory_limit" doc:"A soft limit, in bytes, on the memory the Go runtime uses (Go's GOMEMLIMIT): near it the collector runs as often as it must, whatever gc_percent says. 0: no limit. In a container, about 80% of its memory limit. The GOMEMLIMIT environment variable, when set, wins."`
}

// Default returns a Config holding every documented default
// (docs/config.md), with no clusters; it does not validate until clusters
// are added.
func Default() *Config {
	return &Config{
		Listen:      "0.0.0.0:19530",
		AdminListen: "127.0.0.1:9091",
		Discovery:   DiscoveryReplicate,
		Engine:      EngineRelay,
		Relay: Relay{
			MaxConcurrentStreams:   1024,
			MaxHeaderListSize:      64 << 10,
			HandshakeTimeout:       Duration(10 * time.Second),
			IdleTimeout:            Duration(2 * time.Minute),
			WriteTimeout:           Duration(30 * time.Second),
			ConnOutputBuffer:       4 << 20,
			ConnResponseBuffer:     8 << 20,
			ResponseBuffer:         256 << 20,
			BackendStreamWindow:    64 << 10,
			KeepaliveMinTime:       Duration(5 * time.Second),
			KeepaliveWithoutCalls:  true,
			ResetsPerSecond:        100,
			ControlFramesPerSecond: 100,
			AbuseReconnectInterval: Duration(100 * time.Millisecond),
		},
		Read: Read{
			LeaderServesReads:  true,
			Balance:            "p2c",
			DescribeFailureTTL: Duration(time.Second),
		},
		Consistency: Consistency{
			BoundedStaleness: Duration(5 * time.Second),
			StrongReads:      StrongReadsLeader,
			MaxWait:          0,
			EventuallyMaxLag: 0,
		},
		Replication: Replication{PollInterval: Duration(100 * time.Millisecond)},
		Failover: Failover{
			Mode:        FailoverAuto,
			DetectAfter: Duration(time.Second),
			WriteHold:   Duration(10 * time.Second),
		},
		Health: Health{
			ProbeInterval: Duration(200 * time.Millisecond),
			ProbeTimeout:  Duration(500 * time.Millisecond),
		},
		Drain:     Drain{GracePeriod: Duration(20 * time.Second)},
		Arbiter:   Arbiter{Etcd: Etcd{LeaseTTL: Duration(5 * time.Second)}},
		Telemetry: Telemetry{ServiceName: "milvus-ha-proxy", SampleRatio: 1},
		Log:       Log{Level: "info", Format: "text"},
		Runtime:   Runtime{GCPercent: 400},
	}
}

// Leader returns the cluster configured as leader (static discovery), or nil.
func (c *Config) Leader() *Cluster {
	for i := range c.Clusters {
		if c.Clusters[i].Role == RoleLeader {
			return &c.Clusters[i]
		}
	}
	return nil
}

// Cluster returns the cluster with the given id, or nil.
func (c *Config) Cluster(id string) *Cluster {
	for i := range c.Clusters {
		if c.Clusters[i].ID == id {
			return &c.Clusters[i]
		}
	}
	return nil
}

// String renders the effective configuration as YAML with every secret
// redacted, for `serve --check` and debug logs.
func (c *Config) String() string {
	out, err := marshalRedacted(c)
	if err != nil {
		return fmt.Sprintf("<config: %v>", err)
	}
	return out
}

// ResolvePath returns the config file to load: flagValue when set, else
// $MILVUS_HA_PROXY_CONFIG. It fails, naming both, when neither is set.
func ResolvePath(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p := os.Getenv(EnvConfig); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("no config file: pass --config FILE or set %s", EnvConfig)
}
