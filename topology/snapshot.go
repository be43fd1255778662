// Package topology owns the proxy's view of the Milvus clusters behind it:
// the registry (go-memdb), discovery, health probes, replication
// checkpoints, per-cluster circuit breakers and the failover/switchover
// state machine. Readers on the hot path see it only through immutable
// Snapshots published atomically, so routing never takes a global lock.
package topology

import (
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// Role is what a cluster does in the replication topology.
type Role string

// Roles (docs/architecture.md, "Roles").
const (
	RoleLeader      Role = "leader"      // replication source, takes writes
	RoleAlternative Role = "alternative" // replication target, serves reads
	RoleStandby     Role = "standby"     // replication target, no client traffic
)

// BreakerState mirrors gobreaker's states in a form that is cheap to copy
// into a snapshot.
type BreakerState string

// Breaker states.
const (
	BreakerClosed   BreakerState = "closed"
	BreakerHalfOpen BreakerState = "half-open"
	BreakerOpen     BreakerState = "open"
)

// Cluster is one cluster as of one Snapshot. Everything in it is immutable
// once published except the fields documented as live.
type Cluster struct {
	ID    string
	URI   string
	Role  Role
	Order int // position in the config; breaks ties

	Healthy      bool
	HealthReason string // why not healthy, for status
	Breaker      BreakerState

	// Quarantined alternatives hold data the leader lacks (they ran ahead of
	// the new leader's salvage checkpoint after a forced failover); they get
	// no reads until an operator deals with them.
	Quarantined      bool
	QuarantineReason string

	// Checkpoints[i] is the replicated time tick (hybrid timestamp, in the
	// leader's time) of the leader's pchannel i on this cluster. Valid only
	// when CheckpointsKnown; unknown lag counts as stale, never caught up.
	Checkpoints      []uint64
	CheckpointsKnown bool
	CheckpointsAt    time.Time // when the last successful poll returned
	LagReason        string    // why checkpoints are unknown, for status

	// Salvage is set on a cluster promoted by force: the checkpoints it had
	// reached of the old leader's pchannels.
	Salvage []uint64

	// PChannels are this cluster's own pchannel names from the replicate
	// configuration; PChannels[i] replicates the leader's pchannel i.
	// Empty when the configuration is unknown.
	PChannels []string

	// Target: a replication target of the leader according to the
	// replicate configuration (alternatives and standbys; not a former
	// leader that has not rejoined).
	Target bool
	// ClaimsPrimary: its own replicate configuration names it the
	// replication source (as of the last discovery round).
	ClaimsPrimary bool

	// Conn is the data-path connection (raw-bytes codec). Live.
	Conn *grpc.ClientConn
	// Outstanding counts requests in flight to this cluster, for power of
	// two choices. Live, shared by every snapshot of this cluster.
	Outstanding *atomic.Int64
	// Served counts requests this proxy sent to the cluster. Live.
	Served *atomic.Int64
}

// ReplicatedFor returns the replicated timestamp of this cluster for a
// collection living on the given leader pchannel indexes: the minimum of
// their checkpoints. ok is false when it is not known. A nil or empty
// pchannels list means "all pchannels".
func (c *Cluster) ReplicatedFor(pchannels []int) (ts uint64, ok bool) {
	if !c.CheckpointsKnown || len(c.Checkpoints) == 0 {
		return 0, false
	}
	first := true
	visit := func(i int) bool {
		if i < 0 || i >= len(c.Checkpoints) {
			return false
		}
		if first || c.Checkpoints[i] < ts {
			ts = c.Checkpoints[i]
			first = false
		}
		return true
	}
	if len(pchannels) == 0 {
		for i := range c.Checkpoints {
			visit(i)
		}
		return ts, true
	}
	for _, i := range pchannels {
		if !visit(i) {
			return 0, false
		}
	}
	return ts, true
}

// Snapshot is the routing view at one instant. Never mutated after it is
// published.
type Snapshot struct {
	// Epoch counts leader changes since the proxy started.
	Epoch uint64
	// Leader is nil while no leader is known (or a failover is under way).
	Leader *Cluster
	// Clusters lists every cluster in config order, the leader included.
	Clusters []*Cluster
	// FailingOver is true between leader loss and the new leader's
	// promotion; writes are held meanwhile.
	FailingOver bool
	// LeaderLostAt is when the leader was declared lost (zero when it was not).
	LeaderLostAt time.Time
	// LostLeader is the id of the leader that was lost when a failover
	// began (FailingOver), "" otherwise.
	LostLeader string
	// HoldReason says why writes are held (FailingOver) and HoldSince
	// since when; both feed WaitLeader's error message and status.
	HoldReason string
	HoldSince  time.Time
	// DiscoveryError is the last discovery failure, "" after a success.
	DiscoveryError string
	// LeaderPChannels are the leader's pchannel names in configuration
	// order: Checkpoints[i] and CollectionInfo.PChannels index into it.
	LeaderPChannels []string
	// PublishedAt is when this snapshot was made.
	PublishedAt time.Time
}

// Cluster returns the cluster with the given id, or nil.
func (s *Snapshot) Cluster(id string) *Cluster {
	for _, c := range s.Clusters {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// CollectionInfo is what routing needs to know about a collection; cached
// from DescribeCollection on the leader.
type CollectionInfo struct {
	DB   string
	Name string
	// ConsistencyLevel is the collection's default level
	// (commonpb.ConsistencyLevel numeric value).
	ConsistencyLevel int32
	// PChannels are the indexes i of the leader pchannels
	// "<leader>-rootcoord-dml_<i>" the collection's shards live on.
	PChannels []int
}
