package ops

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/milvusclient"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/telemetry"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

// Metric names as the Prometheus exposition writes them (the otel
// exporter adds _total to counters and the unit suffix).
const (
	mRequests    = "milvus_ha_proxy_requests_total"
	mDuration    = "milvus_ha_proxy_request_duration_seconds"
	mReads       = "milvus_ha_proxy_reads_total"
	mLag         = "milvus_ha_proxy_replication_lag_seconds"
	mBreaker     = "milvus_ha_proxy_breaker_state"
	mHealthy     = "milvus_ha_proxy_cluster_healthy"
	mLeaderChg   = "milvus_ha_proxy_leader_changes_total"
	mEpoch       = "milvus_ha_proxy_epoch"
	mFailingOver = "milvus_ha_proxy_failover_in_progress"
	mOutstanding = "milvus_ha_proxy_cluster_outstanding_requests"
)

// waitLoaded waits until the collection is indexed and loaded on a cluster, asking it
// directly (not through the proxy), so reads routed there can be served.
func waitLoaded(t *testing.T, addr, coll string) {
	t.Helper()
	c := testenv.Connect(t, addr, nil)
	testutil.EventuallyWhy(t, 15*time.Second, "collection "+coll+" loaded on "+addr, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := c.GetLoadState(ctx, milvusclient.NewGetLoadStateOption(coll))
		if err != nil {
			return false, err.Error()
		}
		if st.State != entity.LoadStateLoaded {
			return false, fmt.Sprint(st.State)
		}
		// The simulator applies a replicated DDL on its first copy, one
		// pchannel at a time: a load can land a moment before the index
		// it follows, so wait for the index too.
		idx, err := c.ListIndexes(ctx, milvusclient.NewListIndexOption(coll))
		if err != nil {
			return false, err.Error()
		}
		return len(idx) > 0, fmt.Sprintf("indexes %v", idx)
	})
}

// TestMetricsCountTraffic sends known traffic through the proxy with the
// Go SDK — N inserts, M Eventually searches, K Strong searches — and checks
// that GET /metrics moved by exactly those amounts, per method, class,
// cluster, role, code and routing reason; and that the per-cluster gauges
// (replication lag, breaker, health) describe the topology.
func TestMetricsCountTraffic(t *testing.T) {
	const N, M, K = 7, 21, 5
	e := testenv.Start(t, testenv.Options{Clusters: 3, Config: func(cfg *config.Config) {
		fastProbes(cfg)
		// The leader takes no share of reads, so every Eventually read must
		// go to an alternative (reason alternative) and every Strong read to
		// the leader (strong_reads: leader, reason leader_strong): exact
		// counts.
		cfg.Read.LeaderServesReads = false
		cfg.Consistency.StrongReads = config.StrongReadsLeader
	}})
	sims, a := e.Sims, e.App

	c := testenv.Connect(t, a.Addr(), nil)
	testenv.MakeCollection(t, c, "metrics")
	for _, s := range sims[1:] {
		waitLoaded(t, s.Addr(), "metrics")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Warm the SDK's schema cache, so the measured window holds only the
	// calls below (the SDK describes a collection once, then caches it).
	if err := testenv.Search(ctx, c, "metrics", 0, entity.ClStrong); err != nil {
		t.Fatal(err)
	}

	before := scrape(t, a.AdminAddr())
	for i := int64(0); i < N; i++ {
		if err := testenv.Insert(ctx, c, "metrics", i); err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(0); i < M; i++ {
		if err := testenv.Search(ctx, c, "metrics", i, entity.ClEventually); err != nil {
			t.Fatalf("eventually search %d: %v", i, err)
		}
	}
	for i := int64(0); i < K; i++ {
		if err := testenv.Search(ctx, c, "metrics", i, entity.ClStrong); err != nil {
			t.Fatalf("strong search %d: %v", i, err)
		}
	}
	after := scrape(t, a.AdminAddr())

	delta := func(name string, labels map[string]string) float64 {
		return after.sum(name, labels) - before.sum(name, labels)
	}
	type L = map[string]string
	checks := []struct {
		what   string
		name   string
		labels L
		want   float64
	}{
		{"inserts on the leader", mRequests, L{"method": "Insert", "class": "write", "cluster": "a", "role": "leader", "code": "OK"}, N},
		{"all inserts", mRequests, L{"method": "Insert"}, N},
		{"strong searches on the leader", mRequests, L{"method": "Search", "class": "read", "cluster": "a", "role": "leader", "code": "OK"}, K},
		{"eventually searches on alternatives b", mRequests, L{"method": "Search", "class": "read", "role": "alternative", "code": "OK", "cluster": "b"}, after.sum(mReads, L{"cluster": "b", "reason": "alternative"}) - before.sum(mReads, L{"cluster": "b", "reason": "alternative"})},
		{"eventually searches on alternatives", mRequests, L{"method": "Search", "class": "read", "role": "alternative", "code": "OK"}, M},
		{"all searches", mRequests, L{"method": "Search"}, M + K},
		{"failed calls", mRequests, L{"code": "Unavailable"}, 0},
		{"reads sent to alternatives", mReads, L{"reason": "alternative"}, M},
		{"strong reads sent to the leader", mReads, L{"cluster": "a", "reason": "leader_strong"}, K},
		{"all reads", mReads, nil, M + K},
		{"search latency observations", mDuration, L{"method": "Search", "class": "read"}, M + K},
		{"insert latency observations", mDuration, L{"method": "Insert", "class": "write", "cluster": "a"}, N},
	}
	for _, ck := range checks {
		if got := delta(ck.name, ck.labels); got != ck.want {
			t.Errorf("%s: %s%v moved by %v, want %v", ck.what, ck.name, ck.labels, got, ck.want)
		}
	}
	// Both alternatives took a share (p2c over two idle clusters).
	for _, id := range []string{"b", "c"} {
		if delta(mReads, L{"cluster": id, "reason": "alternative"}) == 0 {
			t.Errorf("alternative %s served none of the %d Eventually reads", id, M)
		}
	}

	// Gauges: lag per alternative (not for the leader), breakers closed,
	// every cluster healthy with its role, no leader change, no failover.
	// They are states, not counts: a health probe that timed out on a
	// loaded machine shows until the next probe succeeds, so they are
	// read until they hold (or a deadline passes), not from one scrape.
	gaugeProblems := func(m metrics) []string {
		var bad []string
		for _, id := range []string{"b", "c"} {
			s := m.series(mLag, L{"cluster": id})
			if len(s) != 1 {
				bad = append(bad, fmt.Sprintf("%s{cluster=%q}: %d series, want 1", mLag, id, len(s)))
				continue
			}
			if v := s[0].GetGauge().GetValue(); math.IsInf(v, 0) || v < 0 || v > 5 {
				bad = append(bad, fmt.Sprintf("%s{cluster=%q} = %v, want a known lag of a few seconds at most", mLag, id, v))
			}
		}
		if s := m.series(mLag, L{"cluster": "a"}); len(s) != 0 {
			bad = append(bad, fmt.Sprintf("the leader has a replication lag series: %v", s))
		}
		for id, role := range map[string]string{"a": "leader", "b": "alternative", "c": "alternative"} {
			if s := m.series(mBreaker, L{"cluster": id}); len(s) != 1 || s[0].GetGauge().GetValue() != 0 {
				bad = append(bad, fmt.Sprintf("%s{cluster=%q}: %v, want one series at 0 (closed)", mBreaker, id, s))
			}
			if v := m.sum(mHealthy, L{"cluster": id, "role": role}); v != 1 {
				bad = append(bad, fmt.Sprintf("%s{cluster=%q,role=%q} = %v, want 1", mHealthy, id, role, v))
			}
			if s := m.series(mOutstanding, L{"cluster": id}); len(s) != 1 || s[0].GetGauge().GetValue() != 0 {
				bad = append(bad, fmt.Sprintf("%s{cluster=%q}: %v, want one series at 0 (idle)", mOutstanding, id, s))
			}
		}
		if v := m.sum(mLeaderChg, nil); v != 0 {
			bad = append(bad, fmt.Sprintf("%s = %v, want 0 (no leader change happened)", mLeaderChg, v))
		}
		if v := m.sum(mFailingOver, nil); v != 0 {
			bad = append(bad, fmt.Sprintf("%s = %v, want 0", mFailingOver, v))
		}
		return bad
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		bad := gaugeProblems(after)
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, b := range bad {
				t.Error(b)
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
		after = scrape(t, a.AdminAddr())
	}
	// Whatever the running proxy serves is documented, as served.
	checkScrapeDocumented(t, after)
	if t.Failed() {
		t.Logf("reads by reason after: %v", after.labelValues(mReads, "reason"))
	}
}

// TestMetricsLagAndBreakerFollowFaults: when an alternative stops
// replicating its lag gauge grows and reads that need fresh data move to
// the leader with reason leader_lag; when it dies its breaker opens, it is
// reported unhealthy and reads go to the leader for lack of alternatives.
func TestMetricsLagAndBreakerFollowFaults(t *testing.T) {
	e := testenv.Start(t, testenv.Options{Clusters: 2, Config: func(cfg *config.Config) {
		fastProbes(cfg)
		cfg.Read.LeaderServesReads = false
		cfg.Consistency.BoundedStaleness = config.Duration(200 * time.Millisecond)
	}})
	sims, a := e.Sims, e.App
	c := testenv.Connect(t, a.Addr(), nil)
	testenv.MakeCollection(t, c, "lag")
	waitLoaded(t, sims[1].Addr(), "lag")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := testenv.Search(ctx, c, "lag", 0, entity.ClStrong); err != nil {
		t.Fatal(err)
	}

	type L = map[string]string
	sims[1].PauseReplication()
	testutil.EventuallyWhy(t, 10*time.Second, "b's lag gauge to exceed 0.5s", func() (bool, string) {
		v := scrape(t, a.AdminAddr()).sum(mLag, L{"cluster": "b"})
		return v > 0.5, fmt.Sprint(v)
	})
	before := scrape(t, a.AdminAddr())
	const B = 4
	for i := int64(0); i < B; i++ {
		if err := testenv.Search(ctx, c, "lag", i, entity.ClBounded); err != nil {
			t.Fatalf("bounded search: %v", err)
		}
	}
	after := scrape(t, a.AdminAddr())
	if got := after.sum(mReads, L{"cluster": "a", "reason": "leader_lag"}) - before.sum(mReads, L{"cluster": "a", "reason": "leader_lag"}); got != B {
		t.Errorf("Bounded reads with b paused: reads{cluster=a,reason=leader_lag} moved by %v, want %d (reasons: %v)", got, B, after.labelValues(mReads, "reason"))
	}
	sims[1].ResumeReplication()

	sims[1].Crash()
	testutil.EventuallyWhy(t, 10*time.Second, "b's breaker to open and b to be unhealthy", func() (bool, string) {
		m := scrape(t, a.AdminAddr())
		br, h := m.sum(mBreaker, L{"cluster": "b"}), m.sum(mHealthy, L{"cluster": "b"})
		return br == 2 && h == 0, fmt.Sprintf("breaker %v healthy %v", br, h)
	})
	before = scrape(t, a.AdminAddr())
	if err := testenv.Search(ctx, c, "lag", 1, entity.ClEventually); err != nil {
		t.Fatalf("eventually search with b down: %v", err)
	}
	after = scrape(t, a.AdminAddr())
	reasons := map[string]float64{}
	for _, r := range after.labelValues(mReads, "reason") {
		if d := after.sum(mReads, L{"cluster": "a", "reason": r}) - before.sum(mReads, L{"cluster": "a", "reason": r}); d != 0 {
			reasons[r] = d
		}
	}
	if len(reasons) != 1 || reasons[telemetry.ReadLeaderNoAlternative] != 1 {
		t.Errorf("Eventually read with the only alternative down: reads on a moved by %v, want exactly {%s: 1}", reasons, telemetry.ReadLeaderNoAlternative)
	}
}

// TestReadReasonsAgree: the reason label of milvus_ha_proxy_reads_total
// takes the router's and the proxy's reasons as they are; the documented
// list (telemetry.ReadReasons, docs/metrics.md) must be exactly those.
func TestReadReasonsAgree(t *testing.T) {
	emitted := []string{
		string(router.ReasonAlternative), string(router.ReasonLeaderBalanced), string(router.ReasonLeaderLag),
		string(router.ReasonLeaderStrong), string(router.ReasonLeaderNoAlternative),
		// router.ReasonNone never reaches an event: the proxy then waits
		// for a leader and reports proxy.ReasonLeaderWait.
		proxy.ReasonLeaderFallback, proxy.ReasonLeaderNoCollInfo, proxy.ReasonLeaderWait, proxy.ReasonLeaderStrongAlloc,
	}
	documented := telemetry.ReadReasons()
	slices.Sort(emitted)
	slices.Sort(documented)
	if !slices.Equal(emitted, documented) {
		t.Fatalf("reasons the router and proxy emit for reads:\n  %v\ndocumented by telemetry.ReadReasons:\n  %v", emitted, documented)
	}
}
