package topology

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// probeLoop checks one cluster's health every ProbeInterval. Probes never
// overlap: a slow one delays the next.
func (m *Manager) probeLoop(ctx context.Context, mb *member) {
	t := time.NewTicker(m.opts.ProbeInterval)
	defer t.Stop()
	for {
		m.probe(ctx, mb)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe runs one CheckHealth, feeds the breaker, and records the verdict.
func (m *Manager) probe(ctx context.Context, mb *member) {
	pctx, cancel := context.WithTimeout(ctx, m.opts.ProbeTimeout)
	resp, err := mb.rpc.CheckHealth(mb.outgoing(pctx, ""), &milvuspb.CheckHealthRequest{})
	cancel()
	if ctx.Err() != nil {
		return // shutting down: the failure is ours, not the cluster's
	}
	healthy, reason := healthVerdict(mb.id, resp, err, m.opts.ProbeTimeout)
	if healthy {
		mb.lastGood.Store(m.opts.Now().UnixNano())
	}
	// Probe results count in the breaker like requests do, so an idle
	// cluster's breaker still opens when it dies and closes when it
	// recovers. When the breaker refuses (open), the probe still decides
	// Healthy; asking also moves an expired open breaker to half-open.
	if done, err := mb.breaker.Allow(); err == nil {
		if healthy {
			done(nil)
		} else {
			done(errDataPathFailure)
		}
	}
	state := mb.breakerState.Load().(BreakerState)

	s := m.Snapshot()
	cur := s.Cluster(mb.id)
	if cur != nil && cur.Healthy == healthy && cur.HealthReason == reason && cur.Breaker == state {
		return
	}
	if cur != nil && cur.Healthy != healthy {
		m.log.Info("cluster health changed", "cluster", mb.id, "healthy", healthy, "reason", reason)
		if s.Leader != nil && s.Leader.ID == mb.id && !healthy {
			// The topology may have changed behind our back.
			m.Rediscover()
		}
	}
	err = m.reg.update(func(tx *regTxn) error {
		return tx.modifyCluster(mb.id, func(r *clusterRecord) {
			r.Healthy, r.HealthReason = healthy, reason
			r.Breaker = mb.breakerState.Load().(BreakerState)
		})
	})
	if err != nil {
		m.log.Error("recording probe result", "cluster", mb.id, "err", err)
	}
}

// healthVerdict turns a CheckHealth outcome into healthy + reason.
func healthVerdict(id string, resp *milvuspb.CheckHealthResponse, err error, timeout time.Duration) (bool, string) {
	switch {
	case status.Code(err) == codes.Unimplemented:
		// The server answered; it just cannot say more (minimal backends).
		return true, ""
	case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
		return false, fmt.Sprintf("health probe timed out after %s", timeout)
	case err != nil:
		return false, fmt.Sprintf("health probe failed: %s", grpcMessage(err))
	}
	if err := statusErr("CheckHealth", id, resp.GetStatus()); err != nil {
		return false, fmt.Sprintf("health probe: %s", resp.GetStatus().GetReason())
	}
	if !resp.GetIsHealthy() {
		reasons := strings.Join(resp.GetReasons(), "; ")
		if reasons == "" {
			reasons = "no reason given"
		}
		return false, "cluster reports unhealthy: " + reasons
	}
	return true, ""
}

// grpcMessage shortens a gRPC error to code and message for status lines.
func grpcMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	return err.Error()
}

// watchLoop publishes breaker state changes (gobreaker reports them under
// its own lock, so they are handed over here) and detects leader loss.
func (m *Manager) watchLoop(ctx context.Context) {
	// Loss is declared at most one tick late: a fine tick keeps failover
	// close to DetectAfter (checkLeader is two atomic loads).
	tick := max(5*time.Millisecond, min(m.opts.ProbeInterval, m.opts.DetectAfter/20))
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kickBreakers:
			m.syncBreakers()
		case <-t.C:
			m.syncBreakers()
			m.checkLeader()
		}
	}
}

// syncBreakers copies the members' breaker states into the registry.
func (m *Manager) syncBreakers() {
	s := m.Snapshot()
	dirty := false
	for _, c := range s.Clusters {
		if mb := m.members[c.ID]; mb != nil && mb.breakerState.Load().(BreakerState) != c.Breaker {
			dirty = true
		}
	}
	if !dirty {
		return
	}
	err := m.reg.update(func(tx *regTxn) error {
		for _, mb := range m.order {
			st := mb.breakerState.Load().(BreakerState)
			if r := tx.cluster(mb.id); r != nil && r.Breaker != st {
				if err := tx.modifyCluster(mb.id, func(r *clusterRecord) { r.Breaker = st }); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		m.log.Error("publishing breaker state", "err", err)
	}
}

// checkLeader declares the leader lost after DetectAfter without contact,
// and clears the mark when contact resumes. It only reports: acting on a
// loss (failover) belongs to whoever reads LeaderLost.
func (m *Manager) checkLeader() {
	s := m.Snapshot()
	if s.Leader == nil {
		return
	}
	mb := m.members[s.Leader.ID]
	now := m.opts.Now()
	last := time.Unix(0, mb.lastGood.Load())
	lost := now.Sub(last) > m.opts.DetectAfter
	switch {
	case lost && s.LeaderLostAt.IsZero():
		m.log.Warn("leader lost", "cluster", mb.id, "last_contact", last, "detect_after", m.opts.DetectAfter)
		err := m.reg.update(func(tx *regTxn) error {
			if tx.meta().LeaderID != mb.id {
				return errStale
			}
			return tx.modifyMeta(func(mr *metaRecord) { mr.LeaderLostAt = now })
		})
		if err != nil {
			return
		}
		ev := LeaderLoss{ClusterID: mb.id, Epoch: s.Epoch, LastContact: last, DetectedAt: now}
		select {
		case m.lost <- ev:
		default:
			// Replace the unread report with the newer one.
			select {
			case <-m.lost:
			default:
			}
			select {
			case m.lost <- ev:
			default:
			}
		}
	case !lost && !s.LeaderLostAt.IsZero():
		m.log.Info("leader contact restored", "cluster", mb.id)
		_ = m.reg.update(func(tx *regTxn) error {
			return tx.modifyMeta(func(mr *metaRecord) { mr.LeaderLostAt = time.Time{} })
		})
	}
}

// errStale aborts an update whose premise changed meanwhile.
var errStale = errors.New("topology: state changed meanwhile")
