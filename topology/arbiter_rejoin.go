package topology

import (
	"context"
	"fmt"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
)

// reconcile looks after clusters left behind by a forced failover: a
// former leader that is healthy again is never written to, its salvage is
// reported, and it is demoted to a (quarantined) target of the leader; an
// alternative that was unreachable is compared with the salvage checkpoint
// and attached or quarantined; an alternative attached behind the salvage
// checkpoint gets its reads back once the former leader shows that the
// gap held no data.
func (a *Arbiter) reconcile(ctx context.Context, s *Snapshot) {
	if s.FailingOver || s.Leader == nil {
		return
	}
	now := a.mo.Now()
	a.mu.Lock()
	var due []*pendingCluster
	for id, p := range a.pending {
		c := s.Cluster(id)
		if id == s.Leader.ID {
			delete(a.pending, id) // promoted since: nothing to rejoin
			continue
		}
		if c != nil && c.Healthy && !now.Before(p.nextTry) {
			due = append(due, p)
		}
	}
	var gaps []*gapCheck
	for _, g := range a.gaps {
		src := s.Cluster(g.source)
		if _, waiting := a.pending[g.source]; !waiting && src != nil && src.Healthy {
			gaps = append(gaps, g)
		}
	}
	a.mu.Unlock()
	if len(due) == 0 && len(gaps) == 0 {
		return
	}
	if !a.acquire("rejoining a returning cluster") {
		return
	}
	defer a.release()
	a.cancelBackground()
	a.setPhase(PhaseRejoining)
	defer a.setPhase(PhaseSteady)
	defer a.saveQuarantines(ctx)
	for _, p := range due {
		var err error
		switch p.kind {
		case pendingFormerLeader:
			err = a.rejoinFormerLeader(ctx, p)
		case pendingUnevaluated:
			err = a.evaluate(ctx, p)
		}
		a.mu.Lock()
		if err == nil {
			delete(a.splitBrain, p.id)
		}
		if err != nil {
			p.lastErr = err.Error()
			p.backoff = min(max(2*p.backoff, a.opts.RetryBackoff), 30*time.Second)
			p.nextTry = a.mo.Now().Add(p.backoff)
			a.log.Warn("returning cluster not handled yet; will retry", "cluster", p.id, "err", err, "retry_in", p.backoff)
		} else {
			delete(a.pending, p.id)
		}
		a.mu.Unlock()
	}
	for _, g := range gaps {
		a.checkGap(ctx, g)
	}
}

// rejoinFormerLeader reports what a former leader holds past the salvage
// checkpoint, then makes it a target of the current leader. It is never
// written to again; it stays quarantined (it lacks what the leader took
// before it rejoined, and holds what never replicated).
func (a *Arbiter) rejoinFormerLeader(ctx context.Context, p *pendingCluster) error {
	m := a.m
	s := m.Snapshot()
	leader := s.Leader.ID
	cctx, cancel := a.callCtx(ctx)
	oldCfg, err := m.replicateConfigOf(cctx, p.id)
	cancel()
	if err != nil {
		return err
	}
	// Its own configuration already makes it a target of the leader (it
	// was demoted behind our back). Named as nobody's target (left out of
	// a configuration), it stands alone as a primary.
	already := targetOf(oldCfg, leader, p.id)
	report, err := a.salvageReport(ctx, p, leader, already)
	if err != nil {
		return err
	}
	if err := a.demoteToTarget(ctx, s, p, oldCfg, leader, already); err != nil {
		return err
	}
	a.mu.Lock()
	u := report.Unreplicated
	report.OldLeaderReturned, report.ReturnedAt, report.Error = true, a.mo.Now(), ""
	a.mu.Unlock()
	reason := fmt.Sprintf("former leader, demoted to a target of %s after a forced failover: it holds %s past %s's salvage checkpoint and lacks what %s took before it rejoined; rebuild it before it serves reads",
		leader, u, report.NewLeader, leader)
	if p.report < 0 {
		reason = fmt.Sprintf("claimed to be a primary while %s led; demoted to a target of %s: it may hold writes made on it directly and lacks what %s took before; rebuild it before it serves reads",
			leader, leader, leader)
	}
	if err := m.SetQuarantine(p.id, reason); err != nil {
		return err
	}
	// It refuses writes itself now, and the quarantine keeps reads away.
	m.setFenced(p.id, false)
	m.Rediscover()
	a.log.Info("former leader rejoined as a quarantined target", "cluster", p.id, "leader", leader)
	return nil
}

// salvageReport fills in, once, what a former leader holds past the
// salvage checkpoint (DumpMessages), and returns its report. A cluster
// that claimed to be a primary without ever leading has none; what it
// holds is not compared.
func (a *Arbiter) salvageReport(ctx context.Context, p *pendingCluster, leader string, already bool) (*SalvageReport, error) {
	report := &SalvageReport{Unreplicated: &Unreplicated{Incomplete: "never led: not compared"}}
	a.mu.Lock()
	if p.report >= 0 {
		report = &a.reports[p.report]
	}
	known := report.Unreplicated != nil
	a.mu.Unlock()
	if known {
		return report, nil
	}
	var u Unreplicated
	if already {
		// Demoted behind our back: its WAL now also holds what it
		// replicated from the leader, which cannot be told apart.
		u.Incomplete = fmt.Sprintf("it rejoined %s before the proxy could read it", leader)
	} else {
		var err error
		if u, err = a.unreplicated(ctx, p.id, p.salvage); err != nil {
			return nil, err
		}
	}
	a.mu.Lock()
	report.Unreplicated = &u
	a.mu.Unlock()
	a.log.Warn("former leader is back; what it held that never replicated", "cluster", p.id, "new_leader", leader, "unreplicated", u.String())
	return report, nil
}

// demoteToTarget makes a former leader a target of the leader: the
// former leader first, as in a switchover (it demotes itself and its own
// CDC stops; only then does the configuration listing it reach the other
// targets, see ArbiterOptions.RejoinSettle), then the leader, then the
// other targets in the background.
func (a *Arbiter) demoteToTarget(ctx context.Context, s *Snapshot, p *pendingCluster, oldCfg *commonpb.ReplicateConfiguration, leader string, already bool) error {
	cctx, cancel := a.callCtx(ctx)
	leaderCfg, err := a.m.replicateConfigOf(cctx, leader)
	cancel()
	if err != nil {
		return err
	}
	if already && targetOf(leaderCfg, leader, p.id) {
		return nil
	}
	entry := entryOf(oldCfg, p.id)
	if entry == nil {
		entry = p.entry
	}
	if entry == nil {
		entry = a.newEntry(s, p.id)
	}
	if entryOf(leaderCfg, leader) == nil {
		return fmt.Errorf("cannot build a configuration naming %s as a target of %s: the leader has no entry of its own", p.id, leader)
	}
	newCfg := withTarget(leaderCfg, leader, entry)
	if !already {
		if err := a.sendConfig(ctx, p.id, newCfg); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(a.opts.RejoinSettle):
		}
	}
	if err := a.sendConfig(ctx, leader, newCfg); err != nil {
		return err
	}
	for _, e := range newCfg.GetClusters() {
		if id := e.GetClusterId(); id != leader && id != p.id {
			a.sendInBackground(id, newCfg)
		}
	}
	return nil
}

// unreplicated dumps, on a former leader, what lies past the salvage
// checkpoint and up to its current timestamp (nothing writes to it).
func (a *Arbiter) unreplicated(ctx context.Context, id string, salvage []*commonpb.ReplicateCheckpoint) (Unreplicated, error) {
	cctx, cancel := a.callCtx(ctx)
	end, err := a.m.allocTimestampOf(cctx, id)
	cancel()
	if err != nil {
		return Unreplicated{}, err
	}
	dctx, dcancel := context.WithTimeout(ctx, 2*a.opts.CallTimeout)
	defer dcancel()
	return a.m.dumpPastOf(dctx, id, salvage, end), nil
}

// evaluate compares an alternative that was unreachable during a failover
// with the salvage checkpoint: ahead, it stays quarantined; otherwise it
// is attached to the leader (and quarantined while behind).
func (a *Arbiter) evaluate(ctx context.Context, p *pendingCluster) error {
	m := a.m
	s := m.Snapshot()
	leader := s.Leader.ID
	c := s.Cluster(p.id)
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	cfg, err := m.replicateConfigOf(cctx, p.id)
	if err != nil {
		return err
	}
	if sourceOf(cfg) == leader {
		// Attached already (an earlier attempt, or an operator); its
		// quarantine stays until someone decides otherwise.
		return nil
	}
	cps, _, err := m.replicateInfoOf(cctx, p.id, p.source, c.PChannels, len(p.salvage))
	if err != nil {
		return err
	}
	t, salv := ticks(cps), ticks(p.salvage)
	aheadOn, behindOn := compareSalvage(t, salv)
	if aheadOn >= 0 {
		return m.SetQuarantine(p.id, fmt.Sprintf("ran ahead of the salvage checkpoint of %s on pchannel %d (%d > %d): it holds writes of %s that the leader lacks; rebuild it before it serves reads",
			p.source, aheadOn, t[aheadOn], salv[aheadOn], p.source))
	}
	leaderCfg, err := m.replicateConfigOf(cctx, leader)
	if err != nil {
		return err
	}
	entry := entryOf(cfg, p.id)
	if entry == nil {
		entry = p.entry
	}
	if entry == nil || entryOf(leaderCfg, leader) == nil {
		return fmt.Errorf("cannot build a configuration naming %s as a target of %s: an entry is missing", p.id, leader)
	}
	newCfg := withTarget(leaderCfg, leader, entry)
	if err := a.sendConfig(ctx, leader, newCfg); err != nil {
		return err
	}
	a.sendInBackground(p.id, newCfg)
	m.Rediscover()
	if behindOn >= 0 {
		g := &gapCheck{id: p.id, source: p.source, from: cloneCheckpoints(cps), salvage: salv}
		a.mu.Lock()
		a.gaps[p.id] = g
		a.mu.Unlock()
		return m.SetQuarantine(p.id, fmt.Sprintf("attached to %s while behind the salvage checkpoint on pchannel %d (%d < %d): what lies between never reaches it; no reads until %s shows that gap held no data",
			leader, behindOn, t[behindOn], salv[behindOn], p.source))
	}
	return m.SetQuarantine(p.id, "")
}

// checkGap asks the former leader what an alternative attached behind the
// salvage checkpoint missed: nothing but time ticks, and it serves reads
// again; data, and its quarantine says how much.
func (a *Arbiter) checkGap(ctx context.Context, g *gapCheck) {
	dctx, cancel := context.WithTimeout(ctx, 2*a.opts.CallTimeout)
	defer cancel()
	var u Unreplicated
	for i, ck := range g.from {
		var end uint64
		if i < len(g.salvage) {
			end = g.salvage[i]
		}
		u.add(a.m.dumpOneOf(dctx, g.source, i, ck, end))
	}
	if ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	delete(a.gaps, g.id)
	a.mu.Unlock()
	var err error
	if u.Messages() == 0 && u.Incomplete == "" {
		err = a.m.SetQuarantine(g.id, "")
		a.log.Info("alternative attached behind the salvage checkpoint missed no data; serving reads again", "cluster", g.id)
	} else {
		err = a.m.SetQuarantine(g.id, fmt.Sprintf("attached behind the salvage checkpoint and missed %s that never reach it; rebuild it before it serves reads", u))
		a.log.Warn("alternative attached behind the salvage checkpoint missed data", "cluster", g.id, "missed", u.String())
	}
	if err != nil {
		a.log.Error("updating quarantine", "cluster", g.id, "err", err)
	}
}

// targetOf reports whether cfg makes target a target of source.
func targetOf(cfg *commonpb.ReplicateConfiguration, source, target string) bool {
	for _, e := range cfg.GetCrossClusterTopology() {
		if e.GetSourceClusterId() == source && e.GetTargetClusterId() == target {
			return true
		}
	}
	return false
}
