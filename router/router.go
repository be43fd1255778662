// Package router makes the decisions of a read, as pure functions over
// immutable inputs so they can run on every request, take no lock and be
// table-tested:
//
//   - ReadPolicy.Plan: what the read requires (the replicated timestamp R
//     its consistency level asks for), what is forwarded in its
//     consistency fields, and whether it must go to the leader regardless.
//   - Router.PickRead: which cluster serves it, from a topology.Snapshot.
//   - PickRead again with the failed cluster excluded after a transport
//     failure, and AfterRefusal after an alternative answered that it
//     cannot serve the read.
//
// The proxy gathers the facts a plan asks for and carries out the answer
// (docs/architecture.md, "A read's path"). The rules of PickRead
// (docs/architecture.md, "Consistency rules"):
//
//   - An alternative (Role alternative; standbys and quarantined clusters
//     never serve reads) is eligible when it is healthy, its breaker is not
//     open, it was not already tried for this request, and its replicated
//     timestamp for the collection's pchannels covers the required
//     timestamp R.
//   - Unknown lag (CheckpointsKnown false) counts as stale: such an
//     alternative is eligible only for Eventually reads (R == 0) that set
//     no lag cap, because neither a bound nor a lag can
//     be proven. This is how backends without a replication API (Milvus
//     Lite) still serve Eventually reads.
//   - Among the eligible, plus the leader when LeaderServesReads, power of
//     two choices on outstanding requests.
//   - When none is eligible, the leader; with no usable leader, no cluster.
package router

import (
	"math/rand/v2"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// ReadRequest is what the router needs to know about one read.
type ReadRequest struct {
	// PChannels are the collection's leader pchannel indexes (nil = all).
	PChannels []int
	// Required is the replicated timestamp R (hybrid ts) the read needs;
	// 0 = none (Eventually).
	Required uint64
	// MaxLag is the Eventually cap (0 = none): alternatives lagging more
	// than this behind the leader's clock are left out, and so are those
	// whose lag is unknown.
	MaxLag time.Duration
	// Exclude lists cluster ids already tried for this request (a retry
	// after a transport failure).
	Exclude []string
	// Eventually marks a read at level Eventually. Only such reads may go
	// to an alternative whose lag is unknown: a Session read that
	// requires nothing yet (no write seen) still needs an alternative
	// known to replicate, or its client's writes made through another
	// session could be arbitrarily far behind.
	Eventually bool
	// Strong marks a Strong read under `strong_reads: leader`: it goes to
	// the leader without looking at alternatives (ReasonLeaderStrong).
	// Under `strong_reads: wait` leave it false and set Required instead.
	Strong bool
	// Leader, when set, sends the read to the leader without looking at
	// alternatives, labelled with this reason (ReasonLeaderNoCollection,
	// ReasonLeaderStrongAlloc): reads the plan cannot place.
	Leader Reason
}

// Reason says why a Decision went where it did; it feeds metrics and logs.
type Reason string

// Reasons.
const (
	// ReasonAlternative: an eligible alternative won.
	ReasonAlternative Reason = "alternative"
	// ReasonLeaderLag: alternatives were up but none had replicated far
	// enough (or their lag is unknown), so the leader serves.
	ReasonLeaderLag Reason = "leader_lag"
	// ReasonLeaderStrong: a Strong read under strong_reads: leader.
	ReasonLeaderStrong Reason = "leader_strong"
	// ReasonLeaderNoAlternative: no alternative was usable at all
	// (none configured, unhealthy, breaker open, quarantined, or excluded).
	ReasonLeaderNoAlternative Reason = "leader_no_alternative"
	// ReasonLeaderBalanced: the leader took part in power of two choices
	// (LeaderServesReads) and won.
	ReasonLeaderBalanced Reason = "leader_balanced"
	// ReasonNone: nothing can serve the read (no leader, or it was
	// excluded, and no eligible alternative). Cluster is nil.
	ReasonNone Reason = "none"
)

// Decision is where one read goes.
type Decision struct {
	Cluster *topology.Cluster // nil only with ReasonNone
	Reason  Reason
}

// Options configure a Router.
type Options struct {
	// LeaderServesReads puts the leader in the balancing pool next to the
	// eligible alternatives (config read.leader_serves_reads).
	LeaderServesReads bool
	// LeaderNow returns the leader's current hybrid timestamp (the
	// topology manager's calibrated estimate). Used only for MaxLag.
	// nil: the local clock.
	LeaderNow func() uint64
	// Rand returns uniformly distributed random numbers; it must be safe
	// for concurrent use without a shared lock. nil: math/rand/v2's
	// runtime-backed generator (per-thread state, lock-free). Tests set it
	// to make picks reproducible.
	Rand func() uint64
}

// Router picks clusters for reads. It is safe for concurrent use and holds
// no mutable state of its own.
type Router struct {
	leaderServesReads bool
	leaderNow         func() uint64
	rand              func() uint64
}

// New returns a Router.
func New(opts Options) *Router {
	r := &Router{
		leaderServesReads: opts.LeaderServesReads,
		leaderNow:         opts.LeaderNow,
		rand:              opts.Rand,
	}
	if r.leaderNow == nil {
		r.leaderNow = hybridts.Now
	}
	if r.rand == nil {
		r.rand = rand.Uint64
	}
	return r
}

// maxCandidates bounds the on-stack candidate buffer. Topologies larger
// than this still work; the buffer just spills to the heap.
const maxCandidates = 16

// PickRead decides which cluster serves a read.
func (r *Router) PickRead(snap *topology.Snapshot, req ReadRequest) Decision {
	if snap == nil {
		return Decision{Reason: ReasonNone}
	}
	leader := snap.Leader
	if leader != nil && excluded(req.Exclude, leader.ID) {
		leader = nil
	}
	if req.Strong {
		return fallback(leader, ReasonLeaderStrong)
	}
	if req.Leader != "" {
		return fallback(leader, req.Leader)
	}

	var buf [maxCandidates]*topology.Cluster
	cands := buf[:0]
	lagging := false // some usable alternative failed only on its timestamp
	var now uint64
	if req.MaxLag > 0 {
		now = r.leaderNow()
	}
	for _, c := range snap.Clusters {
		if c == snap.Leader || c.Role != topology.RoleAlternative || c.Quarantined ||
			!c.Healthy || c.Breaker == topology.BreakerOpen || excluded(req.Exclude, c.ID) {
			continue
		}
		ts, ok := c.ReplicatedFor(req.PChannels)
		if !ok && req.Eventually && req.Required == 0 && req.MaxLag <= 0 {
			// Eventually without a cap accepts any replica, even one whose
			// lag cannot be measured (a backend without the replication
			// API). Every other level needs proof: unknown lag is stale.
			cands = append(cands, c)
			continue
		}
		if !ok || ts < req.Required {
			lagging = true
			continue
		}
		if req.MaxLag > 0 && hybridts.Sub(now, ts) > req.MaxLag {
			lagging = true
			continue
		}
		cands = append(cands, c)
	}

	if len(cands) == 0 {
		// The leader as the last resort, whatever its health: a read never
		// fails because alternatives lag while the leader might serve it.
		if lagging {
			return fallback(leader, ReasonLeaderLag)
		}
		return fallback(leader, ReasonLeaderNoAlternative)
	}
	if r.leaderServesReads && leader != nil && leader.Healthy && leader.Breaker != topology.BreakerOpen {
		cands = append(cands, leader)
	}
	if len(cands) == 1 {
		return decide(cands[0])
	}
	return decide(r.p2c(cands))
}

// decide labels a balanced pick.
func decide(c *topology.Cluster) Decision {
	if c.Role == topology.RoleAlternative {
		return Decision{Cluster: c, Reason: ReasonAlternative}
	}
	return Decision{Cluster: c, Reason: ReasonLeaderBalanced}
}

// p2c picks two distinct candidates at random and returns the one with
// fewer requests in flight (the first on a tie; it is random already).
func (r *Router) p2c(cands []*topology.Cluster) *topology.Cluster {
	// One 64-bit draw gives two 32-bit ones; the modulo bias is
	// negligible for pools of a few clusters.
	n := uint64(len(cands))
	x := r.rand()
	i := (x & 0xffffffff) % n
	j := (x >> 32) % (n - 1)
	if j >= i {
		j++
	}
	a, b := cands[i], cands[j]
	if outstanding(b) < outstanding(a) {
		return b
	}
	return a
}

func outstanding(c *topology.Cluster) int64 {
	if c.Outstanding == nil {
		return 0
	}
	return c.Outstanding.Load()
}

func fallback(leader *topology.Cluster, reason Reason) Decision {
	if leader == nil {
		return Decision{Reason: ReasonNone}
	}
	return Decision{Cluster: leader, Reason: reason}
}

func excluded(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
