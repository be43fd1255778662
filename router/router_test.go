package router

import (
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// ts builds a hybrid timestamp from physical ms.
func ts(ms int64) uint64 { return hybridts.Compose(ms, 0) }

type clusterOpt func(*topology.Cluster)

func cl(id string, role topology.Role, opts ...clusterOpt) *topology.Cluster {
	c := &topology.Cluster{
		ID: id, Role: role, Healthy: true, Breaker: topology.BreakerClosed,
		Outstanding: new(atomic.Int64), Served: new(atomic.Int64),
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func cps(v ...uint64) clusterOpt {
	return func(c *topology.Cluster) { c.Checkpoints = v; c.CheckpointsKnown = true }
}
func unknown(c *topology.Cluster)     { c.Checkpoints = nil; c.CheckpointsKnown = false }
func unhealthy(c *topology.Cluster)   { c.Healthy = false }
func open(c *topology.Cluster)        { c.Breaker = topology.BreakerOpen }
func halfOpen(c *topology.Cluster)    { c.Breaker = topology.BreakerHalfOpen }
func quarantined(c *topology.Cluster) { c.Quarantined = true }
func busy(n int64) clusterOpt {
	return func(c *topology.Cluster) { c.Outstanding.Store(n) }
}

func snap(clusters ...*topology.Cluster) *topology.Snapshot {
	s := &topology.Snapshot{Clusters: clusters}
	for _, c := range clusters {
		if c.Role == topology.RoleLeader {
			s.Leader = c
		}
	}
	return s
}

// fixedRand makes p2c deterministic: with a single candidate pair the
// first draw decides which is "a" and which is "b".
func fixedRand(v uint64) func() uint64 { return func() uint64 { return v } }

func TestPickRead(t *testing.T) {
	const now = 1_000_000 // leader clock, physical ms
	leaderNow := func() uint64 { return ts(now) }
	type tc struct {
		name        string
		leaderReads bool
		snap        *topology.Snapshot
		req         ReadRequest
		want        string // cluster id, "" for nil
		reason      Reason
	}
	cases := []tc{
		{
			name: "eventually goes to the only alternative",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(10)))),
			want: "b", reason: ReasonAlternative,
		},
		{
			name: "caught-up alternative serves a bounded read",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(100), ts(200)))),
			req:  ReadRequest{Required: ts(100)},
			want: "b", reason: ReasonAlternative,
		},
		{
			name: "lagging alternative: leader with leader_lag",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(99), ts(200)))),
			req:  ReadRequest{Required: ts(100)},
			want: "a", reason: ReasonLeaderLag,
		},
		{
			name: "only the collection's pchannels count",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(99), ts(200)))),
			req:  ReadRequest{Required: ts(100), PChannels: []int{1}},
			want: "b", reason: ReasonAlternative,
		},
		{
			name: "pchannel out of range is not caught up",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500)))),
			req:  ReadRequest{Required: ts(100), PChannels: []int{3}},
			want: "a", reason: ReasonLeaderLag,
		},
		{
			name: "unknown lag is stale for a session read",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, unknown)),
			req:  ReadRequest{Required: ts(1)},
			want: "a", reason: ReasonLeaderLag,
		},
		{
			name: "unknown lag still serves eventually",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, unknown)),
			req:  ReadRequest{Eventually: true},
			want: "b", reason: ReasonAlternative,
		},
		{
			// A Session read with no write seen yet requires nothing, but
			// unknown lag may hide anything: only Eventually accepts it.
			name: "unknown lag does not serve a session read that requires nothing",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, unknown)),
			want: "a", reason: ReasonLeaderLag,
		},
		{
			name: "unknown lag is left out under an eventually cap",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, unknown)),
			req:  ReadRequest{MaxLag: time.Hour},
			want: "a", reason: ReasonLeaderLag,
		},
		{
			name: "eventually cap admits a small lag",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(now-400)))),
			req:  ReadRequest{MaxLag: 500 * time.Millisecond},
			want: "b", reason: ReasonAlternative,
		},
		{
			name: "eventually cap excludes a large lag",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(now-600)))),
			req:  ReadRequest{MaxLag: 500 * time.Millisecond},
			want: "a", reason: ReasonLeaderLag,
		},
		{
			name: "checkpoint ahead of the leader estimate is no lag",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(now+50)))),
			req:  ReadRequest{MaxLag: time.Millisecond},
			want: "b", reason: ReasonAlternative,
		},
		{
			name: "unhealthy alternative: leader_no_alternative",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500)), unhealthy)),
			want: "a", reason: ReasonLeaderNoAlternative,
		},
		{
			name: "open breaker: leader_no_alternative",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500)), open)),
			want: "a", reason: ReasonLeaderNoAlternative,
		},
		{
			name: "half-open breaker still eligible (the breaker meters the trial)",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500)), halfOpen)),
			want: "b", reason: ReasonAlternative,
		},
		{
			name: "quarantined alternative never reads",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500)), quarantined)),
			want: "a", reason: ReasonLeaderNoAlternative,
		},
		{
			name: "standby never reads",
			snap: snap(cl("a", topology.RoleLeader), cl("s", topology.RoleStandby, cps(ts(500)))),
			want: "a", reason: ReasonLeaderNoAlternative,
		},
		{
			name: "no alternatives at all",
			snap: snap(cl("a", topology.RoleLeader)),
			req:  ReadRequest{Required: ts(5)},
			want: "a", reason: ReasonLeaderNoAlternative,
		},
		{
			name: "excluded alternative is skipped on retry",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500))), cl("c", topology.RoleAlternative, cps(ts(500)))),
			req:  ReadRequest{Exclude: []string{"b"}},
			want: "c", reason: ReasonAlternative,
		},
		{
			name: "all alternatives excluded: leader",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500)))),
			req:  ReadRequest{Exclude: []string{"b"}},
			want: "a", reason: ReasonLeaderNoAlternative,
		},
		{
			name: "leader excluded and nothing eligible: none",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(5)))),
			req:  ReadRequest{Required: ts(100), Exclude: []string{"a"}},
			want: "", reason: ReasonNone,
		},
		{
			name: "no leader (failing over): alternatives still serve",
			snap: snap(cl("b", topology.RoleAlternative, cps(ts(500)))),
			req:  ReadRequest{Required: ts(100)},
			want: "b", reason: ReasonAlternative,
		},
		{
			name: "no leader and nothing eligible: none",
			snap: snap(cl("b", topology.RoleAlternative, cps(ts(5)))),
			req:  ReadRequest{Required: ts(100)},
			want: "", reason: ReasonNone,
		},
		{
			name: "nil snapshot: none",
			snap: nil,
			want: "", reason: ReasonNone,
		},
		{
			name: "strong goes to the leader even when an alternative is caught up",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(now+1000)))),
			req:  ReadRequest{Strong: true, Required: ts(now)},
			want: "a", reason: ReasonLeaderStrong,
		},
		{
			name: "strong with the leader excluded: none",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(now+1000)))),
			req:  ReadRequest{Strong: true, Exclude: []string{"a"}},
			want: "", reason: ReasonNone,
		},
		{
			name:        "leader in the pool wins when less busy",
			leaderReads: true,
			snap:        snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500)), busy(3))),
			want:        "a", reason: ReasonLeaderBalanced,
		},
		{
			name:        "alternative in the pool wins when less busy",
			leaderReads: true,
			snap:        snap(cl("a", topology.RoleLeader, busy(3)), cl("b", topology.RoleAlternative, cps(ts(500)))),
			want:        "b", reason: ReasonAlternative,
		},
		{
			name:        "unhealthy leader is left out of the pool",
			leaderReads: true,
			snap:        snap(cl("a", topology.RoleLeader, unhealthy), cl("b", topology.RoleAlternative, cps(ts(500)), busy(9))),
			want:        "b", reason: ReasonAlternative,
		},
		{
			name: "unhealthy leader is still the last resort",
			snap: snap(cl("a", topology.RoleLeader, unhealthy), cl("b", topology.RoleAlternative, unhealthy)),
			want: "a", reason: ReasonLeaderNoAlternative,
		},
		{
			name:        "leader-serves-reads with no eligible alternative: still leader_lag",
			leaderReads: true,
			snap:        snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(5)))),
			req:         ReadRequest{Required: ts(100)},
			want:        "a", reason: ReasonLeaderLag,
		},
		{
			name: "p2c prefers the less busy alternative",
			snap: snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, busy(5)), cl("c", topology.RoleAlternative, busy(1))),
			req:  ReadRequest{Eventually: true},
			want: "c", reason: ReasonAlternative,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, seed := range []uint64{0, 1, 1<<32 | 1, math.MaxUint64} {
				r := New(Options{LeaderServesReads: c.leaderReads, LeaderNow: leaderNow, Rand: fixedRand(seed)})
				d := r.PickRead(c.snap, c.req)
				got := ""
				if d.Cluster != nil {
					got = d.Cluster.ID
				}
				if got != c.want || d.Reason != c.reason {
					t.Fatalf("seed %#x: PickRead = (%q, %s), want (%q, %s)", seed, got, d.Reason, c.want, c.reason)
				}
			}
		})
	}
}

// TestP2CDistribution checks the balancing statistically: equal load
// spreads evenly, and a busier cluster gets less but not nothing.
func TestP2CDistribution(t *testing.T) {
	const n = 30000
	t.Run("equal load spreads evenly", func(t *testing.T) {
		s := snap(cl("a", topology.RoleLeader),
			cl("b", topology.RoleAlternative), cl("c", topology.RoleAlternative), cl("d", topology.RoleAlternative))
		r := New(Options{})
		counts := map[string]int{}
		for range n {
			counts[r.PickRead(s, ReadRequest{Eventually: true}).Cluster.ID]++
		}
		if counts["a"] != 0 {
			t.Fatalf("leader got %d reads without leader_serves_reads", counts["a"])
		}
		for _, id := range []string{"b", "c", "d"} {
			// Expected n/3 = 10000; 9000 is > 20 standard deviations away.
			if counts[id] < 9000 || counts[id] > 11000 {
				t.Fatalf("uneven spread: %v", counts)
			}
		}
	})
	t.Run("busy cluster loses every pair it is in", func(t *testing.T) {
		s := snap(cl("a", topology.RoleLeader),
			cl("b", topology.RoleAlternative, busy(10)), cl("c", topology.RoleAlternative), cl("d", topology.RoleAlternative))
		r := New(Options{})
		counts := map[string]int{}
		for range n {
			counts[r.PickRead(s, ReadRequest{Eventually: true}).Cluster.ID]++
		}
		// b is picked only if paired with itself, which p2c never does.
		if counts["b"] != 0 {
			t.Fatalf("busiest cluster chosen %d times: %v", counts["b"], counts)
		}
		if counts["c"] < 13500 || counts["d"] < 13500 {
			t.Fatalf("uneven spread among idle clusters: %v", counts)
		}
	})
	t.Run("closed-loop load converges", func(t *testing.T) {
		// Simulate a slow cluster: requests to b finish 1 in 4 rounds, to c
		// and d every round. p2c must shift load away from b.
		s := snap(cl("a", topology.RoleLeader, busy(1<<40)),
			cl("b", topology.RoleAlternative), cl("c", topology.RoleAlternative), cl("d", topology.RoleAlternative))
		r := New(Options{LeaderServesReads: true})
		counts := map[string]int{}
		for i := range n {
			c := r.PickRead(s, ReadRequest{Eventually: true}).Cluster
			counts[c.ID]++
			c.Outstanding.Add(1)
			for _, x := range s.Clusters[1:] {
				if x.Outstanding.Load() > 0 && (x.ID != "b" || i%4 == 0) {
					x.Outstanding.Add(-1)
				}
			}
		}
		if counts["a"] != 0 {
			t.Fatalf("saturated leader chosen: %v", counts)
		}
		if counts["b"] >= counts["c"] || counts["b"] >= counts["d"] {
			t.Fatalf("slow cluster not avoided: %v", counts)
		}
		if counts["b"] == 0 {
			t.Fatalf("slow cluster starved completely: %v", counts)
		}
	})
}

func TestPickReadAllocations(t *testing.T) {
	s := snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500), ts(600))),
		cl("c", topology.RoleAlternative, cps(ts(500), ts(600))))
	r := New(Options{LeaderServesReads: true})
	req := ReadRequest{Required: ts(400), PChannels: []int{0, 1}, Exclude: []string{"x"}, MaxLag: time.Hour}
	if n := testing.AllocsPerRun(1000, func() { r.PickRead(s, req) }); n != 0 {
		t.Fatalf("PickRead allocates %v times per call", n)
	}
}

// TestPickReadLargeTopology covers pools larger than the stack buffer.
func TestPickReadLargeTopology(t *testing.T) {
	clusters := []*topology.Cluster{cl("leader", topology.RoleLeader)}
	for i := range 3 * maxCandidates {
		clusters = append(clusters, cl(string(rune('A'+i)), topology.RoleAlternative, cps(ts(int64(i)))))
	}
	s := snap(clusters...)
	r := New(Options{})
	seen := map[string]bool{}
	for range 5000 {
		d := r.PickRead(s, ReadRequest{Required: ts(maxCandidates)})
		if d.Reason != ReasonAlternative || d.Cluster.Checkpoints[0] < ts(maxCandidates) {
			t.Fatalf("bad pick %s %v", d.Reason, d.Cluster.ID)
		}
		seen[d.Cluster.ID] = true
	}
	if len(seen) != 2*maxCandidates {
		t.Fatalf("picked %d distinct clusters, want all %d eligible", len(seen), 2*maxCandidates)
	}
}

func BenchmarkPickRead(b *testing.B) {
	s := snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500), ts(600))),
		cl("c", topology.RoleAlternative, cps(ts(500), ts(600))))
	r := New(Options{LeaderServesReads: true})
	req := ReadRequest{Required: ts(400), PChannels: []int{0, 1}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d := r.PickRead(s, req); d.Cluster == nil {
				b.Fatal("no cluster")
			}
		}
	})
}

func BenchmarkPickReadSerial(b *testing.B) {
	s := snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(500), ts(600))),
		cl("c", topology.RoleAlternative, cps(ts(500), ts(600))))
	r := New(Options{LeaderServesReads: true})
	req := ReadRequest{Required: ts(400), PChannels: []int{0, 1}}
	b.ReportAllocs()
	for b.Loop() {
		r.PickRead(s, req)
	}
}
