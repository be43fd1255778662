package topology

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
)

// Settling: the arbiter's tick looks for what a change left unsettled and
// settles it from the clusters' own replicate configurations, so that
// exactly one cluster is primary and the proxy routes writes to it,
// without an operator:
//
//   - a switchover stuck after the old leader demoted itself (writes held,
//     no leader) is rolled forward when the target is a primary in its own
//     configuration, rolled back when the old leader still is, and rolled
//     forward by force promotion of the target when neither is and the
//     target covers the old leader's last acknowledged write (the
//     switchover confirmed that before the demotion, so this loses
//     nothing; the old leader, reachable, is then demoted again to a
//     target of it); a target that does not cover it is never promoted by
//     force: writes stay held and status says why;
//   - a cluster that claims to be a primary while another leads (a force
//     promotion whose answer was lost, a former leader that came back) is
//     demoted to a quarantined target of the leader.

// KindSettle is the kind of a change that settles one that failed part-way.
const KindSettle = "settle"

// settle runs one settling pass; the caller is the arbiter's loop.
func (a *Arbiter) settle(ctx context.Context, s *Snapshot) {
	a.mu.Lock()
	stuck, since := a.stuck, a.stuckSince
	a.mu.Unlock()
	if stuck != nil && s.FailingOver && a.mo.Now().Sub(since) >= a.mo.DetectAfter {
		a.settleStuck(ctx, *stuck)
		return
	}
	if s.Leader == nil || s.FailingOver {
		return
	}
	// The snapshot's claims can lag a change (a switchover's old leader
	// claimed until the next discovery round): ask the cluster itself.
	var suspects []string
	a.mu.Lock()
	for _, c := range s.Clusters {
		if c.ID != s.Leader.ID && (c.ClaimsPrimary || !c.Target) && c.Healthy && a.pending[c.ID] == nil {
			suspects = append(suspects, c.ID)
		}
	}
	a.mu.Unlock()
	if len(suspects) == 0 {
		return
	}
	answers := a.m.configsOf(ctx, suspects)
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range suspects {
		ans := answers[id]
		if ans.err != nil || !primaryInOwnEyes(ans.cfg, id) || a.pending[id] != nil || a.m.Snapshot().Leader == nil {
			continue
		}
		a.log.Warn("a cluster claims to be a primary while another leads; demoting it to a quarantined target",
			"cluster", id, "leader", a.m.Snapshot().Leader.ID)
		a.pending[id] = &pendingCluster{id: id, kind: pendingFormerLeader, source: id, report: -1}
	}
}

// settleStuck settles a stuck switchover from the clusters' own
// configurations.
func (a *Arbiter) settleStuck(ctx context.Context, st stuckSwitchover) {
	if !a.acquire(fmt.Sprintf("settling the stuck switchover from %s to %s", st.from, st.to)) {
		return
	}
	defer a.release()
	a.mu.Lock()
	still := a.stuck != nil && *a.stuck == st
	a.mu.Unlock()
	s := a.m.Snapshot()
	if !still || !s.FailingOver {
		return
	}
	a.cancelBackground()
	m := a.m
	r := a.beginChange(ctx, KindSettle, st.from, st.to, true)
	var claims map[string]bool
	err := r.step(ctx, StepReadConfigs, "", "GetReplicateConfiguration on every cluster", func() (string, error) {
		var summary []string
		claims, summary = a.readClaims(ctx)
		return strings.Join(summary, "; "), nil
	})
	if err != nil {
		r.finish(ctx, ResultFailed, err.Error())
		return
	}
	switch {
	case claims[st.to]:
		err = r.step(ctx, StepInstall, "", "route writes to "+st.to, func() (string, error) {
			if err := m.InstallLeader(Promotion{Leader: st.to, Demoted: true}); err != nil {
				return "", err
			}
			m.setFenced(st.from, false)
			return fmt.Sprintf("epoch %d", m.Snapshot().Epoch), nil
		})
		a.endStuck(ctx, r, err, fmt.Sprintf("rolled forward: %s is a primary in its own configuration", st.to))
	case claims[st.from]:
		err = r.step(ctx, StepRelease, st.from, "lift the fence, release writes", func() (string, error) {
			m.setFenced(st.from, false)
			return "writes go to " + st.from + " again", m.ReleaseWrites()
		})
		a.endStuck(ctx, r, err, fmt.Sprintf("rolled back: %s is still a primary in its own configuration; %s never took over", st.from, st.to))
	default:
		// Rolling forward by force loses nothing only when the target
		// holds every write the old leader acknowledged (the switchover
		// confirmed it before the demotion; confirmed again here). Else
		// writes stay held: a lossy promotion is an operator's call.
		if st.bar > 0 {
			c := s.Cluster(st.to)
			cctx, cancel := a.callCtx(ctx)
			err := a.confirmCovered(cctx, st.to, st.from, c.PChannels, pchannelCount(s, c), st.bar)
			cancel()
			if err != nil {
				msg := fmt.Sprintf("neither %s nor %s is a primary in its own configuration and %s does not cover %s's last acknowledged write (%v): not promoted by force; writes stay held (resume its replication, or `failover --to ID` knowingly)",
					st.from, st.to, st.to, st.from, err)
				r.finish(ctx, ResultFailed, msg)
				a.mu.Lock()
				a.stuckSince = a.mo.Now()
				a.mu.Unlock()
				a.log.Error("stuck switchover not settled", "why", msg)
				return
			}
		}
		r.finish(ctx, ResultOK, fmt.Sprintf("neither %s nor %s is a primary in its own configuration: rolling forward by force-promoting %s, which holds every write %s acknowledged", st.from, st.to, st.to, st.from))
		if _, err := a.failoverDemoted(ctx, st.from, st.to, true); err != nil {
			a.log.Error("settling the stuck switchover by force promotion failed; retrying after detect_after", "from", st.from, "to", st.to, "err", err)
		}
	}
}

// endStuck finishes a settling change and forgets the stuck switchover
// when it worked.
func (a *Arbiter) endStuck(ctx context.Context, r *changeRun, err error, msg string) {
	if err != nil {
		r.finish(ctx, ResultFailed, err.Error())
		a.log.Error("settling the stuck switchover failed; retrying", "err", err)
		return
	}
	a.mu.Lock()
	a.stuck = nil
	a.mu.Unlock()
	r.finish(ctx, ResultOK, msg)
	a.setPhase(PhaseSteady)
	a.log.Warn("stuck switchover settled", "how", msg)
}

// readClaims asks every cluster for its replicate configuration and
// returns which ones are primaries in their own eyes, and a summary.
func (a *Arbiter) readClaims(ctx context.Context) (map[string]bool, []string) {
	ids := a.m.clusterIDs()
	answers := a.m.configsOf(ctx, ids)
	claims := map[string]bool{}
	var summary []string
	for _, id := range ids {
		ans := answers[id]
		switch {
		case ans.err != nil:
			summary = append(summary, fmt.Sprintf("%s: %s", id, grpcMessage(ans.err)))
		default:
			src := sourceOf(ans.cfg)
			claims[id] = src == id
			summary = append(summary, fmt.Sprintf("%s: source %s", id, orNone(src)))
		}
	}
	return claims, summary
}

// resume looks at the change the store recorded last. One recorded as
// running did not finish: the arbiter that ran it stopped (this process
// before a restart, or another proxy that decided before). It is closed
// as interrupted, and settled from the clusters' own configurations:
// once discovery has run, a primary the clusters agree on stands; when
// none does within DetectAfter, it is treated as a stuck switchover from
// its old leader to its target (rolled forward or back by settle).
func (a *Arbiter) resume(ctx context.Context) {
	c, err := a.opts.Store.Load(ctx)
	if err != nil {
		a.log.Error("reading the recorded leader change failed; not resuming it", "err", err)
		return
	}
	if c == nil {
		return
	}
	a.restoreQuarantines(c)
	if !c.Running() {
		a.mu.Lock()
		if a.last == nil {
			a.last = c
		}
		a.mu.Unlock()
		return
	}
	step := c.Current
	if st, ok := c.CurrentStep(); ok && step == "" {
		step = st.Name + " (done)"
	}
	a.log.Warn("a recorded leader change did not finish; settling it from the clusters' own configurations",
		"change", c.ID, "kind", c.Kind, "from", c.From, "to", c.To, "step", step)
	c.Result, c.Current = ResultFailed, ""
	c.Message = fmt.Sprintf("interrupted at step %s (the arbiter running it stopped); settled from the clusters' own configurations", step)
	c.Took = a.mo.Now().Sub(c.At)
	if err := a.opts.Store.Save(ctx, c); err != nil {
		a.log.Error("closing the interrupted leader change record failed", "change", c.ID, "err", err)
	}
	a.record(*c)
	if c.From == "" || c.To == "" || c.From == c.To || !a.known(c.From) || !a.known(c.To) {
		return // nothing was promoted yet, or nothing to settle between
	}
	deadline := time.NewTimer(a.mo.DetectAfter + a.mo.DiscoveryInterval)
	defer deadline.Stop()
	for {
		ch := a.m.Changed()
		if s := a.m.Snapshot(); s.Leader != nil {
			a.log.Info("interrupted leader change settled by discovery", "change", c.ID, "leader", s.Leader.ID)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-deadline.C:
			a.log.Warn("no primary after the interrupted leader change; settling it as a stuck switchover", "from", c.From, "to", c.To)
			_ = a.m.HoldWrites(fmt.Sprintf("leader change from %s to %s interrupted; settling", c.From, c.To))
			a.mu.Lock()
			a.stuck, a.stuckSince = &stuckSwitchover{from: c.From, to: c.To, bar: c.Bar}, time.Time{}
			a.mu.Unlock()
			return
		}
	}
}

// restoreQuarantines puts back the quarantines a record says were in
// force: a cluster kept from reads because it lacks data stays so across
// a restart of the proxy, until the arbiter or an operator (attach after a
// rebuild) lifts it.
func (a *Arbiter) restoreQuarantines(c *Change) {
	for id, reason := range c.QuarantinesInForce {
		if !a.known(id) {
			continue
		}
		if s := a.m.Snapshot(); s.Leader != nil && s.Leader.ID == id {
			continue
		}
		if err := a.m.SetQuarantine(id, reason); err != nil {
			a.log.Error("restoring a quarantine failed", "cluster", id, "err", err)
			continue
		}
		a.log.Warn("quarantine restored from the leader change record", "cluster", id, "reason", reason)
	}
}

// primaryInOwnEyes reports whether cfg, a cluster's own configuration,
// leaves it taking writes: it is the source, or the configuration lists
// clusters but names it nobody's target (a configuration message that left
// it out made it stand alone). A cluster never configured (no clusters)
// is not part of replication: it waits for `attach`.
func primaryInOwnEyes(cfg *commonpb.ReplicateConfiguration, id string) bool {
	if len(cfg.GetClusters()) == 0 {
		return false
	}
	if sourceOf(cfg) == id {
		return true
	}
	for _, e := range cfg.GetCrossClusterTopology() {
		if e.GetTargetClusterId() == id {
			return false
		}
	}
	return true
}

// nameLeader is `failover --to` while no leader is known and no change is
// under way: discovery found several clusters that take writes in their
// own configurations and nothing showing which one was promoted last (a
// split brain), and writes are refused until an operator names the
// leader. to must be one of those primaries; it becomes the leader and
// the others are demoted, once healthy, to quarantined targets of it with
// a salvage report of what they took that it lacks (the rejoin path of a
// former leader).
func (a *Arbiter) nameLeader(ctx context.Context, to string) (Change, error) {
	if !a.known(to) {
		return a.refusedErr(KindFailover, "", to, fmt.Errorf("%w %q (configured: %s)", ErrUnknownCluster, to, strings.Join(a.m.clusterIDs(), ", ")))
	}
	m := a.m
	r := a.beginChange(ctx, KindFailover, "", to, false)
	var claims map[string]bool
	_ = r.step(ctx, StepReadConfigs, "", "GetReplicateConfiguration on every cluster", func() (string, error) {
		var summary []string
		claims, summary = a.readClaims(ctx)
		return strings.Join(summary, "; "), nil
	})
	var primaries []string
	for _, id := range m.clusterIDs() {
		if claims[id] {
			primaries = append(primaries, id)
		}
	}
	if !claims[to] {
		msg := fmt.Sprintf("no leader is known and %s is not a primary in its own replicate configuration", to)
		if len(primaries) > 0 {
			msg += fmt.Sprintf("; name one of the clusters that are: %s", strings.Join(primaries, ", "))
		} else {
			msg += "; no reachable cluster is (check discovery in `milvus-ha-proxy status`)"
		}
		ch := r.finish(ctx, ResultRefused, msg)
		a.setPhase(PhaseSteady)
		return ch, fmt.Errorf("%w: %s", ErrRefused, msg)
	}
	err := r.step(ctx, StepInstall, "", "route writes to "+to, func() (string, error) {
		if err := m.InstallLeader(Promotion{Leader: to}); err != nil {
			return "", err
		}
		return fmt.Sprintf("epoch %d", m.Snapshot().Epoch), nil
	})
	if err != nil {
		ch := r.finish(ctx, ResultFailed, err.Error())
		a.setPhase(PhaseSteady)
		return ch, fmt.Errorf("failover to %s: %w", to, err)
	}
	var others []string
	a.mu.Lock()
	for _, id := range primaries {
		if id != to && a.pending[id] == nil {
			others = append(others, id)
			a.pending[id] = &pendingCluster{id: id, kind: pendingFormerLeader, source: id, report: -1}
		}
	}
	a.mu.Unlock()
	msg := fmt.Sprintf("an operator named %s the leader among the primaries %s", to, strings.Join(primaries, ", "))
	if len(others) > 0 {
		msg += fmt.Sprintf("; %s to be demoted to quarantined targets of %s", strings.Join(others, ", "), to)
	}
	ch := r.finish(ctx, ResultOK, msg)
	a.setPhase(PhaseSteady)
	a.log.Warn("leader named by an operator after a split brain", "leader", to, "demoting", others, "epoch", ch.Epoch)
	return ch, nil
}
