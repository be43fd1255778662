package topology

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The primitives below are what a failover or switchover driver needs to
// change the topology; the decisions (whom to promote, when) and the
// Milvus calls belong to the driver.

// HoldWrites starts holding writes: the snapshot loses its Leader and
// gains FailingOver, so WaitLeader blocks (up to WriteHold) and reads that
// need the leader find none. Checkpoints keep being polled against the
// held leader, for choosing a successor. reason appears in WaitLeader's
// error and in status.
func (m *Manager) HoldWrites(reason string) error {
	now := m.opts.Now()
	return m.reg.update(func(tx *regTxn) error {
		meta := tx.meta()
		if meta.FailingOver {
			return tx.modifyMeta(func(mr *metaRecord) { mr.HoldReason = reason })
		}
		return tx.modifyMeta(func(mr *metaRecord) {
			mr.FailingOver = true
			mr.HoldReason = reason
			mr.HoldSince = now
			mr.LostLeaderID = meta.LeaderID
		})
	})
}

// ReleaseWrites ends a hold without changing the leader (an aborted
// switchover, or a leader that came back in manual mode).
func (m *Manager) ReleaseWrites() error {
	return m.reg.update(func(tx *regTxn) error {
		return tx.modifyMeta(func(mr *metaRecord) {
			mr.FailingOver, mr.HoldReason, mr.HoldSince, mr.LostLeaderID = false, "", time.Time{}, ""
		})
	})
}

// Promotion describes a leader change made by a failover or switchover.
type Promotion struct {
	// Leader is the new leader's id.
	Leader string
	// Salvage is the new leader's salvage checkpoint per pchannel (force
	// promotion only).
	Salvage []uint64
	// Quarantine names alternatives that ran ahead of the salvage
	// checkpoint, with the reason; they get no reads.
	Quarantine map[string]string
	// Demoted says the previous leader was demoted to a replication
	// target of the new one (a switchover) rather than lost: it stays a
	// target, and serves reads again once its checkpoints are polled.
	Demoted bool
}

// InstallLeader makes p.Leader the leader: bumps the epoch, ends any hold,
// turns the previous leader into a standby that is never written to (it
// returns as a target once demoted, which discovery then sees), resets
// every checkpoint (they were against the old source) and the leader
// clock, and drops the collection cache (pchannel names carry the
// leader's id).
func (m *Manager) InstallLeader(p Promotion) error {
	if m.members[p.Leader] == nil {
		return fmt.Errorf("topology: promoting unknown cluster %q", p.Leader)
	}
	for id := range p.Quarantine {
		if m.members[id] == nil {
			return fmt.Errorf("topology: quarantining unknown cluster %q", id)
		}
	}
	var epoch uint64
	err := m.reg.update(func(tx *regTxn) error {
		meta := tx.meta()
		old := meta.LeaderID
		if old == p.Leader && !meta.FailingOver {
			return errNoChange
		}
		epoch = meta.Epoch
		if old != p.Leader {
			epoch++
		}
		for _, r := range tx.clusters() {
			err := tx.modifyCluster(r.ID, func(r *clusterRecord) {
				switch {
				case r.ID == p.Leader:
					r.Role, r.Target = RoleLeader, false
					r.Salvage = slices.Clone(p.Salvage)
					r.CheckpointsKnown, r.Checkpoints, r.LagReason = false, nil, ""
					r.Quarantined, r.QuarantineReason = false, ""
					return
				case r.ID == old && p.Demoted:
					r.Role, r.Target = RoleAlternative, true
					if r.StaticRole == RoleStandby {
						r.Role = RoleStandby
					}
					r.LagReason = fmt.Sprintf("demoted to a target of %s; awaiting first checkpoint poll", p.Leader)
				case r.ID == old:
					r.Role, r.Target = RoleStandby, false
					r.LagReason = fmt.Sprintf("former leader; never written to again until it rejoins as a target of %s", p.Leader)
				default:
					r.LagReason = "new leader; awaiting first checkpoint poll"
				}
				r.CheckpointsKnown = false
				if reason, ok := p.Quarantine[r.ID]; ok {
					r.Quarantined, r.QuarantineReason = true, reason
				}
			})
			if err != nil {
				return err
			}
		}
		return tx.modifyMeta(func(mr *metaRecord) {
			mr.LeaderID = p.Leader
			mr.Epoch = epoch
			mr.FailingOver, mr.HoldReason, mr.HoldSince, mr.LostLeaderID = false, "", time.Time{}, ""
			mr.LeaderLostAt = time.Time{}
			// The new leader's pchannels come with the next discovery.
			if old != p.Leader {
				mr.LeaderPChannels = nil
			}
		})
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return err
	}
	m.members[p.Leader].lastGood.Store(m.opts.Now().UnixNano())
	m.afterLeaderChange(epoch)
	m.Rediscover()
	return nil
}

// SetQuarantine quarantines a cluster (no reads) with a reason, or lifts
// the quarantine when reason is "".
func (m *Manager) SetQuarantine(id, reason string) error {
	return m.reg.update(func(tx *regTxn) error {
		return tx.modifyCluster(id, func(r *clusterRecord) {
			r.Quarantined, r.QuarantineReason = reason != "", reason
		})
	})
}

var errNoChange = errors.New("topology: no change")

// rearmLossDetection forgets that the current leader was declared lost,
// so the next check reports it again if it still is (after a failover
// attempt that did not complete).
func (m *Manager) rearmLossDetection() {
	_ = m.reg.update(func(tx *regTxn) error {
		return tx.modifyMeta(func(mr *metaRecord) { mr.LeaderLostAt = time.Time{} })
	})
}

// setFenced fences a cluster (Allow refuses it) or lifts the fence.
func (m *Manager) setFenced(id string, on bool) {
	if mb := m.members[id]; mb != nil {
		mb.fenced.Store(on)
	}
}

// drain waits, up to max, until no request admitted by Allow before the
// fence is still in flight to the cluster, and returns how many still
// are. The cluster must be fenced first.
func (m *Manager) drain(ctx context.Context, id string, max time.Duration) int64 {
	mb := m.members[id]
	if mb == nil {
		return 0
	}
	deadline := time.Now().Add(max)
	for {
		n := mb.inflight.Load()
		if n <= 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
			return n
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Millisecond):
		}
	}
}
