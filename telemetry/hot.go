package telemetry

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// The per-call metrics (milvus_ha_proxy_requests, _request_duration and
// _reads) are recorded on every call the proxy relays, so they are kept
// out of the OpenTelemetry SDK's synchronous instruments, which take a
// lock, resolve the attribute set and aggregate on every Add or Record
// (about a microsecond per call between them, a few percent of what the
// relay spends on a call). Here a call costs one map lookup and a few
// atomic adds on counters of its own series; the series are handed to the
// exporter at scrape time by a metric Producer (sdk/metric's hook for
// metrics aggregated outside the SDK), under the same names, units,
// descriptions and labels, so the exposition is unchanged.

// hotMetrics holds the per-call series. It implements sdkmetric.Producer.
type hotMetrics struct {
	start time.Time
	// reqs maps requestKey to *reqSeries; a series is created once per
	// label combination and never removed (the label values are the
	// bounded sets docs/metrics.md lists).
	reqs  sync.Map
	durs  sync.Map // durKey -> *histSeries
	reads sync.Map // [2]string{cluster, reason} -> *countSeries
	// bounds are rpcBuckets in nanoseconds, for the comparisons on the
	// call path.
	bounds []int64
	// recent is a direct-mapped cache in front of reqs and reads, indexed
	// by the label strings' addresses: the proxy passes the same strings
	// on every call (method names from its table, constants, cluster ids
	// from the topology), so a hit costs no hashing of their bytes.
	recentReq  [64]atomic.Pointer[reqSeries]
	recentRead [64]atomic.Pointer[countSeries]
}

// slot mixes the addresses of up to five strings into a cache index.
func slot(a, b, c, d, e string) int {
	x := uintptr(unsafe.Pointer(unsafe.StringData(a)))
	for _, s := range [...]string{b, c, d, e} {
		x = x*31 + uintptr(unsafe.Pointer(unsafe.StringData(s)))
	}
	x ^= x >> 17
	x ^= x >> 7
	return int(x & 63)
}

type durKey struct{ method, class, cluster string }

// countSeries is one counter series.
type countSeries struct {
	attrs attribute.Set
	n     atomic.Int64
	rkey  [2]string // reads only: cluster, reason
}

// histSeries is one histogram series: counts per bucket (the last one is
// +Inf) and the sum of the observations in nanoseconds. Count is the sum
// of the buckets, so a scrape never shows a count its buckets disagree
// with.
type histSeries struct {
	attrs   attribute.Set
	buckets []atomic.Uint64
	sumNS   atomic.Int64
}

// reqSeries is a requests counter series with the duration series its
// calls are also recorded in.
type reqSeries struct {
	countSeries
	key requestKey
	dur *histSeries
}

func newHotMetrics() *hotMetrics {
	h := &hotMetrics{start: time.Now(), bounds: make([]int64, len(rpcBuckets))}
	for i, b := range rpcBuckets {
		h.bounds[i] = int64(b * float64(time.Second))
	}
	return h
}

// request counts one call and its duration.
func (h *hotMetrics) request(r Request) {
	k := requestKey{r.Method, r.Class, r.Cluster, r.Role, r.Code}
	i := slot(k.method, k.class, k.cluster, k.role, k.code)
	s := h.recentReq[i].Load()
	if s == nil || s.key != k {
		v, ok := h.reqs.Load(k)
		if !ok {
			v = h.newRequest(k)
		}
		s = v.(*reqSeries)
		h.recentReq[i].Store(s)
	}
	s.n.Add(1)
	s.dur.observe(h.bounds, int64(r.Duration))
}

func (h *hotMetrics) newRequest(k requestKey) *reqSeries {
	dk := durKey{k.method, k.class, k.cluster}
	d, ok := h.durs.Load(dk)
	if !ok {
		d, _ = h.durs.LoadOrStore(dk, &histSeries{
			attrs: attribute.NewSet(attribute.String(labelMethod, k.method),
				attribute.String(labelClass, k.class), attribute.String(labelCluster, k.cluster)),
			buckets: make([]atomic.Uint64, len(h.bounds)+1),
		})
	}
	s := &reqSeries{key: k, dur: d.(*histSeries)}
	s.attrs = attribute.NewSet(attribute.String(labelMethod, k.method), attribute.String(labelClass, k.class),
		attribute.String(labelCluster, k.cluster), attribute.String(labelRole, k.role),
		attribute.String(labelCode, k.code))
	v, _ := h.reqs.LoadOrStore(k, s)
	return v.(*reqSeries)
}

// observe records one duration of ns nanoseconds. Buckets are upper
// bounds, inclusive, as Prometheus' le and OpenTelemetry's explicit
// buckets are.
func (s *histSeries) observe(bounds []int64, ns int64) {
	i := 0
	for i < len(bounds) && ns > bounds[i] {
		i++
	}
	s.buckets[i].Add(1)
	s.sumNS.Add(ns)
}

// read counts one read routed to cluster for reason.
func (h *hotMetrics) read(cluster, reason string) {
	k := [2]string{cluster, reason}
	i := slot(cluster, reason, "", "", "")
	s := h.recentRead[i].Load()
	if s == nil || s.rkey != k {
		v, ok := h.reads.Load(k)
		if !ok {
			v, _ = h.reads.LoadOrStore(k, &countSeries{rkey: k, attrs: attribute.NewSet(
				attribute.String(labelCluster, cluster), attribute.String(labelReason, reason))})
		}
		s = v.(*countSeries)
		h.recentRead[i].Store(s)
	}
	s.n.Add(1)
}

// Produce implements sdkmetric.Producer: the per-call series as
// cumulative sums and histograms, in the proxy's instrumentation scope.
func (h *hotMetrics) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	sum := func(m *sync.Map) metricdata.Sum[int64] {
		out := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
		m.Range(func(_, v any) bool {
			var s *countSeries
			switch v := v.(type) {
			case *reqSeries:
				s = &v.countSeries
			case *countSeries:
				s = v
			}
			out.DataPoints = append(out.DataPoints, metricdata.DataPoint[int64]{
				Attributes: s.attrs, StartTime: h.start, Time: now, Value: s.n.Load()})
			return true
		})
		return out
	}
	bounds := slices.Clone(rpcBuckets)
	dur := metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
	h.durs.Range(func(_, v any) bool {
		s := v.(*histSeries)
		dp := metricdata.HistogramDataPoint[float64]{Attributes: s.attrs, StartTime: h.start, Time: now,
			Bounds: bounds, BucketCounts: make([]uint64, len(s.buckets))}
		for i := range s.buckets {
			dp.BucketCounts[i] = s.buckets[i].Load()
			dp.Count += dp.BucketCounts[i]
		}
		dp.Sum = float64(s.sumNS.Load()) / float64(time.Second)
		dur.DataPoints = append(dur.DataPoints, dp)
		return true
	})
	var ms []metricdata.Metrics
	if reqs := sum(&h.reqs); len(reqs.DataPoints) > 0 {
		ms = append(ms, metricdata.Metrics{Name: "milvus_ha_proxy_requests", Description: descRequests,
			Unit: "{request}", Data: reqs})
	}
	if len(dur.DataPoints) > 0 {
		ms = append(ms, metricdata.Metrics{Name: "milvus_ha_proxy_request_duration", Description: descDuration,
			Unit: "s", Data: dur})
	}
	if reads := sum(&h.reads); len(reads.DataPoints) > 0 {
		ms = append(ms, metricdata.Metrics{Name: "milvus_ha_proxy_reads", Description: descReads,
			Unit: "{read}", Data: reads})
	}
	if len(ms) == 0 {
		return nil, nil
	}
	return []metricdata.ScopeMetrics{{Scope: instrumentation.Scope{Name: ScopeName}, Metrics: ms}}, nil
}

// Descriptions of the per-call metrics (the HELP lines).
const (
	descRequests = "Calls proxied, by gRPC method, routing class, serving cluster, its role and the gRPC status code."
	descDuration = "Time from a call's arrival at the proxy to its answer, by method, class and serving cluster."
	descReads    = "Reads (Search, HybridSearch, Query) routed, by serving cluster and reason: alternative, leader_balanced, leader_lag, leader_strong, leader_no_alternative, leader_fallback, leader_no_collection, leader_wait, leader_strong_alloc."
)
