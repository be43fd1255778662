package topology

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// checkpointLoop polls every replication target's checkpoints each
// PollInterval. Rounds never overlap.
func (m *Manager) checkpointLoop(ctx context.Context) {
	t := time.NewTicker(m.opts.PollInterval)
	defer t.Stop()
	for {
		m.pollCheckpoints(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollTarget is one cluster to poll in a round.
type pollTarget struct {
	mb        *member
	pchannels []string // its own pchannel names, by leader index
}

// pollResult is one cluster's outcome in a round.
type pollResult struct {
	id     string
	cps    []uint64
	reason string // set on failure: why the lag is unknown
}

// pollCheckpoints runs one round: GetReplicateInfo for every pchannel of
// every target, in parallel, bounded by PollTimeout, then applies all
// results in one registry update. A round that started under another
// leader or epoch is dropped: its checkpoints were against another source.
func (m *Manager) pollCheckpoints(ctx context.Context) {
	var (
		leaderID  string
		epoch     uint64
		leaderPCs []string
		targets   []pollTarget
	)
	m.reg.read(func(tx *regTxn) {
		meta := tx.meta()
		leaderID, epoch, leaderPCs = meta.LeaderID, meta.Epoch, meta.LeaderPChannels
		for _, r := range tx.clusters() {
			if r.Target && r.ID != leaderID {
				targets = append(targets, pollTarget{mb: m.members[r.ID], pchannels: r.PChannels})
			}
		}
	})
	if leaderID == "" || len(targets) == 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, m.opts.PollTimeout)
	results := make([]pollResult, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { results[i] = m.pollOne(pctx, leaderID, leaderPCs, t) })
	}
	wg.Wait()
	cancel()
	if ctx.Err() != nil {
		return
	}
	now := m.opts.Now()
	err := m.reg.update(func(tx *regTxn) error {
		meta := tx.meta()
		if meta.LeaderID != leaderID || meta.Epoch != epoch {
			return errStale
		}
		for _, res := range results {
			if r := tx.cluster(res.id); r == nil || !r.Target {
				continue
			}
			err := tx.modifyCluster(res.id, func(r *clusterRecord) {
				if res.reason != "" {
					// Keep the old values for status, but they no longer
					// count: unknown lag is stale lag.
					r.CheckpointsKnown, r.LagReason = false, res.reason
					return
				}
				r.Checkpoints, r.CheckpointsKnown, r.CheckpointsAt, r.LagReason = res.cps, true, now, ""
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStale) {
		m.log.Error("recording checkpoints", "err", err)
	}
}

// pollOne reads one target's checkpoints for every leader pchannel.
func (m *Manager) pollOne(ctx context.Context, leaderID string, leaderPCs []string, t pollTarget) pollResult {
	res := pollResult{id: t.mb.id}
	if len(leaderPCs) == 0 {
		// Without the leader's pchannel list there is nothing to ask for;
		// still find out whether the backend could answer at all, so the
		// status says the right thing.
		_, err := t.mb.rpc.GetReplicateInfo(t.mb.outgoing(ctx, ""), &milvuspb.GetReplicateInfoRequest{
			SourceClusterId: leaderID, TargetPchannel: targetPChannel(t, 0),
		})
		if status.Code(err) == codes.Unimplemented {
			res.reason = reasonNoReplicateInfo
		} else {
			res.reason = "pchannels unknown: the leader's replicate configuration lists none"
		}
		return res
	}
	cps := make([]uint64, len(leaderPCs))
	errs := make([]error, len(leaderPCs))
	var wg sync.WaitGroup
	for i := range leaderPCs {
		wg.Go(func() {
			resp, err := t.mb.rpc.GetReplicateInfo(t.mb.outgoing(ctx, ""), &milvuspb.GetReplicateInfoRequest{
				SourceClusterId: leaderID, TargetPchannel: targetPChannel(t, i),
			})
			if err != nil {
				errs[i] = err
				return
			}
			// No checkpoint yet means nothing replicated yet: known, zero.
			cps[i] = resp.GetCheckpoint().GetTimeTick()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			continue
		}
		switch code := status.Code(err); {
		case code == codes.Unimplemented:
			res.reason = reasonNoReplicateInfo
		case code == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
			res.reason = fmt.Sprintf("checkpoint poll timed out after %s", m.opts.PollTimeout)
		default:
			res.reason = fmt.Sprintf("checkpoint poll of %s failed: %s", targetPChannel(t, i), grpcMessage(err))
			if code == codes.NotFound || code == codes.InvalidArgument || code == codes.FailedPrecondition {
				// Likely a topology change we have not seen yet.
				m.Rediscover()
			}
		}
		return res
	}
	res.cps = cps
	return res
}

// targetPChannel names the target's pchannel that replicates the leader's
// i-th: from the replicate configuration, else by Milvus's naming rule.
func targetPChannel(t pollTarget, i int) string {
	if i < len(t.pchannels) && t.pchannels[i] != "" {
		return t.pchannels[i]
	}
	return fmt.Sprintf("%s-rootcoord-dml_%d", t.mb.id, i)
}
