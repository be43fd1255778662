package topology

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
)

// candidate is an alternative considered for promotion, with how far it
// replicated each of the lost leader's pchannels.
type candidate struct {
	id    string
	order int
	cps   []*commonpb.ReplicateCheckpoint
	ticks []uint64
}

// preference orders candidates best first: one at or above every other
// on every pchannel when it exists, else the highest minimum; ties go to
// config order. cands must be in config order.
func preference(cands []candidate) []candidate {
	rest := append([]candidate(nil), cands...)
	var out []candidate
	for len(rest) > 0 {
		i := choose(rest)
		out = append(out, rest[i])
		rest = append(rest[:i:i], rest[i+1:]...)
	}
	return out
}

// choose returns the index of the candidate that replicated furthest.
func choose(cands []candidate) int {
	at := func(t []uint64, p int) uint64 {
		if p < len(t) {
			return t[p]
		}
		return 0
	}
	width := 0
	for _, c := range cands {
		width = max(width, len(c.ticks))
	}
	for i, ci := range cands {
		dominates := true
		for j, cj := range cands {
			if i == j {
				continue
			}
			for p := range width {
				if at(ci.ticks, p) < at(cj.ticks, p) {
					dominates = false
					break
				}
			}
			if !dominates {
				break
			}
		}
		if dominates {
			return i
		}
	}
	// A pchannel a candidate did not report counts as zero.
	lowest := func(t []uint64) uint64 {
		m := at(t, 0)
		for p := 1; p < width; p++ {
			m = min(m, at(t, p))
		}
		return m
	}
	best, bestMin := 0, lowest(cands[0].ticks)
	for i := 1; i < len(cands); i++ {
		if m := lowest(cands[i].ticks); m > bestMin {
			best, bestMin = i, m
		}
	}
	return best
}

func minTick(t []uint64) uint64 {
	if len(t) == 0 {
		return 0
	}
	m := t[0]
	for _, v := range t[1:] {
		m = min(m, v)
	}
	return m
}

// compareSalvage finds the first pchannel on which an alternative's
// checkpoints run ahead of the new leader's salvage checkpoint (it holds
// what the new leader lacks) and the first on which they stand behind it
// (it lacks what the new leader holds); -1 for none.
func compareSalvage(cps, salvage []uint64) (aheadOn, behindOn int) {
	aheadOn, behindOn = -1, -1
	for p := range max(len(cps), len(salvage)) {
		var c, s uint64
		if p < len(cps) {
			c = cps[p]
		}
		if p < len(salvage) {
			s = salvage[p]
		}
		if c > s && aheadOn < 0 {
			aheadOn = p
		}
		if c < s && behindOn < 0 {
			behindOn = p
		}
	}
	return aheadOn, behindOn
}

// position is one cluster's checkpoints of the lost leader's pchannels.
type position struct {
	c   *Cluster
	cps []*commonpb.ReplicateCheckpoint
	err error
}

// pchannelCount is how many pchannels the leader has (they correspond by
// index on every cluster).
func pchannelCount(s *Snapshot, c *Cluster) int {
	if n := len(s.LeaderPChannels); n > 0 {
		return n
	}
	return len(c.PChannels)
}

// positions reads every replication target's checkpoints of from's
// pchannels, in parallel.
func (a *Arbiter) positions(ctx context.Context, s *Snapshot, from string) []position {
	var out []position
	for _, c := range s.Clusters {
		if c.ID != from && c.Target {
			out = append(out, position{c: c})
		}
	}
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() {
			p := &out[i]
			if !p.c.Healthy {
				p.err = fmt.Errorf("%s is unhealthy: %s", p.c.ID, p.c.HealthReason)
				return
			}
			n := pchannelCount(s, p.c)
			if n == 0 {
				p.err = fmt.Errorf("the pchannels of %s are unknown (discovery has not read a replicate configuration)", p.c.ID)
				return
			}
			cctx, cancel := context.WithTimeout(ctx, a.mo.PollTimeout)
			defer cancel()
			p.cps, _, p.err = a.m.replicateInfoOf(cctx, p.c.ID, from, p.c.PChannels, n)
		})
	}
	wg.Wait()
	return out
}

// failoverRun carries one failover across its steps.
type failoverRun struct {
	*changeRun
	s         *Snapshot
	from, to  string
	auto      bool
	holdStart time.Time
	// oldDemoted: the old leader already took the new configuration; it
	// is no primary to fall back to.
	oldDemoted bool

	pos     []position  // every target's checkpoints of from's pchannels
	cands   []candidate // those that may be promoted
	why     []error     // why candidates were left out or failed
	chosen  *candidate
	cfg     *commonpb.ReplicateConfiguration // chosen's configuration before its promotion
	salvage []*commonpb.ReplicateCheckpoint

	quarantine  map[string]string
	unevaluated []string
	gaps        []*gapCheck
}

// failover force-promotes an alternative after the leader from was lost
// (to == "": the one that replicated furthest) or at an operator's
// request. The caller holds the change token.
func (a *Arbiter) failover(ctx context.Context, s *Snapshot, from, to string, auto bool) (Change, error) {
	f := &failoverRun{changeRun: a.beginChange(ctx, KindFailover, from, to, auto), s: s, from: from, to: to, auto: auto,
		quarantine: map[string]string{}}
	return a.runFailover(ctx, f)
}

// failoverDemoted force-promotes to after the old leader from already
// demoted itself (it took the new configuration but to never took over):
// if that fails too, writes stay held (there is no primary to release
// them to) and the change is settled again after detect_after.
func (a *Arbiter) failoverDemoted(ctx context.Context, from, to string, auto bool) (Change, error) {
	f := &failoverRun{changeRun: a.beginChange(ctx, KindFailover, from, to, auto), s: a.m.Snapshot(), from: from, to: to, auto: auto,
		quarantine: map[string]string{}, oldDemoted: true}
	return a.runFailover(ctx, f)
}

func (a *Arbiter) runFailover(ctx context.Context, f *failoverRun) (Change, error) {
	s, from := f.s, f.from
	if err := f.hold(ctx); err != nil {
		return f.abandon(ctx, err)
	}
	if err := f.readCheckpoints(ctx); err != nil {
		return f.abandon(ctx, err)
	}
	if err := f.promote(ctx); err != nil {
		return f.abandon(ctx, err)
	}
	// From here on the new leader exists in Milvus; the proxy follows it
	// whatever happens to the other clusters.
	f.attach(ctx)
	if err := f.install(ctx); err != nil {
		// Cannot happen for configured clusters; say so loudly.
		a.log.Error("installing the promoted leader failed", "leader", f.chosen.id, "err", err)
		return f.abandon(ctx, err)
	}
	f.leaveForReconcile()
	if old := s.Cluster(from); old != nil && old.Healthy {
		f.demoteOld(ctx)
	}
	return f.done(ctx), nil
}

// hold holds writes and fences the old leader: nothing may reach it from
// now on, since an acknowledged write there after the promotion would be
// lost. Requests already in flight to it get DrainTimeout to finish.
func (f *failoverRun) hold(ctx context.Context) error {
	a, m := f.a, f.a.m
	return f.step(ctx, StepHold, f.from, "fence and drain", func() (string, error) {
		reason := fmt.Sprintf("leader %s lost; promoting the alternative that replicated furthest", f.from)
		if !f.auto {
			reason = fmt.Sprintf("forced failover from %s to %s", f.from, f.to)
		}
		if err := m.HoldWrites(reason); err != nil {
			return "", err
		}
		f.holdStart = a.mo.Now()
		if f.s.FailingOver && !f.s.HoldSince.IsZero() {
			f.holdStart = f.s.HoldSince // a stuck switchover held them already
		}
		m.setFenced(f.from, true)
		if old := f.s.Cluster(f.from); old != nil && old.Healthy {
			if left := m.drain(ctx, f.from, a.opts.DrainTimeout); left > 0 {
				a.log.Warn("requests still in flight to the old leader after the drain timeout", "leader", f.from, "in_flight", left)
				return fmt.Sprintf("%d requests still in flight after %s", left, a.opts.DrainTimeout), nil
			}
		}
		return "writes held", nil
	})
}

// readCheckpoints reads how far every candidate replicated the old
// leader's pchannels and keeps those that may be promoted.
func (f *failoverRun) readCheckpoints(ctx context.Context) error {
	return f.step(ctx, StepCheckpoints, "", "GetReplicateInfo on every target", func() (string, error) {
		f.pos = f.a.positions(ctx, f.s, f.from)
		var got, skipped []string
		for _, p := range f.pos {
			c := p.c
			switch {
			case !f.auto && c.ID != f.to:
				continue
			case p.err != nil:
				f.why = append(f.why, p.err)
				continue
			case f.auto && c.Quarantined:
				skipped = append(skipped, fmt.Sprintf("%s quarantined: %s", c.ID, c.QuarantineReason))
				continue
			case f.auto && c.Breaker == BreakerOpen:
				skipped = append(skipped, c.ID+": circuit breaker open")
				continue
			}
			f.cands = append(f.cands, candidate{id: c.ID, order: c.Order, cps: p.cps, ticks: ticks(p.cps)})
			got = append(got, fmt.Sprintf("%s %v", c.ID, ticks(p.cps)))
		}
		if len(f.cands) == 0 {
			if !f.auto && len(f.why) == 0 {
				f.why = append(f.why, fmt.Errorf("%s is not a replication target of %s", f.to, f.from))
			}
			if len(skipped) > 0 {
				f.why = append(f.why, fmt.Errorf("not promoted automatically (%s); writes wait for %s to return", strings.Join(skipped, "; "), f.from))
			}
			if len(f.why) == 0 {
				f.why = append(f.why, fmt.Errorf("%s has no replication target", f.from))
			}
			return "", fmt.Errorf("no alternative can be promoted: %w", errors.Join(f.why...))
		}
		return "candidates: " + strings.Join(got, ", "), nil
	})
}

// promote force-promotes the best candidate, the next one if it fails.
func (f *failoverRun) promote(ctx context.Context) error {
	for _, cd := range preference(f.cands) {
		n := pchannelCount(f.s, f.s.Cluster(cd.id))
		err := f.step(ctx, StepPromote, cd.id, "UpdateReplicateConfiguration(force_promote)", func() (string, error) {
			cfg, salvage, err := f.a.promote(ctx, cd, f.from, n)
			if err != nil {
				return "", err
			}
			f.cfg, f.salvage = cfg, salvage
			return fmt.Sprintf("promoted; salvage checkpoint %v", ticks(salvage)), nil
		})
		if err == nil {
			f.chosen = &cd
			f.ch.To = cd.id
			return nil
		}
		if f.saveErr != nil {
			return err
		}
		f.a.log.Warn("force promotion failed", "cluster", cd.id, "err", err)
		f.why = append(f.why, err)
	}
	return errors.Join(f.why...)
}

// attach makes the remaining alternatives targets of the new leader, or
// quarantines them: one that ran ahead of the salvage checkpoint holds
// writes the new leader lacks; one whose position was unknown is
// compared once it is healthy; one behind is attached but kept from reads
// until the old leader shows what it missed.
func (f *failoverRun) attach(ctx context.Context) {
	a, m := f.a, f.a.m
	chosen := f.chosen.id
	salvTicks := ticks(f.salvage)
	var attach []*commonpb.MilvusCluster
	for _, p := range f.pos {
		c := p.c
		if c.ID == chosen {
			continue
		}
		if p.err != nil {
			f.quarantine[c.ID] = fmt.Sprintf("its position was unknown when %s was promoted (%v): compared with the salvage checkpoint once it is healthy", chosen, p.err)
			f.unevaluated = append(f.unevaluated, c.ID)
			continue
		}
		t := ticks(p.cps)
		aheadOn, behindOn := compareSalvage(t, salvTicks)
		if aheadOn >= 0 {
			f.quarantine[c.ID] = fmt.Sprintf("ran ahead of %s's salvage checkpoint on pchannel %d (%d > %d): it holds writes of %s that %s lacks; rebuild it before it serves reads",
				chosen, aheadOn, t[aheadOn], salvTicks[aheadOn], f.from, chosen)
			continue
		}
		e := entryOf(f.cfg, c.ID)
		if e == nil {
			f.quarantine[c.ID] = fmt.Sprintf("not in %s's replicate configuration: cannot be attached", chosen)
			continue
		}
		attach = append(attach, e)
		if behindOn >= 0 && !c.Quarantined {
			f.quarantine[c.ID] = fmt.Sprintf("attached to %s while behind its salvage checkpoint on pchannel %d (%d < %d): replication from %s starts at the reconfiguration, so what lies between never reaches it; no reads until %s returns and shows that gap held no data",
				chosen, behindOn, t[behindOn], salvTicks[behindOn], chosen, f.from)
			f.gaps = append(f.gaps, &gapCheck{id: c.ID, source: f.from, from: cloneCheckpoints(p.cps), salvage: salvTicks})
		}
	}
	if len(attach) == 0 {
		return
	}
	attachCfg := star(entryOf(f.cfg, chosen), attach...)
	err := f.step(ctx, StepAttach, chosen, describeConfig(attachCfg, false), func() (string, error) {
		cctx, cancel := a.callCtx(ctx)
		defer cancel()
		return "ok", m.updateReplicateConfigOf(cctx, chosen, attachCfg, false)
	})
	if err != nil {
		a.log.Warn("attaching the remaining alternatives failed", "leader", chosen, "err", err)
		for _, e := range attach {
			f.quarantine[e.GetClusterId()] = fmt.Sprintf("could not be attached to %s (%v): retried once it is healthy", chosen, err)
			f.unevaluated = append(f.unevaluated, e.GetClusterId())
		}
		f.gaps = nil
		return
	}
	// Every cluster gets the same configuration. The targets answer once
	// it reaches them through CDC; writes need not wait: the
	// configuration precedes every new write in the new leader's WAL, so
	// they all reach the targets.
	for _, e := range attach {
		a.sendInBackground(e.GetClusterId(), attachCfg)
	}
}

// install makes the proxy route writes to the new leader.
func (f *failoverRun) install(ctx context.Context) error {
	m := f.a.m
	return f.step(ctx, StepInstall, "", "route writes to "+f.chosen.id, func() (string, error) {
		err := m.InstallLeader(Promotion{Leader: f.chosen.id, Salvage: ticks(f.salvage), Quarantine: f.quarantine})
		if err != nil {
			return "", err
		}
		f.ch.Held = f.a.mo.Now().Sub(f.holdStart)
		return fmt.Sprintf("epoch %d", m.Snapshot().Epoch), nil
	})
}

// leaveForReconcile records what the failover leaves to reconcile: the
// former leader (salvage report, then a target) and the alternatives not
// yet evaluated or attached behind the salvage checkpoint.
func (f *failoverRun) leaveForReconcile() {
	a := f.a
	chosen, from := f.chosen.id, f.from
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stuck = nil
	delete(a.pending, chosen)
	delete(a.splitBrain, chosen)
	a.reports = append(a.reports, SalvageReport{
		Epoch: a.m.Snapshot().Epoch, OldLeader: from, NewLeader: chosen, At: a.mo.Now(), Checkpoints: ticks(f.salvage),
	})
	keep := cloneCheckpoints(f.salvage)
	a.pending[from] = &pendingCluster{id: from, kind: pendingFormerLeader, source: from, salvage: keep,
		entry: entryOf(f.cfg, from), report: len(a.reports) - 1}
	for _, id := range f.unevaluated {
		a.pending[id] = &pendingCluster{id: id, kind: pendingUnevaluated, source: from, salvage: keep, entry: entryOf(f.cfg, id)}
	}
	for _, g := range f.gaps {
		a.gaps[g.id] = g
	}
}

// demoteOld sends a reachable old leader the new leader's configuration
// (it becomes a target, refuses writes, and its own targets follow the
// new leader), after reading what it holds past the salvage checkpoint.
// Until that happens it is a primary in its own eyes: clients connected
// to it directly could still write there. If it fails, the change says so
// and status shows the split-brain risk until a later rejoin succeeds.
func (f *failoverRun) demoteOld(ctx context.Context) {
	a := f.a
	a.mu.Lock()
	p := a.pending[f.from]
	a.mu.Unlock()
	if p == nil {
		return
	}
	err := f.step(ctx, StepDemoteOld, f.from, "DumpMessages past the salvage checkpoint, then UpdateReplicateConfiguration naming it a target of "+f.chosen.id, func() (string, error) {
		if err := a.rejoinFormerLeader(ctx, p); err != nil {
			return "", err
		}
		return "demoted to a quarantined target", nil
	})
	a.mu.Lock()
	if err == nil {
		delete(a.pending, f.from)
		delete(a.splitBrain, f.from)
		var gaps []*gapCheck
		for _, g := range a.gaps {
			if g.source == f.from {
				gaps = append(gaps, g)
			}
		}
		a.mu.Unlock()
		// The old leader can say now what the alternatives attached
		// behind the salvage checkpoint missed.
		for _, g := range gaps {
			a.checkGap(ctx, g)
		}
		return
	}
	defer a.mu.Unlock()
	risk := fmt.Sprintf("%s was reachable but could not be demoted (%v): it may still take writes from clients connected to it directly; the proxy never writes to it and retries the demotion", f.from, err)
	a.splitBrain[f.from] = risk
	f.ch.SplitBrainRisk = risk
	a.log.Error("forced failover could not demote the reachable old leader: split-brain risk", "old_leader", f.from, "err", err)
}

// done records the failover as finished.
func (f *failoverRun) done(ctx context.Context) Change {
	a := f.a
	chosen, from := f.chosen.id, f.from
	salvTicks := ticks(f.salvage)
	f.ch.Quarantined = f.quarantine
	f.ch.Salvage = salvTicks
	var msgs []string
	if len(f.quarantine) > 0 {
		msgs = append(msgs, fmt.Sprintf("%d alternative(s) quarantined", len(f.quarantine)))
	}
	if f.ch.SplitBrainRisk != "" {
		msgs = append(msgs, "SPLIT-BRAIN RISK: "+f.ch.SplitBrainRisk)
	}
	ch := f.finish(ctx, ResultOK, strings.Join(msgs, "; "))
	a.setPhase(PhaseSteady)
	a.log.Warn("failover done", "from", from, "to", chosen, "epoch", ch.Epoch, "auto", f.auto,
		"held", ch.Held, "took", ch.Took, "quarantined", len(f.quarantine), "salvage", salvTicks)
	return ch
}

// abandon ends a failover that promoted nobody: the fence comes off and
// writes go to the old leader again.
func (f *failoverRun) abandon(ctx context.Context, err error) (Change, error) {
	m := f.a.m
	if f.oldDemoted {
		return f.stayStuck(ctx, err)
	}
	m.setFenced(f.from, false)
	if rerr := m.ReleaseWrites(); rerr != nil {
		err = errors.Join(err, rerr)
	}
	ch := f.finish(ctx, ResultFailed, err.Error()+fmt.Sprintf("; nothing changed: writes go to %s again", f.from))
	f.a.setPhase(PhaseSteady)
	return ch, fmt.Errorf("failover from %s: %w", f.from, err)
}

// promote force-promotes one candidate: a configuration holding only
// itself, no topology, force_promote set. It returns the candidate's
// configuration from before (every cluster's entry) and its salvage
// checkpoint of from's pchannels.
func (a *Arbiter) promote(ctx context.Context, cd candidate, from string, n int) (*commonpb.ReplicateConfiguration, []*commonpb.ReplicateCheckpoint, error) {
	m := a.m
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	cfg, err := m.replicateConfigOf(cctx, cd.id)
	if err != nil {
		return nil, nil, err
	}
	self := entryOf(cfg, cd.id)
	if self == nil {
		return nil, nil, fmt.Errorf("the replicate configuration of %s has no entry for itself", cd.id)
	}
	// A cluster that is a primary in its own configuration already (a
	// promotion whose answer was lost, or the old leader's configuration
	// that made it the source) needs no force.
	if sourceOf(cfg) != cd.id {
		err = a.forcePromote(cctx, cd.id, self)
		if err != nil {
			// Retrying is safe and the call may have gone through (a
			// timeout): a cluster that is now a primary is promoted.
			vctx, vcancel := a.callCtx(ctx)
			cur, verr := m.replicateConfigOf(vctx, cd.id)
			vcancel()
			if verr != nil || sourceOf(cur) != cd.id {
				return nil, nil, err
			}
		}
	}
	sctx, scancel := a.callCtx(ctx)
	defer scancel()
	var own []string
	if c := m.Snapshot().Cluster(cd.id); c != nil {
		own = c.PChannels
	}
	_, salvage, err := m.replicateInfoOf(sctx, cd.id, from, own, n)
	for i := range salvage {
		if salvage[i] == nil && i < len(cd.cps) {
			// No salvage checkpoint reported: the position read just
			// before the promotion is the best estimate.
			salvage[i] = cd.cps[i]
		}
	}
	if err != nil {
		a.log.Warn("reading the salvage checkpoint failed; using the checkpoints read before the promotion", "cluster", cd.id, "err", err)
	}
	return cfg, salvage, nil
}

// forcePromote sends force_promote in the shape the cluster accepts.
// Milvus versions differ: the 2.6 documentation (cdc_failover) sends a
// configuration holding only the cluster itself; later Milvus sources
// require it empty ("force promote requires empty cluster and topology
// fields") and build the standalone configuration from the cluster's own
// meta. The shape
// one cluster accepted is tried first next time; a refusal that names
// the other shape switches to it.
func (a *Arbiter) forcePromote(ctx context.Context, id string, self *commonpb.MilvusCluster) error {
	shapes := []*commonpb.ReplicateConfiguration{{Clusters: []*commonpb.MilvusCluster{self}}, {}}
	a.mu.Lock()
	if a.emptyShape[id] {
		shapes[0], shapes[1] = shapes[1], shapes[0]
	}
	a.mu.Unlock()
	var err error
	for _, cfg := range shapes {
		err = a.m.updateReplicateConfigOf(ctx, id, cfg, true)
		if err == nil {
			a.mu.Lock()
			a.emptyShape[id] = len(cfg.GetClusters()) == 0
			a.mu.Unlock()
			return nil
		}
		if !otherShapeWanted(err, len(cfg.GetClusters()) == 0) {
			return err
		}
		a.log.Info("force promote refused in one request shape; trying the other", "cluster", id, "err", err)
	}
	return err
}

// otherShapeWanted reports whether a force_promote refusal asks for the
// other request shape than the one sent (empty: the empty one was sent).
func otherShapeWanted(err error, empty bool) bool {
	msg := err.Error()
	if empty {
		return strings.Contains(msg, "exactly one cluster")
	}
	return strings.Contains(msg, "requires empty cluster and topology")
}

// sendInBackground sends a configuration to a cluster without waiting
// for its answer (a secondary answers only once the configuration reached
// it through CDC, which happens whether or not it was asked). The call is
// cancelled when the next leader change begins: a secondary still waiting
// for an old configuration when it is promoted could otherwise apply that
// old configuration as a primary.
func (a *Arbiter) sendInBackground(id string, cfg *commonpb.ReplicateConfiguration) {
	// Registered before the goroutine starts, so a change that begins
	// right after this returns cancels it.
	cctx, cancel := context.WithTimeout(context.Background(), 6*a.opts.CallTimeout)
	a.bgMu.Lock()
	a.bgSeq++
	seq := a.bgSeq
	a.bgCancel[seq] = cancel
	a.bgMu.Unlock()
	done := func() {
		cancel()
		a.bgMu.Lock()
		delete(a.bgCancel, seq)
		a.bgMu.Unlock()
	}
	started := a.m.spawn(func(ctx context.Context) {
		defer done()
		stop := context.AfterFunc(ctx, cancel) // the manager is closing
		defer stop()
		if err := a.m.updateReplicateConfigOf(cctx, id, cfg, false); err != nil && cctx.Err() == nil {
			a.log.Warn("a cluster did not confirm the new replicate configuration", "cluster", id, "err", err)
		}
	})
	if !started {
		done()
	}
}

// cancelBackground cancels every background configuration call still
// waiting for its answer.
func (a *Arbiter) cancelBackground() {
	a.bgMu.Lock()
	defer a.bgMu.Unlock()
	for seq, c := range a.bgCancel {
		c()
		delete(a.bgCancel, seq)
	}
}

// stayStuck ends a failover that promoted nobody after the old leader had
// demoted itself: writes stay held and the old leader fenced, and the
// change is recorded as stuck, for settle to retry after detect_after
// (rolled forward once to, or another cluster, takes over).
func (f *failoverRun) stayStuck(ctx context.Context, err error) (Change, error) {
	a, m := f.a, f.a.m
	a.mu.Lock()
	a.stuck, a.stuckSince = &stuckSwitchover{from: f.from, to: f.to}, a.mo.Now()
	a.mu.Unlock()
	_ = m.HoldWrites(fmt.Sprintf("%s demoted itself but %s did not take over (%v); settled again after detect_after", f.from, f.to, err))
	ch := f.finish(ctx, ResultFailed, fmt.Sprintf("%v; %s already demoted itself: writes stay held until %s takes over", err, f.from, f.to))
	a.setPhase(PhaseStuck)
	a.log.Error("failover stuck after the old leader demoted itself; writes stay held", "from", f.from, "to", f.to, "err", err)
	return ch, fmt.Errorf("failover from %s to %s: %w", f.from, f.to, err)
}
