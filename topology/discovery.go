package topology

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reasons shown when a backend lacks Milvus replication (e.g. Milvus Lite).
const (
	reasonNoReplicateInfo   = "backend has no replication API (GetReplicateInfo unimplemented)"
	reasonNoReplicateConfig = "backend has no replication API (GetReplicateConfiguration unimplemented)"
)

// discoveryLoop reads the replicate configuration now, then every
// DiscoveryInterval and whenever something kicks it (a failed probe of
// the leader, a checkpoint poll that names the wrong source).
func (m *Manager) discoveryLoop(ctx context.Context) {
	t := time.NewTicker(m.opts.DiscoveryInterval)
	defer t.Stop()
	for {
		if err := m.discover(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("discovery failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.kickDiscovery:
		}
	}
}

// configAnswer is one cluster's answer to GetReplicateConfiguration.
type configAnswer struct {
	cfg *commonpb.ReplicateConfiguration
	err error
}

// fetchConfigs asks the given clusters for their replicate configuration,
// in parallel.
func (m *Manager) fetchConfigs(ctx context.Context, members []*member) map[string]configAnswer {
	ctx, cancel := context.WithTimeout(ctx, max(m.opts.PollTimeout, m.opts.ProbeTimeout))
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := make(map[string]configAnswer, len(members))
	for _, mb := range members {
		wg.Go(func() {
			resp, err := mb.rpc.GetReplicateConfiguration(mb.outgoing(ctx, ""), &milvuspb.GetReplicateConfigurationRequest{})
			if err == nil {
				err = statusErr("GetReplicateConfiguration", mb.id, resp.GetStatus())
			}
			mu.Lock()
			out[mb.id] = configAnswer{cfg: resp.GetConfiguration(), err: err}
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// discover runs one discovery round.
func (m *Manager) discover(ctx context.Context) error {
	if m.opts.Discovery == DiscoveryStatic {
		return m.discoverStatic(ctx)
	}
	answers := m.fetchConfigs(ctx, m.order)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var changed bool
	var newEpoch uint64
	err := m.reg.update(func(tx *regTxn) error {
		var err error
		changed, newEpoch, err = m.applyReplicate(tx, answers)
		return err
	})
	if changed {
		m.afterLeaderChange(newEpoch)
	}
	return err
}

// sourceOf returns the cluster a configuration names as its replication
// source: the single source of cross_cluster_topology, or the only
// cluster of a configuration without topology (a primary standing alone,
// e.g. right after a force promotion). "" when it names none.
func sourceOf(cfg *commonpb.ReplicateConfiguration) string {
	if cfg == nil {
		return ""
	}
	src := ""
	for _, e := range cfg.GetCrossClusterTopology() {
		if src == "" {
			src = e.GetSourceClusterId()
		} else if src != e.GetSourceClusterId() {
			return "" // not a star: not something we can route on
		}
	}
	if src == "" && len(cfg.GetClusters()) == 1 {
		src = cfg.GetClusters()[0].GetClusterId()
	}
	return src
}

// applyReplicate derives roles from the clusters' answers. The leader is
// kept while it still claims to be the source, so a returning old leader
// that still believes it leads cannot take writes back; otherwise the
// source named by most answers wins (config order breaks ties), and a
// candidate that answered must itself agree that it is the source.
func (m *Manager) applyReplicate(tx *regTxn, answers map[string]configAnswer) (leaderChanged bool, epoch uint64, err error) {
	meta := tx.meta()
	t := m.tally(answers)
	if meta.FailingOver {
		// The failover owns the leader; record only what clusters claim.
		return false, meta.Epoch, m.recordClaims(tx, t.claims)
	}
	leader, splitBrain := m.chooseLeader(meta.LeaderID, &t)
	if leader != meta.LeaderID && meta.LeaderID != "" && m.opts.FollowsLeader != nil && m.opts.FollowsLeader() {
		// Another proxy decides; it installs the leader it chose.
		return false, meta.Epoch, m.recordClaims(tx, t.claims)
	}
	if leader == "" {
		msg := m.noLeaderReason(&t, splitBrain)
		if meta.DiscoveryError != msg {
			return false, meta.Epoch, tx.modifyMeta(func(mr *metaRecord) { mr.DiscoveryError = msg })
		}
		return false, meta.Epoch, nil
	}
	targets, pchannels := leaderTopology(m.leaderConfig(leader, &t), leader)
	leaderChanged = leader != meta.LeaderID
	epoch = meta.Epoch
	if leaderChanged && meta.LeaderID != "" {
		epoch++
	}
	for _, mb := range m.order {
		err := tx.modifyCluster(mb.id, func(r *clusterRecord) {
			m.applyRole(r, leader, leaderChanged, t.claims[mb.id], targets[mb.id], pchannels)
		})
		if err != nil {
			return false, epoch, err
		}
	}
	if leaderChanged {
		m.log.Info("leader discovered", "leader", leader, "previous", meta.LeaderID, "epoch", epoch)
		m.members[leader].lastGood.Store(m.opts.Now().UnixNano())
	}
	return leaderChanged, epoch, tx.modifyMeta(func(mr *metaRecord) {
		mr.LeaderID = leader
		mr.Epoch = epoch
		mr.DiscoveryError = ""
		mr.LeaderPChannels = slices.Clone(pchannels[leader])
		if leaderChanged {
			mr.LeaderLostAt = time.Time{}
		}
	})
}

// configTally is what one discovery round's answers say.
type configTally struct {
	answers       map[string]configAnswer
	claims        map[string]bool // the cluster names itself the source
	votes         map[string]int  // how many answers name each source
	errs          []string
	unimplemented int
}

func (t *configTally) answered(id string) bool { a, ok := t.answers[id]; return ok && a.err == nil }

// tally counts which source each answer names.
func (m *Manager) tally(answers map[string]configAnswer) configTally {
	t := configTally{answers: answers, claims: map[string]bool{}, votes: map[string]int{}}
	for _, mb := range m.order {
		a, ok := answers[mb.id]
		if !ok {
			continue
		}
		if a.err != nil {
			if status.Code(a.err) == codes.Unimplemented {
				t.unimplemented++
			}
			t.errs = append(t.errs, fmt.Sprintf("%s: %s", mb.id, grpcMessage(a.err)))
			continue
		}
		src := sourceOf(a.cfg)
		if src == "" {
			continue
		}
		t.votes[src]++
		if src == mb.id {
			t.claims[mb.id] = true
		}
	}
	return t
}

// chooseLeader keeps the current leader while it claims to be the source
// (or, unreachable, is still named by others). Otherwise the candidates
// are the clusters that claim to be the source in their own configuration
// and the unreachable ones that others name as their source. One
// candidate leads. Of several, a candidate whose configuration is stale
// is dropped (superseded); if exactly one remains it leads, else there is
// no leader and splitBrain lists the candidates: picking one by count or
// by config order would silently hand writes to a former leader whose
// acknowledged writes the others never got, and demote the cluster that
// has them. Last, a single standalone cluster with an empty configuration
// leads. "" when none qualifies.
func (m *Manager) chooseLeader(cur string, t *configTally) (leader string, splitBrain []string) {
	if cur != "" && (t.claims[cur] || (!t.answered(cur) && t.votes[cur] > 0)) {
		return cur, nil
	}
	var cands []string
	for _, mb := range m.order {
		if t.votes[mb.id] > 0 && (t.claims[mb.id] || !t.answered(mb.id)) {
			cands = append(cands, mb.id)
		}
	}
	if len(cands) > 1 {
		var live []string
		for _, id := range cands {
			if !m.superseded(id, t) {
				live = append(live, id)
			}
		}
		if len(live) != 1 {
			return "", cands
		}
		cands = live
	}
	if len(cands) == 1 {
		return cands[0], nil
	}
	if len(m.order) == 1 && t.answered(m.order[0].id) && len(t.answers[m.order[0].id].cfg.GetClusters()) == 0 {
		// One standalone cluster whose configuration is empty: it is the
		// only place writes can go, so it leads. (Milvus 2.6 blocks
		// instead until a configuration is set, milvus#52686; its fix
		// answers an empty configuration.)
		leader = m.order[0].id
		t.claims[leader] = true
	}
	return leader, nil
}

// superseded reports whether every configuration that names id as its
// source lists, as one of id's targets, a cluster that now claims to be a
// source itself. A cluster becomes a source only by a promotion (a
// switchover or a force promotion) after it was a target, so such a
// configuration was written before that promotion: a former leader that
// comes back with its old configuration, or a target that missed the
// change, whatever the count of such votes. The asymmetric evidence
// matters: a target that names another source than the one whose
// configuration lists it is no proof either way (either may be stale).
func (m *Manager) superseded(id string, t *configTally) bool {
	named := 0
	for _, mb := range m.order {
		a, ok := t.answers[mb.id]
		if !ok || a.err != nil || sourceOf(a.cfg) != id {
			continue
		}
		named++
		stale := false
		for _, e := range a.cfg.GetCrossClusterTopology() {
			if tg := e.GetTargetClusterId(); tg != id && t.claims[tg] {
				stale = true
				break
			}
		}
		if !stale {
			return false
		}
	}
	return named > 0
}

// splitBrainPrefix begins the discovery error of a split brain.
const splitBrainPrefix = "split brain:"

// noLeaderReason says why no leader was found.
func (m *Manager) noLeaderReason(t *configTally, splitBrain []string) string {
	switch {
	case len(splitBrain) > 1:
		var parts []string
		for _, id := range splitBrain {
			if t.claims[id] {
				parts = append(parts, fmt.Sprintf("%s claims to be a source in its own configuration", id))
			} else {
				parts = append(parts, fmt.Sprintf("%s (unreachable) is named source by %d configuration(s)", id, t.votes[id]))
			}
		}
		return fmt.Sprintf(splitBrainPrefix+" %s, and no configuration shows which one was promoted last (%s); writes are refused until an operator names the leader with `milvus-ha-proxy failover --to ID` (the others are then demoted to quarantined targets of it)",
			strings.Join(splitBrain, " and "), strings.Join(parts, "; "))
	case t.unimplemented == len(m.order):
		return reasonNoReplicateConfig + "; use discovery: static"
	case len(t.errs) == len(m.order):
		return "no cluster answered GetReplicateConfiguration: " + joinReasons(t.errs)
	}
	return "no configured cluster is named replication source by the replicate configuration"
}

// leaderConfig is the configuration that describes the leader's targets:
// its own; if it did not answer, a target's copy naming the same source.
func (m *Manager) leaderConfig(leader string, t *configTally) *commonpb.ReplicateConfiguration {
	if t.answered(leader) && t.claims[leader] {
		return t.answers[leader].cfg
	}
	for _, mb := range m.order {
		if t.answered(mb.id) && sourceOf(t.answers[mb.id].cfg) == leader {
			return t.answers[mb.id].cfg
		}
	}
	return nil
}

// leaderTopology returns the leader's targets and every listed cluster's
// pchannels from cfg.
func leaderTopology(cfg *commonpb.ReplicateConfiguration, leader string) (targets map[string]bool, pchannels map[string][]string) {
	targets, pchannels = map[string]bool{}, map[string][]string{}
	for _, e := range cfg.GetCrossClusterTopology() {
		if e.GetSourceClusterId() == leader {
			targets[e.GetTargetClusterId()] = true
		}
	}
	for _, c := range cfg.GetClusters() {
		pchannels[c.GetClusterId()] = c.GetPchannels()
	}
	return targets, pchannels
}

// applyRole sets one cluster's record from the discovered topology.
func (m *Manager) applyRole(r *clusterRecord, leader string, leaderChanged, claims, target bool, pchannels map[string][]string) {
	r.ClaimsPrimary = claims
	r.Target = target && r.ID != leader
	if pcs, ok := pchannels[r.ID]; ok {
		r.PChannels = slices.Clone(pcs)
	}
	prevRole := r.Role
	switch {
	case r.ID == leader:
		r.Role = RoleLeader
		r.CheckpointsKnown, r.Checkpoints, r.LagReason = false, nil, ""
	case target && r.StaticRole == RoleStandby:
		r.Role = RoleStandby
	case target:
		r.Role = RoleAlternative
	default:
		r.Role = RoleStandby
		r.CheckpointsKnown = false
		if claims {
			r.LagReason = fmt.Sprintf("claims to be a replication source but %s leads; never written to", leader)
		} else {
			r.LagReason = fmt.Sprintf("not a replication target of leader %s", leader)
		}
	}
	if leaderChanged && r.Role != RoleLeader {
		// Checkpoints were against the old source.
		r.CheckpointsKnown = false
		if target {
			r.LagReason = "new leader; awaiting first checkpoint poll"
		}
	} else if prevRole != r.Role && target && !r.CheckpointsKnown {
		r.LagReason = "awaiting first checkpoint poll"
	}
}

// recordClaims stores which clusters claim to be a source, touching
// nothing else.
func (m *Manager) recordClaims(tx *regTxn, claims map[string]bool) error {
	for _, mb := range m.order {
		if r := tx.cluster(mb.id); r != nil && r.ClaimsPrimary != claims[mb.id] {
			if err := tx.modifyCluster(mb.id, func(r *clusterRecord) { r.ClaimsPrimary = claims[mb.id] }); err != nil {
				return err
			}
		}
	}
	return nil
}

// afterLeaderChange resets what belonged to the previous leader: its
// clock. The collection cache needs no reset: its entries remember the
// epoch and leader they were loaded under, and the snapshot that names a
// new leader is published before this runs, so clearing here would also
// drop entries already loaded from the new leader.
func (m *Manager) afterLeaderChange(epoch uint64) {
	m.clock.reset(epoch)
}

// discoverStatic keeps the configured roles and only learns pchannel names
// from the leader's replicate configuration, when it has one.
func (m *Manager) discoverStatic(ctx context.Context) error {
	var leaderID string
	m.reg.read(func(tx *regTxn) { leaderID = tx.meta().LeaderID })
	mb := m.members[leaderID]
	if mb == nil {
		return nil
	}
	a := m.fetchConfigs(ctx, []*member{mb})[leaderID]
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return m.reg.update(func(tx *regTxn) error {
		meta := tx.meta()
		if meta.LeaderID != leaderID {
			return errStale
		}
		if a.err != nil {
			msg := "reading the leader's replicate configuration: " + grpcMessage(a.err)
			if status.Code(a.err) == codes.Unimplemented {
				msg = reasonNoReplicateConfig
			}
			if meta.DiscoveryError == msg {
				return nil
			}
			return tx.modifyMeta(func(mr *metaRecord) { mr.DiscoveryError = msg })
		}
		pchannels := map[string][]string{}
		for _, c := range a.cfg.GetClusters() {
			pchannels[c.GetClusterId()] = c.GetPchannels()
		}
		for _, r := range tx.clusters() {
			pcs, ok := pchannels[r.ID]
			if ok && !slices.Equal(pcs, r.PChannels) {
				if err := tx.modifyCluster(r.ID, func(r *clusterRecord) { r.PChannels = slices.Clone(pcs) }); err != nil {
					return err
				}
			}
		}
		if meta.DiscoveryError == "" && slices.Equal(meta.LeaderPChannels, pchannels[leaderID]) {
			return nil
		}
		return tx.modifyMeta(func(mr *metaRecord) {
			mr.DiscoveryError = ""
			mr.LeaderPChannels = slices.Clone(pchannels[leaderID])
		})
	})
}

func joinReasons(rs []string) string {
	out := ""
	for i, r := range rs {
		if i > 0 {
			out += "; "
		}
		out += r
	}
	return out
}
