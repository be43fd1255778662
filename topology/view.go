package topology

import (
	"fmt"
	"slices"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
)

// View is the JSON form of the topology that `status` prints and
// /api/v1/topology serves.
type View struct {
	Discovery       string        `json:"discovery"`
	Epoch           uint64        `json:"epoch"`
	Leader          string        `json:"leader"`
	FailingOver     bool          `json:"failing_over"`
	HoldReason      string        `json:"hold_reason,omitempty"`
	LostLeader      string        `json:"lost_leader,omitempty"`
	LeaderLostAt    *time.Time    `json:"leader_lost_at,omitempty"`
	DiscoveryError  string        `json:"discovery_error,omitempty"`
	LeaderTimestamp uint64        `json:"leader_timestamp"`
	Clusters        []ClusterView `json:"clusters"`
}

// ClusterView is one cluster in a View.
type ClusterView struct {
	ID           string       `json:"id"`
	URI          string       `json:"uri"`
	Role         Role         `json:"role"`
	Healthy      bool         `json:"healthy"`
	HealthReason string       `json:"health_reason,omitempty"`
	Breaker      BreakerState `json:"breaker"`
	// ReplicatedTS is the minimum checkpoint over all pchannels (0 when
	// unknown); LagSeconds is the leader's clock minus it, null when
	// unknown (LagReason says why) and for the leader itself.
	ReplicatedTS     uint64   `json:"replicated_ts"`
	Checkpoints      []uint64 `json:"checkpoints,omitempty"`
	CheckpointsKnown bool     `json:"checkpoints_known"`
	LagSeconds       *float64 `json:"lag_seconds"`
	LagReason        string   `json:"lag_reason,omitempty"`
	RequestsServed   int64    `json:"requests_served"`
	Outstanding      int64    `json:"outstanding"`
	Quarantined      bool     `json:"quarantined"`
	QuarantineReason string   `json:"quarantine_reason,omitempty"`
	Salvage          []uint64 `json:"salvage,omitempty"`
}

// View returns the current topology for status and the admin API.
func (m *Manager) View() View { return ViewOf(m.Snapshot(), m.opts.Discovery, m.LeaderNow()) }

// ViewOf renders a snapshot; leaderNow is the leader's clock estimate.
func ViewOf(s *Snapshot, discovery string, leaderNow uint64) View {
	v := View{
		Discovery:       discovery,
		Epoch:           s.Epoch,
		FailingOver:     s.FailingOver,
		HoldReason:      s.HoldReason,
		LostLeader:      s.LostLeader,
		DiscoveryError:  s.DiscoveryError,
		LeaderTimestamp: leaderNow,
		Clusters:        make([]ClusterView, 0, len(s.Clusters)),
	}
	if s.Leader != nil {
		v.Leader = s.Leader.ID
	}
	if !s.LeaderLostAt.IsZero() {
		t := s.LeaderLostAt
		v.LeaderLostAt = &t
	}
	for _, c := range s.Clusters {
		cv := ClusterView{
			ID: c.ID, URI: c.URI, Role: c.Role,
			Healthy: c.Healthy, HealthReason: c.HealthReason, Breaker: c.Breaker,
			Checkpoints:      slices.Clone(c.Checkpoints),
			CheckpointsKnown: c.CheckpointsKnown,
			LagReason:        c.LagReason,
			Quarantined:      c.Quarantined, QuarantineReason: c.QuarantineReason,
			Salvage: slices.Clone(c.Salvage),
		}
		if c.Served != nil {
			cv.RequestsServed = c.Served.Load()
		}
		if c.Outstanding != nil {
			cv.Outstanding = c.Outstanding.Load()
		}
		if ts, ok := c.ReplicatedFor(nil); ok && c != s.Leader {
			cv.ReplicatedTS = ts
			if ts == 0 {
				// A checkpoint of 0 is "nothing replicated yet" on some
				// pchannel, not a lag of the whole clock.
				if cv.LagReason == "" {
					cv.LagReason = "no checkpoint yet on some of the leader's pchannels"
				}
			} else {
				lag := max(0, float64(hybridts.Physical(leaderNow)-hybridts.Physical(ts))/1000)
				cv.LagSeconds = &lag
			}
		}
		v.Clusters = append(v.Clusters, cv)
	}
	return v
}

// Ready reports whether the proxy can take writes: a leader is known, not
// held for a failover, not declared lost, and answering probes. reason
// says why not (for /readyz).
func (m *Manager) Ready() (ok bool, reason string) {
	s := m.Snapshot()
	switch {
	case s.FailingOver:
		return false, "writes held: " + s.HoldReason
	case s.Leader == nil && s.DiscoveryError != "":
		return false, "no leader: " + s.DiscoveryError
	case s.Leader == nil:
		return false, "no leader discovered yet"
	case !s.LeaderLostAt.IsZero():
		return false, fmt.Sprintf("leader %s lost at %s", s.Leader.ID, s.LeaderLostAt.Format(time.RFC3339Nano))
	case !s.Leader.Healthy:
		return false, fmt.Sprintf("leader %s unhealthy: %s", s.Leader.ID, s.Leader.HealthReason)
	}
	return true, ""
}
