package admin

import (
	"context"
	"errors"
	"time"
)

// Controller is what the admin server needs from the proxy. The lead adapts
// topology to it; admin imports nothing of the proxy's.
type Controller interface {
	// Topology returns the current view. It must not block on the network:
	// /api/v1/topology and `milvus-ha-proxy status` are how an operator
	// looks at a proxy whose clusters are in trouble.
	Topology(ctx context.Context) View
	// Ready reports whether the proxy can take traffic: a leader is known
	// and reachable. reason says why not.
	Ready() (ok bool, reason string)
	// Switchover makes to the leader with no data loss (planned).
	Switchover(ctx context.Context, to string) (Result, error)
	// Failover force-promotes to (the leader is lost, or the operator says
	// so).
	Failover(ctx context.Context, to string) (Result, error)
}

// Attacher is implemented by a Controller that can attach a rebuilt or new
// cluster as a replication target of the leader (POST /api/v1/attach).
type Attacher interface {
	Attach(ctx context.Context, cluster string) (Result, error)
}

// Errors a Controller wraps (fmt.Errorf("...: %w", admin.ErrRefused)) so the
// HTTP status says what happened.
var (
	// ErrUnknownCluster: the target is not a configured cluster (404).
	ErrUnknownCluster = errors.New("unknown cluster")
	// ErrRefused: the request is understood but not allowed now: the
	// target is already leader, is unhealthy, quarantined, a standby, too
	// far behind, or another change is under way (409).
	ErrRefused = errors.New("refused")
)

// View is the JSON of GET /api/v1/topology and what `status` prints.
type View struct {
	// Epoch counts leader changes since the proxy started.
	Epoch uint64 `json:"epoch"`
	// Leader is the leader's id, "" while none is known.
	Leader string `json:"leader"`
	// FailingOver is true between leader loss and the new leader's
	// promotion; writes are held meanwhile.
	FailingOver  bool       `json:"failing_over"`
	LeaderLostAt *time.Time `json:"leader_lost_at,omitempty"`
	// Discovery and FailoverMode echo the config (replicate|static,
	// auto|manual).
	Discovery    string `json:"discovery,omitempty"`
	FailoverMode string `json:"failover_mode,omitempty"`
	// Ready, NotReadyReason and Draining are filled in by the admin server
	// from Controller.Ready and its own drain state.
	Ready          bool   `json:"ready"`
	NotReadyReason string `json:"not_ready_reason,omitempty"`
	Draining       bool   `json:"draining"`
	// Clusters lists every cluster in config order, the leader included.
	Clusters []ClusterView `json:"clusters"`
	// Phase is what the failover arbiter is doing ("steady", "stuck",
	// "promoting"...).
	Phase string `json:"phase,omitempty"`
	// ChangeUnderWay is the leader change running now, with its steps so
	// far and the one it is in; nil when none runs.
	ChangeUnderWay *Change `json:"change_under_way,omitempty"`
	// LastChange is the most recent leader change, if any.
	LastChange *Change `json:"last_change,omitempty"`
	// SplitBrainRisk names clusters that may still take writes from
	// clients connected to them directly though another cluster leads (a
	// forced failover could not demote them), with why.
	SplitBrainRisk []string `json:"split_brain_risk,omitempty"`
	// Salvage reports forced promotions and what the old leader held that
	// was never replicated.
	Salvage []Salvage `json:"salvage,omitempty"`
	// Arbiter is the etcd arbiter as this proxy sees it; nil when the
	// proxy decides alone (no arbiter configured).
	Arbiter *ArbiterView `json:"arbiter,omitempty"`
	// GeneratedAt is when the view was taken.
	GeneratedAt time.Time `json:"generated_at"`
}

// ArbiterView is the etcd arbiter: which proxy decides, what this proxy
// last read from etcd, and every running proxy.
type ArbiterView struct {
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix"`
	// ProxyID is this proxy; Deciding says whether it decides, Decider
	// which proxy does.
	ProxyID  string `json:"proxy_id"`
	Deciding bool   `json:"deciding"`
	Decider  string `json:"decider,omitempty"`
	// Connected: etcd confirmed this proxy's lease within its TTL.
	Connected bool `json:"connected"`
	// LeaseValidSeconds is how long the lease lasts at least without
	// another keepalive (negative: it may have expired).
	LeaseValidSeconds float64 `json:"lease_valid_seconds"`
	// Epoch and Leader are the topology in etcd as last read.
	Epoch  uint64 `json:"epoch"`
	Leader string `json:"leader,omitempty"`
	// Fenced: writes are held, then refused, because this proxy cannot
	// confirm the leader with etcd; FenceReason says why.
	Fenced      bool       `json:"fenced"`
	FencedSince *time.Time `json:"fenced_since,omitempty"`
	FenceReason string     `json:"fence_reason,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	// ChangeRunning: the change record in etcd has no result yet.
	ChangeRunning bool         `json:"change_running,omitempty"`
	Proxies       []ProxyEntry `json:"proxies"`
}

// ProxyEntry is one running proxy, from its record in etcd.
type ProxyEntry struct {
	ID            string    `json:"id"`
	Address       string    `json:"address"`
	Epoch         uint64    `json:"epoch"`
	Leader        string    `json:"leader,omitempty"`
	Deciding      bool      `json:"deciding"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
}

// ClusterView is one cluster in a View.
type ClusterView struct {
	ID           string `json:"id"`
	URI          string `json:"uri"`
	Role         string `json:"role"` // leader | alternative | standby
	Healthy      bool   `json:"healthy"`
	HealthReason string `json:"health_reason,omitempty"`
	Breaker      string `json:"breaker"` // closed | half-open | open
	// LagSeconds is how far replication trails the leader; meaningful only
	// when LagKnown (never for the leader itself).
	LagSeconds float64 `json:"lag_seconds"`
	LagKnown   bool    `json:"lag_known"`
	// LagReason says why the lag is unknown (a failed checkpoint poll).
	LagReason string `json:"lag_reason,omitempty"`
	// Checkpoints[i] is the replicated time tick of leader pchannel i.
	Checkpoints   []uint64   `json:"checkpoints,omitempty"`
	CheckpointsAt *time.Time `json:"checkpoints_at,omitempty"`
	// Quarantined clusters hold data the leader lacks and get no reads.
	Quarantined      bool   `json:"quarantined"`
	QuarantineReason string `json:"quarantine_reason,omitempty"`
	// Outstanding is calls in flight; Served is calls sent since start,
	// Reads the reads (Search, Query, metadata reads...) among them.
	Outstanding int64 `json:"outstanding"`
	Served      int64 `json:"served"`
	Reads       int64 `json:"reads"`
}

// Change is one leader change.
type Change struct {
	Kind        string    `json:"kind"` // failover | switchover | discovery
	From        string    `json:"from"`
	To          string    `json:"to"`
	Epoch       uint64    `json:"epoch"`
	At          time.Time `json:"at"`
	TookSeconds float64   `json:"took_seconds"`
	Result      string    `json:"result"` // "" while running, then ok | refused | failed
	Message     string    `json:"message,omitempty"`
	// Steps are what the change did, in order: what was sent to which
	// cluster and what it answered. Current names the step running.
	Steps   []Step `json:"steps,omitempty"`
	Current string `json:"current,omitempty"`
}

// Step is one step of a leader change.
type Step struct {
	Name    string    `json:"name"`
	Cluster string    `json:"cluster,omitempty"`
	Sent    string    `json:"sent,omitempty"`
	Answer  string    `json:"answer,omitempty"`
	Error   string    `json:"error,omitempty"`
	Start   time.Time `json:"start"`
	// TookSeconds is 0 while the step runs (Done false).
	TookSeconds float64 `json:"took_seconds"`
	Done        bool    `json:"done"`
}

// Salvage is what a forced promotion left behind.
type Salvage struct {
	Epoch     uint64    `json:"epoch"`
	OldLeader string    `json:"old_leader"`
	NewLeader string    `json:"new_leader"`
	At        time.Time `json:"at"`
	// Checkpoints is the new leader's salvage checkpoint: how far it had
	// replicated each of the old leader's pchannels when promoted.
	Checkpoints []uint64 `json:"checkpoints,omitempty"`
	// OldLeaderReturned is set once the old leader is back and demoted.
	OldLeaderReturned bool `json:"old_leader_returned"`
	// Unreplicated says what the old leader held past the salvage
	// checkpoint (from DumpMessages), once it is known.
	Unreplicated string `json:"unreplicated,omitempty"`
}

// Result is the JSON answer of a successful switchover or failover.
type Result struct {
	Kind  string `json:"kind"` // switchover | failover (set by the server when empty)
	From  string `json:"from"`
	To    string `json:"to"`
	Epoch uint64 `json:"epoch"`
	// TookSeconds is how long the change took, writes held included.
	TookSeconds float64 `json:"took_seconds"`
	// WritesHeld is how many writes waited for the new leader.
	WritesHeld int64 `json:"writes_held"`
	// Quarantined lists alternatives left out after a forced failover.
	Quarantined []string `json:"quarantined,omitempty"`
	// SalvageCheckpoint is the new leader's salvage checkpoint (failover).
	SalvageCheckpoint []uint64 `json:"salvage_checkpoint,omitempty"`
	Message           string   `json:"message,omitempty"`
}

// ErrorBody is the JSON of every error answer.
type ErrorBody struct {
	// Error says what went wrong, for a human.
	Error string `json:"error"`
	// Code is one of bad_request, unknown_cluster, refused, busy, timeout,
	// internal.
	Code string `json:"code"`
}

// ActionRequest is the body of POST /api/v1/switchover and /failover.
type ActionRequest struct {
	To string `json:"to"`
}
