package topology

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
)

// Switchover makes to the leader with no acknowledged write lost (a
// planned change), following Milvus's switchover protocol: the new
// topology goes to the old leader first (it demotes itself, refuses new
// writes and drains its CDC), then to the target (it answers once the
// remaining data reached it). Writes are held from just before the old
// leader demotes until the target leads; requests already on their way to
// the old leader finish first, so no client sees a refusal.
func (a *Arbiter) Switchover(ctx context.Context, to string) (Change, error) {
	if !a.acquire() {
		return a.refused(KindSwitchover, "", to, "another leader change is under way")
	}
	defer a.release()
	m := a.m
	s := m.Snapshot()
	a.mu.Lock()
	stuck := a.stuck
	a.mu.Unlock()

	var from string
	resume := false
	switch {
	case s.Leader != nil:
		from = s.Leader.ID
	case stuck != nil && s.FailingOver && stuck.to == to:
		from, resume = stuck.from, true
	case stuck != nil && s.FailingOver:
		return a.refused(KindSwitchover, stuck.from, to, fmt.Sprintf("the switchover from %s to %s is stuck; retry it with `switchover --to %s` or force it with `failover --to ID`", stuck.from, stuck.to, stuck.to))
	case s.FailingOver:
		return a.refused(KindSwitchover, s.LostLeader, to, "a failover is under way")
	default:
		return a.refused(KindSwitchover, "", to, "no leader is known; a switchover needs one (use `failover --to`)")
	}
	if err := a.checkTarget(s, to); err != nil {
		return a.refusedErr(KindSwitchover, from, to, err)
	}
	if from == to {
		return a.refused(KindSwitchover, from, to, to+" is already the leader")
	}
	c := s.Cluster(to)
	switch {
	case !c.Healthy:
		return a.refused(KindSwitchover, from, to, fmt.Sprintf("%s is not healthy: %s", to, c.HealthReason))
	case c.Breaker == BreakerOpen:
		return a.refused(KindSwitchover, from, to, fmt.Sprintf("the circuit breaker of %s is open", to))
	case !resume && s.Leader != nil && !s.LeaderLostAt.IsZero():
		return a.refused(KindSwitchover, from, to, fmt.Sprintf("leader %s is lost: a switchover needs it to demote itself (use `failover --to %s`)", from, to))
	}
	n := pchannelCount(s, c)
	if n == 0 {
		return a.refused(KindSwitchover, from, to, "the leader's pchannels are unknown (discovery has not read a replicate configuration)")
	}
	fromMb, toMb := m.members[from], m.members[to]
	a.cancelBackground()

	st := newStepper(m.opts.Now)
	ch := Change{Kind: KindSwitchover, From: from, To: to, At: m.opts.Now()}
	heldBefore := m.holdsStarted.Load()

	if !resume {
		// Let the target catch up while writes still flow, so the pause
		// covers only the last few milliseconds of replication.
		a.setPhase(PhaseCatchingUp)
		if err := a.waitCaughtUp(ctx, to, fromMb.ackedWrite.Load(), a.opts.CatchUpTimeout); err != nil {
			a.setPhase(PhaseSteady)
			return a.refused(KindSwitchover, from, to, err.Error())
		}
		st.done("catch-up")
	}

	cctx, cancel := a.callCtx(ctx)
	cfg, err := m.replicateConfig(cctx, fromMb)
	cancel()
	if err != nil {
		a.setPhase(PhaseSteady)
		if resume {
			return a.stuckErr(&ch, st, s.HoldSince, err)
		}
		return a.failed(&ch, st, err)
	}
	if entryOf(cfg, to) == nil {
		a.setPhase(PhaseSteady)
		return a.refused(KindSwitchover, from, to, fmt.Sprintf("%s is not in the replicate configuration of %s", to, from))
	}
	// After a demotion the old leader already holds the new configuration;
	// rebuilding it from there yields the same one (clusters in the same
	// order), so a retried switchover sends identical requests.
	newCfg := reverseConfig(cfg, to)

	a.setPhase(PhaseHolding)
	if err := m.HoldWrites(fmt.Sprintf("switchover from %s to %s", from, to)); err != nil {
		return a.failed(&ch, st, err)
	}
	holdStart := m.opts.Now()
	if resume && !s.HoldSince.IsZero() {
		holdStart = s.HoldSince
	}
	m.setFenced(from, true)
	if left := m.drain(ctx, from, a.opts.DrainTimeout); left > 0 {
		a.log.Warn("requests still in flight to the old leader after the drain timeout", "leader", from, "in_flight", left)
	}
	st.done("hold")

	// The old leader first: it demotes itself and refuses new writes.
	a.setPhase(PhaseDemoting)
	if err := a.sendConfig(ctx, fromMb, newCfg); err != nil {
		if !resume {
			m.setFenced(from, false)
			if rerr := m.ReleaseWrites(); rerr != nil {
				err = errors.Join(err, rerr)
			}
			a.setPhase(PhaseSteady)
			return a.failed(&ch, st, fmt.Errorf("%w; nothing changed: writes go to %s again", err, from))
		}
		return a.stuckErr(&ch, st, holdStart, err)
	}
	st.done("demote")

	// Every write the old leader acknowledged precedes its configuration
	// message in its WAL; CDC delivers both. Confirm, while the target is
	// still the old leader's secondary, that its checkpoints cover the
	// last acknowledged write on every pchannel.
	deadline := holdStart.Add(m.opts.WriteHold)
	dctx, dcancel := context.WithDeadline(ctx, deadline)
	defer dcancel()
	a.setPhase(PhaseConfirming)
	bar := fromMb.ackedWrite.Load()
	if err := a.confirmCovered(dctx, toMb, from, c.PChannels, n, bar); err != nil {
		return a.stuckErr(&ch, st, holdStart, err)
	}
	st.done("confirm")

	// Then the target: it answers once the configuration message reached
	// it, and takes writes from then on. Retrying is safe.
	a.setPhase(PhasePromoting)
	for {
		cctx, cancel := a.callCtx(dctx)
		err = m.updateReplicateConfig(cctx, toMb, newCfg, false)
		cancel()
		if err == nil || dctx.Err() != nil {
			break
		}
		a.log.Warn("the switchover target did not confirm the new configuration; retrying", "target", to, "err", err)
		select {
		case <-dctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err != nil {
		return a.stuckErr(&ch, st, holdStart, err)
	}
	st.done("promote")
	for _, e := range newCfg.GetClusters() {
		if id := e.GetClusterId(); id != from && id != to {
			a.sendInBackground(id, newCfg)
		}
	}

	a.setPhase(PhaseInstalling)
	if err := m.InstallLeader(Promotion{Leader: to, Demoted: true}); err != nil {
		return a.stuckErr(&ch, st, holdStart, err)
	}
	now := m.opts.Now()
	m.setFenced(from, false)
	st.done("install")
	ch.Held = now.Sub(holdStart)
	ch.Epoch = m.Snapshot().Epoch
	ch.Result = ResultOK
	ch.Took, ch.Steps = now.Sub(ch.At), st.steps
	ch.WritesHeld = m.holdsStarted.Load() - heldBefore
	a.mu.Lock()
	a.stuck = nil
	a.mu.Unlock()
	a.record(ch)
	a.setPhase(PhaseSteady)
	a.log.Info("switchover done", "from", from, "to", to, "epoch", ch.Epoch, "held", ch.Held, "took", ch.Took, "acked_bar", bar)
	return ch, nil
}

// failed records a switchover that failed before anything changed.
func (a *Arbiter) failed(ch *Change, st *stepper, err error) (Change, error) {
	ch.Result, ch.Message = ResultFailed, err.Error()
	ch.Took, ch.Steps = a.m.opts.Now().Sub(ch.At), st.steps
	a.record(*ch)
	return *ch, fmt.Errorf("switchover from %s to %s: %w", ch.From, ch.To, err)
}

// stuckErr records a switchover whose old leader demoted itself but whose
// target has not taken over: writes stay held (there is no leader to send
// them to) until the operator retries or forces it.
func (a *Arbiter) stuckErr(ch *Change, st *stepper, holdStart time.Time, err error) (Change, error) {
	m := a.m
	a.mu.Lock()
	a.stuck = &stuckSwitchover{from: ch.From, to: ch.To}
	a.mu.Unlock()
	_ = m.HoldWrites(fmt.Sprintf("switchover from %s to %s stuck: %v; retry `milvus-ha-proxy switchover --to %s` or force `milvus-ha-proxy failover --to %s`",
		ch.From, ch.To, err, ch.To, ch.To))
	ch.Result, ch.Message = ResultFailed, "stuck after the old leader demoted itself: "+err.Error()
	ch.Took, ch.Steps, ch.Held = m.opts.Now().Sub(ch.At), st.steps, m.opts.Now().Sub(holdStart)
	a.record(*ch)
	a.setPhase(PhaseStuck)
	a.log.Error("switchover stuck; writes stay held", "from", ch.From, "to", ch.To, "err", err)
	return *ch, fmt.Errorf("switchover from %s to %s: %w", ch.From, ch.To, err)
}

// sendConfig sends cfg and, when the call fails, checks whether the
// cluster took it anyway (the answer was lost): retrying is safe, and a
// cluster already holding cfg needs nothing more.
func (a *Arbiter) sendConfig(ctx context.Context, mb *member, cfg *commonpb.ReplicateConfiguration) error {
	cctx, cancel := a.callCtx(ctx)
	err := a.m.updateReplicateConfig(cctx, mb, cfg, false)
	cancel()
	if err == nil {
		return nil
	}
	vctx, vcancel := a.callCtx(ctx)
	cur, verr := a.m.replicateConfig(vctx, mb)
	vcancel()
	if verr == nil && sameConfig(cur, cfg) {
		return nil
	}
	return err
}

// waitCaughtUp waits until the target's polled checkpoints cover bar on
// every pchannel.
func (a *Arbiter) waitCaughtUp(ctx context.Context, to string, bar uint64, timeout time.Duration) error {
	if bar == 0 {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		ch := a.m.Changed()
		c := a.m.Snapshot().Cluster(to)
		if ts, ok := c.ReplicatedFor(nil); ok && ts >= bar {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			lag := "unknown"
			if ts, ok := c.ReplicatedFor(nil); ok {
				lag = (time.Duration(hybridts.Physical(bar)-hybridts.Physical(ts)) * time.Millisecond).String()
			} else if c.LagReason != "" {
				lag += " (" + c.LagReason + ")"
			}
			return fmt.Errorf("%s has not replicated the leader's last acknowledged write within %s (behind by %s): a switchover now would hold writes that long", to, timeout, lag)
		}
	}
}

// confirmCovered polls the target's checkpoints of from's pchannels until
// each covers bar.
func (a *Arbiter) confirmCovered(ctx context.Context, mb *member, from string, own []string, n int, bar uint64) error {
	var last []uint64
	for {
		cctx, cancel := a.callCtx(ctx)
		cps, _, err := a.m.replicateInfo(cctx, mb, from, own, n)
		cancel()
		if err == nil {
			last = ticks(cps)
			if minTick(last) >= bar {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("confirming that %s covers %s's last acknowledged write: %w", mb.id, from, err)
			}
			return fmt.Errorf("%s's checkpoints %v of %s's pchannels do not cover its last acknowledged write %d", mb.id, last, from, bar)
		case <-time.After(2 * time.Millisecond):
		}
	}
}
