package topology

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	if err := a.errNotDeciding(); err != nil {
		return a.refusedErr(KindSwitchover, "", to, err)
	}
	a.awaitDiscovery(ctx)
	if err := a.acquireWait(ctx, "a switchover to "+to); err != nil {
		return a.refusedErr(KindSwitchover, "", to, err)
	}
	defer a.release()
	s := a.m.Snapshot()
	from, resume, err := a.switchoverSource(s, to)
	if err != nil {
		return a.refusedErr(KindSwitchover, from, to, err)
	}
	a.cancelBackground()
	w := &switchoverRun{changeRun: a.beginChange(ctx, KindSwitchover, from, to, false), s: s, from: from, to: to, resume: resume,
		c: s.Cluster(to), n: pchannelCount(s, s.Cluster(to))}
	if !resume {
		if err := w.catchUp(ctx); err != nil {
			a.setPhase(PhaseSteady)
			return w.refuse(ctx, err)
		}
	}
	if err := w.readConfig(ctx); err != nil {
		a.setPhase(PhaseSteady)
		if resume {
			return w.stuck(ctx, err)
		}
		if errors.Is(err, ErrRefused) {
			return w.refuse(ctx, err)
		}
		return w.failed(ctx, err)
	}
	if err := w.hold(ctx); err != nil {
		return w.failed(ctx, err)
	}
	if !resume {
		// The target must hold every write the leader acknowledged before
		// the leader demotes itself: after that there is no going back
		// without a force promotion, and a target that stalled since the
		// catch-up would be promoted without them. Not covered in time:
		// the switchover is rolled back, nothing changed.
		if err := w.confirmBeforeDemote(ctx); err != nil {
			return w.release(ctx, err)
		}
	}
	if err := w.demote(ctx); err != nil {
		if !resume {
			return w.release(ctx, err)
		}
		return w.stuck(ctx, err)
	}
	// Past the demotion the old leader refuses writes: the switchover
	// finishes, or stays stuck with writes held until it is retried or
	// forced.
	dctx, dcancel := context.WithDeadline(ctx, w.holdStart.Add(a.mo.WriteHold))
	defer dcancel()
	if err := w.confirm(dctx); err != nil {
		return w.stuck(ctx, err)
	}
	if err := w.promoteTarget(dctx); err != nil {
		return w.stuck(ctx, err)
	}
	if err := w.install(ctx); err != nil {
		return w.stuck(ctx, err)
	}
	return w.done(ctx), nil
}

// failoverReachable is `failover --to` while the old leader answers: it
// is sent the new configuration first (it demotes itself, refuses writes,
// and its CDC carries the configuration to every target, to included),
// then to takes over as in a switchover, without waiting for to to catch
// up first. Nothing the old leader acknowledged is lost when its CDC to
// to is alive. Only when the old leader refuses the configuration, or to
// does not take over within 2 drain timeouts (at least 2s), is to promoted by force
// (and the old leader demoted afterwards, or reported as a split-brain
// risk). Re-pointing the other targets through the old leader's own
// configuration message keeps them on the stream the new leader continues.
func (a *Arbiter) failoverReachable(ctx context.Context, s *Snapshot, from, to string) (Change, error) {
	w := &switchoverRun{changeRun: a.beginChange(ctx, KindFailover, from, to, false), s: s, from: from, to: to,
		c: s.Cluster(to), n: pchannelCount(s, s.Cluster(to))}
	force := func(why error) (Change, error) {
		w.finish(ctx, ResultFailed, fmt.Sprintf("%v; promoting %s by force", why, to))
		return a.failover(ctx, a.m.Snapshot(), from, to, false)
	}
	// After the old leader demoted itself there is no primary to fall
	// back to: a promotion by force that fails leaves the change stuck.
	forceDemoted := func(why error) (Change, error) {
		w.finish(ctx, ResultFailed, fmt.Sprintf("%v; promoting %s by force", why, to))
		return a.failoverDemoted(ctx, from, to, false)
	}
	if err := w.readConfig(ctx); err != nil {
		a.setPhase(PhaseSteady)
		return force(err)
	}
	if err := w.hold(ctx); err != nil {
		return w.failed(ctx, err)
	}
	if err := w.demote(ctx); err != nil {
		return force(fmt.Errorf("the old leader %s did not take the new configuration: %w", from, err))
	}
	// Writes are held: a target that does not take over soon (its
	// replication stalled) is promoted by force rather than holding them
	// toward write_hold.
	pctx, cancel := context.WithTimeout(ctx, 2*max(a.opts.DrainTimeout, time.Second))
	defer cancel()
	if err := w.promoteTarget(pctx); err != nil {
		return forceDemoted(fmt.Errorf("%s did not take over after %s demoted itself: %w", to, from, err))
	}
	if err := w.install(ctx); err != nil {
		return forceDemoted(err)
	}
	a.mu.Lock()
	a.stuck = nil
	a.mu.Unlock()
	ch := w.finish(ctx, ResultOK, fmt.Sprintf("the old leader %s answered: it was demoted first and %s took over from its stream (no acknowledged write lost)", from, to))
	a.setPhase(PhaseSteady)
	a.log.Warn("failover done (old leader reachable: demoted first)", "from", from, "to", to, "epoch", ch.Epoch, "held", ch.Held, "took", ch.Took)
	return ch, nil
}

// switchoverSource checks a switchover to to and returns the leader it
// starts from; resume is set when it retries a stuck one.
func (a *Arbiter) switchoverSource(s *Snapshot, to string) (from string, resume bool, err error) {
	a.mu.Lock()
	stuck := a.stuck
	a.mu.Unlock()
	switch {
	case s.Leader != nil:
		from = s.Leader.ID
	case stuck != nil && s.FailingOver && stuck.to == to:
		from, resume = stuck.from, true
	case stuck != nil && s.FailingOver:
		return stuck.from, false, fmt.Errorf("%w: the switchover from %s to %s is stuck; retry it with `switchover --to %s` or force it with `failover --to ID`", ErrRefused, stuck.from, stuck.to, stuck.to)
	case s.FailingOver:
		return s.LostLeader, false, fmt.Errorf("%w: a failover is under way", ErrRefused)
	default:
		why := "discovery found none"
		if s.DiscoveryError != "" {
			why = s.DiscoveryError
		}
		return "", false, fmt.Errorf("%w: no leader is known (%s); a switchover needs one (use `failover --to`)", ErrRefused, why)
	}
	if err := a.checkTarget(s, to); err != nil {
		return from, false, err
	}
	if from == to {
		return from, false, fmt.Errorf("%w: %s is already the leader", ErrRefused, to)
	}
	c := s.Cluster(to)
	switch {
	case !c.Healthy:
		return from, false, fmt.Errorf("%w: %s is not healthy: %s", ErrRefused, to, c.HealthReason)
	case c.Breaker == BreakerOpen:
		return from, false, fmt.Errorf("%w: the circuit breaker of %s is open", ErrRefused, to)
	case !resume && s.Leader != nil && !s.LeaderLostAt.IsZero():
		return from, false, fmt.Errorf("%w: leader %s is lost: a switchover needs it to demote itself (use `failover --to %s`)", ErrRefused, from, to)
	case pchannelCount(s, c) == 0:
		return from, false, fmt.Errorf("%w: the leader's pchannels are unknown (discovery has not read a replicate configuration)", ErrRefused)
	}
	return from, resume, nil
}

// switchoverRun carries one switchover across its steps.
type switchoverRun struct {
	*changeRun
	s         *Snapshot
	from, to  string
	resume    bool
	c         *Cluster // the target
	n         int      // the leader's pchannel count
	newCfg    *commonpb.ReplicateConfiguration
	holdStart time.Time
	bar       uint64 // the old leader's last acknowledged write
}

// catchUp lets the target catch up while writes still flow, so the pause
// covers only the last few milliseconds of replication.
func (w *switchoverRun) catchUp(ctx context.Context) error {
	return w.step(ctx, StepCatchUp, w.to, "wait for checkpoints to cover the leader's last acknowledged write", func() (string, error) {
		bar, how, err := w.a.switchoverBar(ctx, w.from)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrRefused, err)
		}
		if err := w.a.waitCaughtUp(ctx, w.to, bar, w.a.opts.CatchUpTimeout); err != nil {
			return "", fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return fmt.Sprintf("caught up with %d (%s)", bar, how), nil
	})
}

// switchoverBar is the timestamp a switchover's target must have
// replicated before it may take over: the highest write timestamp the
// leader acknowledged through this proxy, or, when the proxy has seen
// none (it started since, and writes acknowledged before are as real), a
// fresh timestamp of the leader, which every write it acknowledged so far
// precedes.
func (a *Arbiter) switchoverBar(ctx context.Context, from string) (uint64, string, error) {
	if bar := a.m.ackedWrite(from); bar > 0 {
		return bar, "its last acknowledged write through the proxy", nil
	}
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	ts, err := a.m.allocTimestampOf(cctx, from)
	if err != nil {
		return 0, "", fmt.Errorf("no write acknowledged by %s is known to this proxy and a fresh timestamp to wait for could not be had: %w", from, err)
	}
	return ts, "a fresh timestamp of the leader: no write acknowledged through this proxy yet", nil
}

// readConfig reads the old leader's configuration and builds the new one
// from it. After a demotion the old leader already holds the new
// configuration; rebuilding it from there yields the same one (clusters in
// the same order), so a retried switchover sends identical requests.
func (w *switchoverRun) readConfig(ctx context.Context) error {
	m := w.a.m
	return w.step(ctx, StepReadConfigs, "", "GetReplicateConfiguration on every cluster", func() (string, error) {
		// The clusters' own configurations are the truth, not the
		// proxy's last discovery round.
		ids := m.clusterIDs()
		answers := m.configsOf(ctx, ids)
		var summary []string
		for _, id := range ids {
			if ans := answers[id]; ans.err == nil {
				summary = append(summary, fmt.Sprintf("%s: source %s", id, orNone(sourceOf(ans.cfg))))
			} else {
				summary = append(summary, fmt.Sprintf("%s: %s", id, grpcMessage(ans.err)))
			}
		}
		seen := strings.Join(summary, "; ")
		own := answers[w.from]
		if own.err != nil {
			return seen, own.err
		}
		cfg := own.cfg
		if entryOf(cfg, w.to) == nil {
			return seen, fmt.Errorf("%w: %s is not in the replicate configuration of %s", ErrRefused, w.to, w.from)
		}
		if !w.resume {
			if src := sourceOf(cfg); src != w.from {
				m.Rediscover()
				return seen, fmt.Errorf("%w: %s is not a primary in its own replicate configuration (its source is %s): the proxy's view is stale and follows the next discovery round", ErrRefused, w.from, orNone(src))
			}
			if t := answers[w.to]; t.err == nil && sourceOf(t.cfg) != w.from {
				// A configuration the previous change sent the target
				// (attaching it to the new leader) reaches it through CDC,
				// possibly after that change answered: give it one call
				// timeout to arrive before refusing.
				if t = w.awaitSource(ctx, w.to, w.from); t.err == nil && sourceOf(t.cfg) == w.from {
					answers[w.to] = t
					seen += fmt.Sprintf("; %s: source %s after waiting for it", w.to, w.from)
				}
			}
			if t := answers[w.to]; t.err == nil && sourceOf(t.cfg) != w.from {
				return seen, fmt.Errorf("%w: %s replicates from %s, not from %s: it would never receive the new configuration (use `failover --to %s`)", ErrRefused, w.to, orNone(sourceOf(t.cfg)), w.from, w.to)
			}
			for _, id := range ids {
				if ans := answers[id]; id != w.from && ans.err == nil && primaryInOwnEyes(ans.cfg, id) {
					return seen, fmt.Errorf("%w: %s is also a primary in its own replicate configuration: two clusters take writes; the arbiter demotes %s first (see `milvus-ha-proxy status`)", ErrRefused, id, id)
				}
			}
		}
		w.newCfg = reverseConfig(cfg, w.to)
		return seen, nil
	})
}

// awaitSource re-reads cluster id's replicate configuration until its
// source is want, ctx ends or one call timeout has passed, and returns the
// last answer.
func (w *switchoverRun) awaitSource(ctx context.Context, id, want string) configAnswer {
	cctx, cancel := w.a.callCtx(ctx)
	defer cancel()
	for {
		ans := w.a.m.configsOf(cctx, []string{id})[id]
		if ans.err == nil && sourceOf(ans.cfg) == want {
			return ans
		}
		select {
		case <-cctx.Done():
			return ans
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// hold holds writes, fences the old leader and lets the requests in
// flight to it finish.
func (w *switchoverRun) hold(ctx context.Context) error {
	a, m := w.a, w.a.m
	return w.step(ctx, StepHold, w.from, "fence and drain", func() (string, error) {
		if err := m.HoldWrites(fmt.Sprintf("switchover from %s to %s", w.from, w.to)); err != nil {
			return "", err
		}
		w.holdStart = a.mo.Now()
		if w.resume && !w.s.HoldSince.IsZero() {
			w.holdStart = w.s.HoldSince
		}
		m.setFenced(w.from, true)
		if left := m.drain(ctx, w.from, a.opts.DrainTimeout); left > 0 {
			a.log.Warn("requests still in flight to the old leader after the drain timeout", "leader", w.from, "in_flight", left)
			return fmt.Sprintf("%d requests still in flight after %s", left, a.opts.DrainTimeout), nil
		}
		return "writes held", nil
	})
}

// demote sends the new configuration to the old leader first: it demotes
// itself and refuses new writes.
func (w *switchoverRun) demote(ctx context.Context) error {
	return w.step(ctx, StepDemote, w.from, describeConfig(w.newCfg, false), func() (string, error) {
		return "ok", w.a.sendConfig(ctx, w.from, w.newCfg)
	})
}

// confirmBeforeDemote waits, writes held and the old leader drained,
// until the target's checkpoints cover the old leader's last acknowledged
// write (switchoverBar), up to the catch-up timeout.
func (w *switchoverRun) confirmBeforeDemote(ctx context.Context) error {
	a := w.a
	return w.step(ctx, StepCover, w.to, "GetReplicateInfo until checkpoints cover the leader's last acknowledged write, before the demotion", func() (string, error) {
		bar, how, err := a.switchoverBar(ctx, w.from)
		if err != nil {
			return "", err
		}
		cctx, cancel := context.WithTimeout(ctx, a.opts.CatchUpTimeout)
		defer cancel()
		if err := a.confirmCovered(cctx, w.to, w.from, w.c.PChannels, w.n, bar); err != nil {
			return "", fmt.Errorf("%s did not replicate %s's last acknowledged write (%d, %s) within %s with writes held; rolled back: %w",
				w.to, w.from, bar, how, a.opts.CatchUpTimeout, err)
		}
		w.bar, w.ch.Bar = bar, bar
		return fmt.Sprintf("covered %d", bar), nil
	})
}

// confirm checks, while the target is still the old leader's secondary,
// that its checkpoints cover the last acknowledged write on every
// pchannel: every write the old leader acknowledged precedes its
// configuration message in its WAL, and CDC delivers both.
func (w *switchoverRun) confirm(ctx context.Context) error {
	w.bar = max(w.bar, w.a.m.ackedWrite(w.from))
	return w.step(ctx, StepConfirm, w.to, fmt.Sprintf("GetReplicateInfo until checkpoints cover %d", w.bar), func() (string, error) {
		return "covered", w.a.confirmCovered(ctx, w.to, w.from, w.c.PChannels, w.n, w.bar)
	})
}

// promoteTarget sends the new configuration to the target: it answers
// once the configuration message reached it, and takes writes from then
// on. Retrying is safe.
func (w *switchoverRun) promoteTarget(ctx context.Context) error {
	a, m := w.a, w.a.m
	err := w.step(ctx, StepPromote, w.to, describeConfig(w.newCfg, false), func() (string, error) {
		for {
			cctx, cancel := a.callCtx(ctx)
			err := m.updateReplicateConfigOf(cctx, w.to, w.newCfg, false)
			cancel()
			if err == nil || ctx.Err() != nil {
				return "ok", err
			}
			a.log.Warn("the switchover target did not confirm the new configuration; retrying", "target", w.to, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	if err != nil {
		return err
	}
	for _, e := range w.newCfg.GetClusters() {
		if id := e.GetClusterId(); id != w.from && id != w.to {
			a.sendInBackground(id, w.newCfg)
		}
	}
	return nil
}

// install makes the proxy route writes to the new leader and lifts the
// old leader's fence (it refuses writes itself now).
func (w *switchoverRun) install(ctx context.Context) error {
	m := w.a.m
	return w.step(ctx, StepInstall, "", "route writes to "+w.to, func() (string, error) {
		if err := m.InstallLeader(Promotion{Leader: w.to, Demoted: true}); err != nil {
			return "", err
		}
		w.ch.Held = w.a.mo.Now().Sub(w.holdStart)
		m.setFenced(w.from, false)
		return fmt.Sprintf("epoch %d", m.Snapshot().Epoch), nil
	})
}

func (w *switchoverRun) done(ctx context.Context) Change {
	a := w.a
	a.mu.Lock()
	a.stuck = nil
	a.mu.Unlock()
	ch := w.finish(ctx, ResultOK, "")
	a.setPhase(PhaseSteady)
	a.log.Info("switchover done", "from", w.from, "to", w.to, "epoch", ch.Epoch, "held", ch.Held, "took", ch.Took, "acked_bar", w.bar)
	return ch
}

// refuse records a switchover refused before anything changed (the
// target did not catch up, or is not in the configuration).
func (w *switchoverRun) refuse(ctx context.Context, err error) (Change, error) {
	ch := w.finish(ctx, ResultRefused, err.Error())
	return ch, err
}

// failed records a switchover that failed before anything changed.
func (w *switchoverRun) failed(ctx context.Context, err error) (Change, error) {
	ch := w.finish(ctx, ResultFailed, err.Error())
	return ch, fmt.Errorf("switchover from %s to %s: %w", w.from, w.to, err)
}

// release abandons a switchover whose old leader did not take the new
// configuration: the fence comes off and writes go to it again.
func (w *switchoverRun) release(ctx context.Context, err error) (Change, error) {
	m := w.a.m
	m.setFenced(w.from, false)
	if rerr := m.ReleaseWrites(); rerr != nil {
		err = errors.Join(err, rerr)
	}
	w.a.setPhase(PhaseSteady)
	return w.failed(ctx, fmt.Errorf("%w; nothing changed: writes go to %s again", err, w.from))
}

// stuck records a switchover whose old leader demoted itself but whose
// target has not taken over: writes stay held (there is no leader to send
// them to) until the operator retries or forces it.
func (w *switchoverRun) stuck(ctx context.Context, err error) (Change, error) {
	a, m := w.a, w.a.m
	a.mu.Lock()
	a.stuck, a.stuckSince = &stuckSwitchover{from: w.from, to: w.to, bar: w.bar}, a.mo.Now()
	a.mu.Unlock()
	_ = m.HoldWrites(fmt.Sprintf("switchover from %s to %s stuck: %v; retry `milvus-ha-proxy switchover --to %s` or force `milvus-ha-proxy failover --to %s`",
		w.from, w.to, err, w.to, w.to))
	if !w.holdStart.IsZero() {
		w.ch.Held = a.mo.Now().Sub(w.holdStart)
	}
	ch := w.finish(ctx, ResultFailed, "stuck after the old leader demoted itself: "+err.Error())
	a.setPhase(PhaseStuck)
	a.log.Error("switchover stuck; writes stay held", "from", w.from, "to", w.to, "err", err)
	return ch, fmt.Errorf("switchover from %s to %s: %w", w.from, w.to, err)
}

// sendConfig sends cfg and, when the call fails, checks whether the
// cluster took it anyway (the answer was lost): retrying is safe, and a
// cluster already holding cfg needs nothing more.
func (a *Arbiter) sendConfig(ctx context.Context, id string, cfg *commonpb.ReplicateConfiguration) error {
	cctx, cancel := a.callCtx(ctx)
	err := a.m.updateReplicateConfigOf(cctx, id, cfg, false)
	cancel()
	if err == nil {
		return nil
	}
	vctx, vcancel := a.callCtx(ctx)
	cur, verr := a.m.replicateConfigOf(vctx, id)
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
func (a *Arbiter) confirmCovered(ctx context.Context, id, from string, own []string, n int, bar uint64) error {
	var last []uint64
	for {
		cctx, cancel := a.callCtx(ctx)
		cps, _, err := a.m.replicateInfoOf(cctx, id, from, own, n)
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
				return fmt.Errorf("confirming that %s covers %s's last acknowledged write: %w", id, from, err)
			}
			return fmt.Errorf("%s's checkpoints %v of %s's pchannels do not cover its last acknowledged write %d", id, last, from, bar)
		case <-time.After(2 * time.Millisecond):
		}
	}
}
