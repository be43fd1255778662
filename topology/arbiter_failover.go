package topology

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
			cctx, cancel := context.WithTimeout(ctx, a.m.opts.PollTimeout)
			defer cancel()
			p.cps, _, p.err = a.m.replicateInfo(cctx, a.m.members[p.c.ID], from, p.c.PChannels, n)
		})
	}
	wg.Wait()
	return out
}

// failover force-promotes an alternative after the leader from was lost
// (to == "": the one that replicated furthest) or at an operator's
// request. The caller holds the change token.
func (a *Arbiter) failover(ctx context.Context, s *Snapshot, from, to string, auto bool) (Change, error) {
	m := a.m
	st := newStepper(m.opts.Now)
	ch := Change{Kind: KindFailover, Auto: auto, From: from, To: to, At: m.opts.Now()}
	heldBefore := m.holdsStarted.Load()
	fail := func(err error) (Change, error) {
		m.setFenced(from, false)
		if rerr := m.ReleaseWrites(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		ch.Result, ch.Message = ResultFailed, err.Error()+fmt.Sprintf("; nothing changed: writes go to %s again", from)
		ch.Took, ch.Steps = m.opts.Now().Sub(ch.At), st.steps
		a.record(ch)
		a.setPhase(PhaseSteady)
		return ch, fmt.Errorf("failover from %s: %w", from, err)
	}

	a.setPhase(PhaseHolding)
	reason := fmt.Sprintf("leader %s lost; promoting the alternative that replicated furthest", from)
	if !auto {
		reason = fmt.Sprintf("forced failover from %s to %s", from, to)
	}
	if err := m.HoldWrites(reason); err != nil {
		return fail(err)
	}
	holdStart := m.opts.Now()
	if s.FailingOver && !s.HoldSince.IsZero() {
		holdStart = s.HoldSince // a stuck switchover held them already
	}
	// Nothing may reach the old leader from now on: an acknowledged
	// write there after the promotion would be lost.
	m.setFenced(from, true)
	if old := s.Cluster(from); old != nil && old.Healthy {
		if left := m.drain(ctx, from, a.opts.DrainTimeout); left > 0 {
			a.log.Warn("requests still in flight to the old leader after the drain timeout", "leader", from, "in_flight", left)
		}
	}
	st.done("hold")

	a.setPhase(PhaseChoosing)
	pos := a.positions(ctx, s, from)
	var cands []candidate
	var why []error
	for _, p := range pos {
		c := p.c
		switch {
		case !auto && c.ID != to:
			continue
		case p.err != nil:
			why = append(why, p.err)
			continue
		case auto && (c.Quarantined || c.Breaker == BreakerOpen):
			continue
		}
		cands = append(cands, candidate{id: c.ID, order: c.Order, cps: p.cps, ticks: ticks(p.cps)})
	}
	st.done("checkpoints")
	if len(cands) == 0 {
		if !auto && len(why) == 0 {
			why = append(why, fmt.Errorf("%s is not a replication target of %s", to, from))
		}
		return fail(fmt.Errorf("no alternative can be promoted: %w", errors.Join(why...)))
	}

	var (
		chosen  *candidate
		cfg     *commonpb.ReplicateConfiguration
		salvage []*commonpb.ReplicateCheckpoint
	)
	a.setPhase(PhasePromoting)
	for _, cd := range preference(cands) {
		var err error
		cfg, salvage, err = a.promote(ctx, cd, from, pchannelCount(s, s.Cluster(cd.id)))
		if err == nil {
			chosen = &cd
			break
		}
		a.log.Warn("force promotion failed", "cluster", cd.id, "err", err)
		why = append(why, err)
	}
	if chosen == nil {
		return fail(errors.Join(why...))
	}
	ch.To = chosen.id
	st.done("promote")

	// From here on the new leader exists in Milvus; the proxy follows it
	// whatever happens to the other clusters.
	a.setPhase(PhaseAttaching)
	salvTicks := ticks(salvage)
	quarantine := map[string]string{}
	var attach []*commonpb.MilvusCluster
	var unevaluated []string
	var gaps []*gapCheck
	for _, p := range pos {
		c := p.c
		if c.ID == chosen.id {
			continue
		}
		if p.err != nil {
			quarantine[c.ID] = fmt.Sprintf("its position was unknown when %s was promoted (%v): compared with the salvage checkpoint once it is healthy", chosen.id, p.err)
			unevaluated = append(unevaluated, c.ID)
			continue
		}
		t := ticks(p.cps)
		aheadOn, behindOn := compareSalvage(t, salvTicks)
		if aheadOn >= 0 {
			quarantine[c.ID] = fmt.Sprintf("ran ahead of %s's salvage checkpoint on pchannel %d (%d > %d): it holds writes of %s that %s lacks; rebuild it before it serves reads",
				chosen.id, aheadOn, t[aheadOn], salvTicks[aheadOn], from, chosen.id)
			continue
		}
		e := entryOf(cfg, c.ID)
		if e == nil {
			quarantine[c.ID] = fmt.Sprintf("not in %s's replicate configuration: cannot be attached", chosen.id)
			continue
		}
		attach = append(attach, e)
		if behindOn >= 0 && !c.Quarantined {
			quarantine[c.ID] = fmt.Sprintf("attached to %s while behind its salvage checkpoint on pchannel %d (%d < %d): replication from %s starts at the reconfiguration, so what lies between never reaches it; no reads until %s returns and shows that gap held no data",
				chosen.id, behindOn, t[behindOn], salvTicks[behindOn], chosen.id, from)
			gaps = append(gaps, &gapCheck{id: c.ID, source: from, from: cloneCheckpoints(p.cps), salvage: salvTicks})
		}
	}
	if len(attach) > 0 {
		attachCfg := star(entryOf(cfg, chosen.id), attach...)
		cctx, cancel := a.callCtx(ctx)
		err := m.updateReplicateConfig(cctx, m.members[chosen.id], attachCfg, false)
		cancel()
		if err != nil {
			a.log.Warn("attaching the remaining alternatives failed", "leader", chosen.id, "err", err)
			for _, e := range attach {
				quarantine[e.GetClusterId()] = fmt.Sprintf("could not be attached to %s (%v): retried once it is healthy", chosen.id, err)
				unevaluated = append(unevaluated, e.GetClusterId())
			}
			gaps = nil
		} else {
			// Every cluster gets the same configuration. The targets answer
			// once it reaches them through CDC; writes need not wait: the
			// configuration precedes every new write in the new leader's
			// WAL, so they all reach the targets.
			for _, e := range attach {
				a.sendInBackground(e.GetClusterId(), attachCfg)
			}
		}
	}
	st.done("attach")

	a.setPhase(PhaseInstalling)
	if err := m.InstallLeader(Promotion{Leader: chosen.id, Salvage: salvTicks, Quarantine: quarantine}); err != nil {
		// Cannot happen for configured clusters; say so loudly.
		a.log.Error("installing the promoted leader failed", "leader", chosen.id, "err", err)
		return fail(err)
	}
	now := m.opts.Now()
	ch.Held = now.Sub(holdStart)
	st.done("install")
	ns := m.Snapshot()
	ch.Epoch = ns.Epoch
	ch.Result = ResultOK
	ch.Took, ch.Steps = now.Sub(ch.At), st.steps
	ch.WritesHeld = m.holdsStarted.Load() - heldBefore
	ch.Quarantined = quarantine
	ch.Salvage = salvTicks
	if len(quarantine) > 0 {
		ch.Message = fmt.Sprintf("%d alternative(s) quarantined", len(quarantine))
	}

	a.mu.Lock()
	a.stuck = nil
	delete(a.pending, chosen.id)
	a.reports = append(a.reports, SalvageReport{
		Epoch: ch.Epoch, OldLeader: from, NewLeader: chosen.id, At: now, Checkpoints: salvTicks,
	})
	keep := cloneCheckpoints(salvage)
	a.pending[from] = &pendingCluster{id: from, kind: pendingFormerLeader, source: from, salvage: keep,
		entry: entryOf(cfg, from), report: len(a.reports) - 1}
	for _, id := range unevaluated {
		a.pending[id] = &pendingCluster{id: id, kind: pendingUnevaluated, source: from, salvage: keep, entry: entryOf(cfg, id)}
	}
	for _, g := range gaps {
		a.gaps[g.id] = g
	}
	a.mu.Unlock()
	a.record(ch)
	a.setPhase(PhaseSteady)
	a.log.Warn("failover done", "from", from, "to", chosen.id, "epoch", ch.Epoch, "auto", auto,
		"held", ch.Held, "took", ch.Took, "quarantined", len(quarantine), "salvage", salvTicks)
	return ch, nil
}

// promote force-promotes one candidate: a configuration holding only
// itself, no topology, force_promote set. It returns the candidate's
// configuration from before (every cluster's entry) and its salvage
// checkpoint of from's pchannels.
func (a *Arbiter) promote(ctx context.Context, cd candidate, from string, n int) (*commonpb.ReplicateConfiguration, []*commonpb.ReplicateCheckpoint, error) {
	m := a.m
	mb := m.members[cd.id]
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	cfg, err := m.replicateConfig(cctx, mb)
	if err != nil {
		return nil, nil, err
	}
	self := entryOf(cfg, cd.id)
	if self == nil {
		return nil, nil, fmt.Errorf("the replicate configuration of %s has no entry for itself", cd.id)
	}
	if !standaloneOf(cfg, cd.id) {
		err = m.updateReplicateConfig(cctx, mb, &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{self}}, true)
		if err != nil {
			// Retrying is safe and the call may have gone through (a
			// timeout): a cluster that now stands alone is promoted.
			vctx, vcancel := a.callCtx(ctx)
			cur, verr := m.replicateConfig(vctx, mb)
			vcancel()
			if verr != nil || !standaloneOf(cur, cd.id) {
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
	_, salvage, err := m.replicateInfo(sctx, mb, from, own, n)
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

// sendInBackground sends a configuration to a cluster without waiting
// for its answer (a secondary answers only once the configuration reached
// it through CDC, which happens whether or not it was asked). The call is
// cancelled when the next leader change begins: a secondary still waiting
// for an old configuration when it is promoted could otherwise apply that
// old configuration as a primary.
func (a *Arbiter) sendInBackground(id string, cfg *commonpb.ReplicateConfiguration) {
	mb := a.m.members[id]
	if mb == nil {
		return
	}
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
		if err := a.m.updateReplicateConfig(cctx, mb, cfg, false); err != nil && cctx.Err() == nil {
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
