package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Validate checks a Config (one built in code, or one changed after Load)
// and returns Errors naming every offending key. It reads the TLS files, so
// `serve --check` catches a missing or unreadable certificate.
func (c *Config) Validate() error {
	return c.validate(c.lines)
}

// idPattern keeps ids safe in URLs (/sim/{id}/...), metric labels and
// Milvus pchannel names (<id>-rootcoord-dml_<i>).
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// validate checks the configuration section by section and gathers every
// offending key into one Errors.
func (c *Config) validate(lines map[string]int) error {
	e := &errs{lines: lines}
	c.validateListeners(e)
	switch c.Discovery {
	case DiscoveryReplicate, DiscoveryStatic:
	default:
		e.add("discovery", "unknown value %q (want replicate or static)", c.Discovery)
	}
	c.validateClusters(e)
	if _, kerr := serverTLS(c.TLS); kerr != nil {
		e.add("tls."+kerr.key, "%v", kerr.err)
	}
	c.validateRelay(e)
	c.validateReads(e)
	positive(e, "replication.poll_interval", c.Replication.PollInterval)
	c.validateFailover(e)
	nonNegative(e, "drain.grace_period", c.Drain.GracePeriod)
	c.validateArbiter(e)
	c.validateTelemetry(e)
	c.validateLogRuntime(e)
	return e.err()
}

// validateListeners checks listen and admin_listen.
func (c *Config) validateListeners(e *errs) {
	checkListen(e, "listen", c.Listen)
	checkListen(e, "admin_listen", c.AdminListen)
	// Port 0 asks the kernel for a free port, so two ":0" listeners differ.
	if c.Listen != "" && c.Listen == c.AdminListen && !strings.HasSuffix(c.Listen, ":0") {
		e.add("admin_listen", "same address as listen (%s); the admin API needs its own port", c.Listen)
	}
}

// validateRelay checks engine and the relay section.
func (c *Config) validateRelay(e *errs) {
	if c.Engine != EngineRelay && c.Engine != EngineGRPC {
		e.add("engine", "unknown value %q (want relay or grpc)", c.Engine)
	}
	for _, v := range []struct {
		key string
		n   int64
	}{
		{"relay.max_concurrent_streams", int64(c.Relay.MaxConcurrentStreams)},
		{"relay.max_header_list_size", int64(c.Relay.MaxHeaderListSize)},
		{"relay.handshake_timeout", int64(c.Relay.HandshakeTimeout)},
		{"relay.idle_timeout", int64(c.Relay.IdleTimeout)},
		{"relay.write_timeout", int64(c.Relay.WriteTimeout)},
		{"relay.conn_output_buffer", int64(c.Relay.ConnOutputBuffer)},
		{"relay.conn_response_buffer", int64(c.Relay.ConnResponseBuffer)},
		{"relay.response_buffer", c.Relay.ResponseBuffer},
		{"relay.backend_stream_window", int64(c.Relay.BackendStreamWindow)},
		{"relay.keepalive_min_time", int64(c.Relay.KeepaliveMinTime)},
		{"relay.resets_per_second", int64(c.Relay.ResetsPerSecond)},
		{"relay.control_frames_per_second", int64(c.Relay.ControlFramesPerSecond)},
	} {
		if v.n <= 0 {
			e.add(v.key, "must be positive")
		}
	}
	if c.Relay.AbuseReconnectInterval < 0 {
		e.add("relay.abuse_reconnect_interval", "must not be negative (0 turns it off)")
	}
	if n := c.Relay.MaxConcurrentStreams; n > 1<<31-1 {
		e.add("relay.max_concurrent_streams", "%d is over 2^31-1", n)
	}
	if n := c.Relay.BackendStreamWindow; n > 0 && (n < 65535 || n > 1<<31-1) {
		e.add("relay.backend_stream_window", "%d is outside HTTP/2's window sizes (65535 to 2^31-1)", n)
	}
	if n := c.Relay.MaxHeaderListSize; n > 1<<30 {
		e.add("relay.max_header_list_size", "%d is over 1 GiB", n)
	}
}

// validateReads checks the read and consistency sections.
func (c *Config) validateReads(e *errs) {
	if c.Read.Balance != "p2c" {
		e.add("read.balance", "unknown value %q (want p2c)", c.Read.Balance)
	}
	nonNegative(e, "read.describe_failure_ttl", c.Read.DescribeFailureTTL)

	nonNegative(e, "consistency.bounded_staleness", c.Consistency.BoundedStaleness)
	nonNegative(e, "consistency.max_wait", c.Consistency.MaxWait)
	nonNegative(e, "consistency.eventually_max_lag", c.Consistency.EventuallyMaxLag)
	switch c.Consistency.StrongReads {
	case StrongReadsLeader:
	case StrongReadsWait:
		if c.Consistency.MaxWait <= 0 {
			e.add("consistency.max_wait", "must be above 0 with strong_reads: wait (how long a Strong read waits for an alternative)")
		}
	default:
		e.add("consistency.strong_reads", "unknown value %q (want leader or wait)", c.Consistency.StrongReads)
	}
}

// validateFailover checks the failover and health sections, which bound
// each other (a leader is declared lost only after probes could see it).
func (c *Config) validateFailover(e *errs) {
	switch c.Failover.Mode {
	case FailoverAuto, FailoverManual:
	default:
		e.add("failover.mode", "unknown value %q (want auto or manual)", c.Failover.Mode)
	}
	positive(e, "failover.detect_after", c.Failover.DetectAfter)
	nonNegative(e, "failover.write_hold", c.Failover.WriteHold)

	positive(e, "health.probe_interval", c.Health.ProbeInterval)
	positive(e, "health.probe_timeout", c.Health.ProbeTimeout)
	if c.Failover.DetectAfter > 0 && c.Health.ProbeInterval > 0 && c.Failover.DetectAfter < c.Health.ProbeInterval {
		e.add("failover.detect_after", "%s is shorter than health.probe_interval (%s): the leader could be declared lost between two probes",
			c.Failover.DetectAfter, c.Health.ProbeInterval)
	}
}

// validateTelemetry checks the telemetry section.
func (c *Config) validateTelemetry(e *errs) {
	if c.Telemetry.OTLPEndpoint != "" {
		if _, _, err := ParseOTLPEndpoint(c.Telemetry.OTLPEndpoint); err != nil {
			e.add("telemetry.otlp_endpoint", "%v", err)
		}
	}
	if c.Telemetry.ServiceName == "" {
		e.add("telemetry.service_name", "must not be empty")
	}
	if c.Telemetry.SampleRatio < 0 || c.Telemetry.SampleRatio > 1 {
		e.add("telemetry.sample_ratio", "%v is outside 0..1", c.Telemetry.SampleRatio)
	}
}

// validateLogRuntime checks the log and runtime sections.
func (c *Config) validateLogRuntime(e *errs) {
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		e.add("log.level", "unknown value %q (want debug, info, warn or error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		e.add("log.format", "unknown value %q (want text or json)", c.Log.Format)
	}
	if c.Runtime.GCPercent < -1 {
		e.add("runtime.gc_percent", "%d is below -1 (want a percentage, or -1 for off)", c.Runtime.GCPercent)
	}
	if c.Runtime.MemoryLimit < 0 {
		e.add("runtime.memory_limit", "%d is negative (want bytes, or 0 for no limit)", c.Runtime.MemoryLimit)
	}
	if c.Runtime.GCPercent == -1 && c.Runtime.MemoryLimit == 0 {
		e.add("runtime.gc_percent", "-1 (collection off) needs runtime.memory_limit, or the heap grows without bound")
	}
}

func (c *Config) validateClusters(e *errs) {
	if len(c.Clusters) == 0 {
		e.add("clusters", "at least one cluster is required")
		return
	}
	ids := map[string]int{}
	addrs := map[string]int{}
	leader := -1
	for i := range c.Clusters {
		cl := &c.Clusters[i]
		p := fmt.Sprintf("clusters[%d]", i)
		switch {
		case cl.ID == "":
			e.add(p+".id", "required")
		case !idPattern.MatchString(cl.ID):
			e.add(p+".id", "invalid id %q (letters, digits, '.', '_', '-'; at most 64; starting with a letter or digit)", cl.ID)
		default:
			if j, dup := ids[cl.ID]; dup {
				e.add(p+".id", "duplicate id %q (also clusters[%d])", cl.ID, j)
			} else {
				ids[cl.ID] = i
			}
		}

		if cl.URI == "" {
			e.add(p+".uri", "required")
		} else if addr, _, err := parseURI(cl.URI); err != nil {
			e.add(p+".uri", "%v", err)
		} else if j, dup := addrs[addr]; dup {
			e.add(p+".uri", "same address as clusters[%d] (%s)", j, addr)
		} else {
			addrs[addr] = i
		}

		if cl.TLS.InsecureSkipVerify && cl.TLS.CAFile != "" {
			e.add(p+".tls.insecure_skip_verify", "conflicts with ca_file: either verify against the CA or do not verify")
		}
		if _, kerr := clientTLS(cl.TLS); kerr != nil {
			e.add(p+".tls."+kerr.key, "%v", kerr.err)
		}

		switch c.Discovery {
		case DiscoveryStatic:
			switch cl.Role {
			case RoleLeader:
				if leader >= 0 {
					e.add(p+".role", "a second leader (clusters[%d] is leader); static discovery needs exactly one cluster with role leader", leader)
				} else {
					leader = i
				}
			case RoleAlternative, RoleStandby:
			case "":
				e.add(p+".role", "required with static discovery (leader, alternative or standby)")
			default:
				e.add(p+".role", "unknown value %q (want leader, alternative or standby)", cl.Role)
			}
		case DiscoveryReplicate:
			switch cl.Role {
			case "", RoleStandby:
			case RoleLeader, RoleAlternative:
				e.add(p+".role", "%q is only for static discovery; with replicate discovery the clusters say who leads (only standby may be set here)", cl.Role)
			default:
				e.add(p+".role", "unknown value %q (only standby may be set with replicate discovery)", cl.Role)
			}
		}
	}
	if c.Discovery == DiscoveryStatic && leader < 0 {
		e.add("clusters", "static discovery needs exactly one cluster with role leader")
	}
}

func checkListen(e *errs, key, addr string) {
	if addr == "" {
		e.add(key, "required (host:port)")
		return
	}
	if err := checkHostPort(addr); err != nil {
		e.add(key, "%v", err)
	}
}

func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return nil
}

// parseURI accepts host:port, http://host:port, tcp://host:port and
// https://host:port (TLS), the forms Milvus SDKs take, and returns host:port.
func parseURI(raw string) (addr string, useTLS bool, err error) {
	s := raw
	shown := safeURI(raw)
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", false, fmt.Errorf("invalid uri %q", shown)
		}
		switch u.Scheme {
		case "http", "tcp", "grpc":
		case "https", "grpcs":
			useTLS = true
		default:
			return "", false, fmt.Errorf("uri %q: unknown scheme %q (want http or https, or plain host:port)", shown, u.Scheme)
		}
		if u.User != nil {
			return "", false, fmt.Errorf("uri %q: put credentials in token, not in the uri", shown)
		}
		if u.Path != "" && u.Path != "/" {
			return "", false, fmt.Errorf("uri %q: a path is not supported (clients choose the database)", shown)
		}
		if u.Port() == "" {
			return "", false, fmt.Errorf("uri %q: missing port", shown)
		}
		s = u.Host
	}
	if err := checkHostPort(s); err != nil {
		return "", false, fmt.Errorf("uri %q: want host:port, http://host:port or https://host:port", shown)
	}
	return s, useTLS, nil
}

// safeURI hides the user-info part of a uri (user:password@) so that an
// error about the uri cannot print a password.
func safeURI(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			return redacted + s[i:]
		}
		return s
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		return scheme + "://" + redacted + rest[i:]
	}
	return s
}

// ParseOTLPEndpoint accepts host:port (plaintext), http://host:port
// (plaintext) and https://host:port (TLS), and returns host:port.
func ParseOTLPEndpoint(s string) (hostport string, insecure bool, err error) {
	insecure = true
	shown := safeURI(s)
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", false, fmt.Errorf("invalid endpoint %q", shown)
		}
		switch u.Scheme {
		case "http":
		case "https":
			insecure = false
		default:
			return "", false, fmt.Errorf("endpoint %q: unknown scheme %q (want http or https, or plain host:port)", shown, u.Scheme)
		}
		if u.User != nil {
			// Dropping them silently would export unauthenticated.
			return "", false, fmt.Errorf("endpoint %q: credentials in the endpoint are not supported; set OTEL_EXPORTER_OTLP_HEADERS instead", shown)
		}
		if u.Port() == "" {
			return "", false, fmt.Errorf("endpoint %q: missing port (the OTLP/gRPC port is usually 4317)", shown)
		}
		s = u.Host
	} else if strings.Contains(s, "@") {
		return "", false, fmt.Errorf("endpoint %q: want host:port, http://host:port or https://host:port", shown)
	}
	if err := checkHostPort(s); err != nil {
		return "", false, fmt.Errorf("endpoint: %w", err)
	}
	return s, insecure, nil
}

func positive(e *errs, key string, d Duration) {
	if d <= 0 {
		e.add(key, "must be above 0, got %s", time.Duration(d))
	}
}

func nonNegative(e *errs, key string, d Duration) {
	if d < 0 {
		e.add(key, "must not be negative, got %s", time.Duration(d))
	}
}

// validateArbiter checks the arbiter section; most keys matter only when
// etcd endpoints are set.
func (c *Config) validateArbiter(e *errs) {
	a := &c.Arbiter
	if a.ProxyID != "" && !idPattern.MatchString(a.ProxyID) {
		e.add("arbiter.proxy_id", "%q: want letters, digits, '.', '_' or '-' (at most 64)", a.ProxyID)
	}
	if a.AdvertiseAddress != "" {
		if err := checkHostPort(a.AdvertiseAddress); err != nil {
			e.add("arbiter.advertise_address", "%v", err)
		}
	}
	et := &a.Etcd
	if !a.Enabled() {
		return
	}
	for i, ep := range et.Endpoints {
		if _, _, err := parseURI(ep); err != nil {
			e.add(fmt.Sprintf("arbiter.etcd.endpoints[%d]", i), "%v", strings.Replace(err.Error(), "uri ", "endpoint ", 1))
		}
	}
	if et.Prefix != "" && (!strings.HasPrefix(et.Prefix, "/") || strings.TrimRight(et.Prefix, "/") == "") {
		e.add("arbiter.etcd.prefix", "%q: want an absolute key prefix like /milvus-ha-proxy/prod", et.Prefix)
	}
	if et.Username != "" && !et.Password.IsSet() {
		e.add("arbiter.etcd.password", "required with username")
	}
	if et.Password.IsSet() && et.Username == "" {
		e.add("arbiter.etcd.username", "required with password")
	}
	switch ttl := time.Duration(et.LeaseTTL); {
	case ttl < 2*time.Second:
		e.add("arbiter.etcd.lease_ttl", "%s is below 2s: etcd leases are whole seconds, and a 1s lease expires on one slow keepalive", ttl)
	case ttl%time.Second != 0:
		e.add("arbiter.etcd.lease_ttl", "%s is not whole seconds (etcd leases are)", ttl)
	}
	if _, kerr := clientTLS(et.TLS); kerr != nil {
		e.add("arbiter.etcd.tls."+kerr.key, "%v", kerr.err)
	}
}
