package telemetry

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Read routing reasons, the values of the reason label of
// milvus_ha_proxy_reads_total. They are the router's reasons
// (router.Reason) and the proxy's own (proxy.Reason*), passed through as
// they are; test/ops checks that the two lists agree.
const (
	// ReadAlternative: an eligible alternative served the read.
	ReadAlternative = "alternative"
	// ReadLeaderBalanced: the leader was among the eligible clusters
	// (read.leader_serves_reads) and balancing chose it.
	ReadLeaderBalanced = "leader_balanced"
	// ReadLeaderLag: healthy alternatives exist but none had replicated up
	// to the read's required timestamp (or their lag was unknown).
	ReadLeaderLag = "leader_lag"
	// ReadLeaderStrong: a Strong read with consistency.strong_reads: leader.
	ReadLeaderStrong = "leader_strong"
	// ReadLeaderNoAlternative: no alternative was usable at all (down,
	// breaker open, quarantined, or none configured).
	ReadLeaderNoAlternative = "leader_no_alternative"
	// ReadLeaderFallback: the alternative chosen answered that it could
	// not serve the read (e.g. the collection is not there yet), so the
	// leader did.
	ReadLeaderFallback = "leader_fallback"
	// ReadLeaderNoCollection: the collection's facts (pchannels, default
	// level) were unknown, so the read went to the leader as sent.
	ReadLeaderNoCollection = "leader_no_collection"
	// ReadLeaderWait: no cluster could serve the read (a failover under
	// way, or the leader unreachable and no alternative eligible); the
	// read waited for a writable leader as writes do.
	ReadLeaderWait = "leader_wait"
	// ReadLeaderStrongAlloc: strong_reads: wait, but taking a timestamp
	// from the leader failed, so the leader served the read.
	ReadLeaderStrongAlloc = "leader_strong_alloc"
)

// ReadReasons lists every value of the reason label of
// milvus_ha_proxy_reads_total, for documentation and tests.
func ReadReasons() []string {
	return []string{ReadAlternative, ReadLeaderBalanced, ReadLeaderLag, ReadLeaderStrong,
		ReadLeaderNoAlternative, ReadLeaderFallback, ReadLeaderNoCollection, ReadLeaderWait, ReadLeaderStrongAlloc}
}

// Outcomes of a write held during a leader change, the values of the
// outcome label of milvus_ha_proxy_writes_held_total.
const (
	HoldReleased = "released"  // a leader appeared and the write went on
	HoldTimedOut = "timed_out" // failover.write_hold ran out; Unavailable
	HoldCanceled = "canceled"  // the client gave up first
)

// Results of failovers and switchovers, the values of their result label.
const (
	ResultOK      = "ok"
	ResultRefused = "refused" // not attempted: unknown target, already leader, busy...
	ResultFailed  = "failed"  // attempted and did not complete
)

// Request describes one proxied call, for RecordRequest.
type Request struct {
	// Method is the short gRPC method name ("Search", "Insert").
	Method string
	// Class is the routing class: read, write, ddl, admin...
	Class string
	// Cluster is the id of the cluster that served it; "" when the call
	// never reached one.
	Cluster string
	// Role is that cluster's role when the call was routed.
	Role string
	// Code is the gRPC status code name ("OK", "Unavailable").
	Code string
	// Duration is the time the proxy took, end to end.
	Duration time.Duration
}

// ClusterState is one cluster as the metrics report it, from the topology
// snapshot at scrape time.
type ClusterState struct {
	ID          string
	Role        string // leader | alternative | standby
	Healthy     bool
	Quarantined bool
	// Breaker is closed, half-open or open.
	Breaker string
	// LagSeconds is how far this cluster's replication trails the leader.
	// Ignored for the leader; reported as +Inf when LagKnown is false,
	// since unknown lag counts as stale.
	LagSeconds float64
	LagKnown   bool
	// Outstanding is the number of calls in flight to the cluster.
	Outstanding int64
}

// State is the topology as the metrics report it.
type State struct {
	Epoch       uint64
	FailingOver bool
	Clusters    []ClusterState
	// Arbiter is the etcd arbiter's state; nil without one.
	Arbiter *ArbiterState
}

// ArbiterState is the etcd arbiter as the metrics report it.
type ArbiterState struct {
	// Connected: etcd confirmed this proxy's lease within its TTL.
	Connected bool
	// Deciding: this proxy is the elected decider.
	Deciding bool
	// Fenced: writes are held, then refused, because this proxy cannot
	// confirm the leader with etcd.
	Fenced bool
	// Epoch is the topology epoch last read from etcd.
	Epoch uint64
}

// Metrics are the proxy's instruments. Every method is safe for concurrent
// use and a no-op on a nil *Metrics, so packages can take one optionally.
type Metrics struct {
	// hot holds the per-call series (requests, request_duration, reads).
	hot          *hotMetrics
	retries      metric.Int64Counter
	leaderChange metric.Int64Counter
	failovers    metric.Int64Counter
	switchovers  metric.Int64Counter
	held         metric.Int64Counter
	holdDuration metric.Float64Histogram
	waiting      metric.Int64UpDownCounter
	relayHeld    metric.Int64UpDownCounter
	relayRefused metric.Int64Counter
	relayClosed  metric.Int64Counter

	// Attribute sets are built once per distinct label combination and
	// reused, so recording is a map lookup plus the instrument update.
	oneOpts sync.Map // oneKey -> *oneOpts

	state atomic.Pointer[func() State]
}

type requestKey struct{ method, class, cluster, role, code string }

type oneKey struct{ key, value string }

// Options are cached as slices: passing a cached slice with opts... costs
// no allocation, where a fresh variadic argument would.
type oneOpts struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

// Label names.
const (
	labelMethod  = "method"
	labelClass   = "class"
	labelCluster = "cluster"
	labelRole    = "role"
	labelCode    = "code"
	labelReason  = "reason"
	labelOutcome = "outcome"
	labelResult  = "result"
	labelLeader  = "leader"
)

// rpcBuckets suit proxied RPCs: sub-millisecond cache hits to searches and
// writes held through a failover.
var rpcBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// instruments creates instruments on meter and keeps the first error, so
// newMetrics reads as a list.
type instruments struct {
	meter metric.Meter
	err   error
}

func (b *instruments) keep(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *instruments) counter(name, desc, unit string) metric.Int64Counter {
	c, err := b.meter.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
	b.keep(err)
	return c
}

// seconds is a histogram of durations with the given bucket boundaries.
func (b *instruments) seconds(name, desc string, buckets ...float64) metric.Float64Histogram {
	h, err := b.meter.Float64Histogram(name, metric.WithDescription(desc),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(buckets...))
	b.keep(err)
	return h
}

// gauge is a unitless observable gauge, read by newMetrics' callback.
func (b *instruments) gauge(name, desc string) metric.Int64ObservableGauge {
	g, err := b.meter.Int64ObservableGauge(name, metric.WithDescription(desc))
	b.keep(err)
	return g
}

// newMetrics creates the instruments on meter; hot, the per-call series,
// must be a producer of the meter's reader (see hotMetrics).
func newMetrics(meter metric.Meter, hot *hotMetrics) (*Metrics, error) {
	b := &instruments{meter: meter}
	m := &Metrics{
		hot: hot,
		retries: b.counter("milvus_ha_proxy_retries",
			"Calls retried on another cluster after a transport failure, by method and class.",
			"{retry}"),
		leaderChange: b.counter("milvus_ha_proxy_leader_changes",
			"Leader changes, by reason (failover, switchover, discovery) and new leader.",
			"{change}"),
		failovers: b.counter("milvus_ha_proxy_failovers",
			"Failovers (forced promotions), by result: ok, refused, failed.",
			"{failover}"),
		switchovers: b.counter("milvus_ha_proxy_switchovers",
			"Switchovers (planned leader changes), by result: ok, refused, failed.",
			"{switchover}"),
		held: b.counter("milvus_ha_proxy_writes_held",
			"Writes held while no leader was available, by outcome: released, timed_out, canceled.",
			"{write}"),
		relayRefused: b.counter("milvus_ha_proxy_relay_refused",
			"Calls or streams the relay engine refused at the edge, by reason: malformed, not_grpc, streams, header_list, header_block, message_size, cardinality.",
			"{refusal}"),
		relayClosed: b.counter("milvus_ha_proxy_relay_connections_closed",
			"Client connections the relay engine closed, by reason: protocol_error, abuse, too_many_pings, idle, write_timeout, output_overflow, penalty (a new connection from an address closed for abuse a moment ago, refused at once: relay.abuse_reconnect_interval); the grpc engine counts its abuse and penalty closes here too.",
			"{connection}"),
		holdDuration: b.seconds("milvus_ha_proxy_write_hold_duration",
			"How long held writes waited for a leader, by outcome.",
			.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60),
	}
	var e error
	m.waiting, e = meter.Int64UpDownCounter("milvus_ha_proxy_writes_waiting",
		metric.WithDescription("Writes waiting for a leader right now."),
		metric.WithUnit("{write}"))
	b.keep(e)
	m.relayHeld, e = meter.Int64UpDownCounter("milvus_ha_proxy_relay_streams_held",
		metric.WithDescription("Calls whose cluster answer is held back right now (no flow-control window granted: the relay engine withholds it; the grpc engine does not read the answer yet, or does not send the call yet) because their client connection, or the proxy, is over its response buffer (relay.conn_response_buffer, relay.response_buffer)."),
		metric.WithUnit("{stream}"))
	b.keep(e)

	g := newStateGauges(meter, b)
	if b.err != nil {
		return nil, b.err
	}
	_, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if fn := m.state.Load(); fn != nil {
			g.observe(o, (*fn)())
		}
		return nil
	}, g.lag, g.breaker, g.healthy, g.quarantined, g.outstanding, g.epoch, g.failingOver,
		g.arbConnected, g.arbDeciding, g.arbFenced, g.arbEpoch)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// stateGauges are the gauges read from the topology's State at scrape
// time (Metrics.SetStateSource).
type stateGauges struct {
	lag                                            metric.Float64ObservableGauge
	breaker, healthy, quarantined, outstanding     metric.Int64ObservableGauge
	epoch, failingOver                             metric.Int64ObservableGauge
	arbConnected, arbDeciding, arbFenced, arbEpoch metric.Int64ObservableGauge
}

// newStateGauges creates the state gauges on meter; errors go to b.
func newStateGauges(meter metric.Meter, b *instruments) *stateGauges {
	lag, e := meter.Float64ObservableGauge("milvus_ha_proxy_replication_lag",
		metric.WithDescription("How far each non-leader cluster's replication trails the leader; +Inf while unknown (a failed checkpoint poll counts as stale)."),
		metric.WithUnit("s"))
	b.keep(e)
	return &stateGauges{
		lag: lag,
		breaker: b.gauge("milvus_ha_proxy_breaker_state",
			"Circuit breaker per cluster: 0 closed, 1 half-open, 2 open."),
		healthy: b.gauge("milvus_ha_proxy_cluster_healthy",
			"1 when the cluster's health probes pass, else 0; labelled with its current role."),
		quarantined: b.gauge("milvus_ha_proxy_cluster_quarantined",
			"1 when the cluster is quarantined (it holds data the leader lacks after a forced failover) and gets no reads."),
		outstanding: b.gauge("milvus_ha_proxy_cluster_outstanding_requests",
			"Calls in flight to each cluster."),
		epoch: b.gauge("milvus_ha_proxy_epoch",
			"Leader changes since the proxy started."),
		failingOver: b.gauge("milvus_ha_proxy_failover_in_progress",
			"1 while the leader is lost and no new leader is promoted yet (writes are held)."),
		arbConnected: b.gauge("milvus_ha_proxy_arbiter_connected",
			"With the etcd arbiter: 1 while etcd confirms this proxy's lease, 0 when it is cut off (it then routes by the last topology it read and never decides)."),
		arbDeciding: b.gauge("milvus_ha_proxy_arbiter_deciding",
			"With the etcd arbiter: 1 on the proxy elected to decide leader changes, else 0."),
		arbFenced: b.gauge("milvus_ha_proxy_arbiter_writes_fenced",
			"With the etcd arbiter: 1 while writes are held (then refused) because this proxy cannot confirm the leader with etcd."),
		arbEpoch: b.gauge("milvus_ha_proxy_arbiter_epoch",
			"With the etcd arbiter: the topology epoch this proxy last read from etcd (the same on every proxy that is caught up)."),
	}
}

// observe reports st on the gauges.
func (g *stateGauges) observe(o metric.Observer, st State) {
	o.ObserveInt64(g.epoch, int64(st.Epoch))
	o.ObserveInt64(g.failingOver, b2i(st.FailingOver))
	if a := st.Arbiter; a != nil {
		o.ObserveInt64(g.arbConnected, b2i(a.Connected))
		o.ObserveInt64(g.arbDeciding, b2i(a.Deciding))
		o.ObserveInt64(g.arbFenced, b2i(a.Fenced))
		o.ObserveInt64(g.arbEpoch, int64(a.Epoch))
	}
	for _, c := range st.Clusters {
		id := metric.WithAttributeSet(attribute.NewSet(attribute.String(labelCluster, c.ID)))
		o.ObserveInt64(g.healthy, b2i(c.Healthy), metric.WithAttributeSet(attribute.NewSet(
			attribute.String(labelCluster, c.ID), attribute.String(labelRole, c.Role))))
		o.ObserveInt64(g.quarantined, b2i(c.Quarantined), id)
		o.ObserveInt64(g.outstanding, c.Outstanding, id)
		if s, ok := breakerValue(c.Breaker); ok {
			o.ObserveInt64(g.breaker, s, id)
		}
		if c.Role != "leader" {
			v := c.LagSeconds
			if !c.LagKnown {
				v = math.Inf(1)
			}
			o.ObserveFloat64(g.lag, v, id)
		}
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func breakerValue(s string) (int64, bool) {
	switch s {
	case "closed":
		return 0, true
	case "half-open", "half_open":
		return 1, true
	case "open":
		return 2, true
	}
	return 0, false
}

// SetStateSource installs the function the gauges read at every scrape
// (replication lag, breaker state, health, quarantine, outstanding calls,
// epoch). It must be cheap and must not block: it runs on the scrape.
// Until it is set those gauges are absent.
func (m *Metrics) SetStateSource(fn func() State) {
	if m == nil {
		return
	}
	m.state.Store(&fn)
}

// RecordRequest counts one proxied call and its duration.
func (m *Metrics) RecordRequest(ctx context.Context, r Request) {
	if m == nil {
		return
	}
	m.hot.request(r)
}

// RecordRead counts one read routed to cluster for reason (the Read*
// constants).
func (m *Metrics) RecordRead(ctx context.Context, cluster, reason string) {
	if m == nil {
		return
	}
	m.hot.read(cluster, reason)
}

// one returns the cached options for a single-label attribute set.
func (m *Metrics) one(key, value string) *oneOpts {
	k := oneKey{key, value}
	if v, ok := m.oneOpts.Load(k); ok {
		return v.(*oneOpts)
	}
	o := metric.WithAttributeSet(attribute.NewSet(attribute.String(key, value)))
	v, _ := m.oneOpts.LoadOrStore(k, &oneOpts{add: []metric.AddOption{o}, rec: []metric.RecordOption{o}})
	return v.(*oneOpts)
}

// RecordRetry counts a call retried on another cluster.
func (m *Metrics) RecordRetry(ctx context.Context, method, class string) {
	if m == nil {
		return
	}
	m.retries.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(
		attribute.String(labelMethod, method), attribute.String(labelClass, class))))
}

// RecordRelayRefused counts a call or stream the relay refused at the
// edge, by reason.
func (m *Metrics) RecordRelayRefused(ctx context.Context, reason string) {
	if m == nil {
		return
	}
	m.relayRefused.Add(ctx, 1, m.one(labelReason, reason).add...)
}

// RecordRelayClosed counts a client connection the relay closed, by
// reason.
func (m *Metrics) RecordRelayClosed(ctx context.Context, reason string) {
	if m == nil {
		return
	}
	m.relayClosed.Add(ctx, 1, m.one(labelReason, reason).add...)
}

// RecordLeaderChange counts a change of leader to newLeader; reason is
// failover, switchover or discovery (the clusters changed it themselves).
func (m *Metrics) RecordLeaderChange(ctx context.Context, reason, newLeader string) {
	if m == nil {
		return
	}
	m.leaderChange.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(
		attribute.String(labelReason, reason), attribute.String(labelLeader, newLeader))))
}

// RecordFailover counts a failover attempt by result (Result* constants).
func (m *Metrics) RecordFailover(ctx context.Context, result string) {
	if m == nil {
		return
	}
	m.failovers.Add(ctx, 1, m.one(labelResult, result).add...)
}

// RecordSwitchover counts a switchover attempt by result (Result* constants).
func (m *Metrics) RecordSwitchover(ctx context.Context, result string) {
	if m == nil {
		return
	}
	m.switchovers.Add(ctx, 1, m.one(labelResult, result).add...)
}

// RelayStreamsHeld adds delta to the relay's backend streams held back by
// the response budget.
func (m *Metrics) RelayStreamsHeld(ctx context.Context, delta int64) {
	if m == nil {
		return
	}
	m.relayHeld.Add(ctx, delta)
}

// WriteHoldStarted marks a write that starts waiting for a leader; pair it
// with exactly one WriteHoldEnded.
func (m *Metrics) WriteHoldStarted(ctx context.Context) {
	if m == nil {
		return
	}
	m.waiting.Add(ctx, 1)
}

// WriteHoldEnded marks a held write that stopped waiting after waited, with
// outcome (Hold* constants).
func (m *Metrics) WriteHoldEnded(ctx context.Context, outcome string, waited time.Duration) {
	if m == nil {
		return
	}
	m.waiting.Add(ctx, -1)
	opt := m.one(labelOutcome, outcome)
	m.held.Add(ctx, 1, opt.add...)
	m.holdDuration.Record(ctx, waited.Seconds(), opt.rec...)
}
