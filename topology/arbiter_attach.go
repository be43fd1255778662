package topology

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// KindAttach is the kind of a change that attaches a cluster as a target
// of the leader.
const KindAttach = "attach"

// Attach makes cluster id, a rebuilt or new cluster, a replication target
// of the current leader (`milvus-ha-proxy attach --cluster ID`). It is
// refused, with the reason, when that is not safe: the cluster is the
// leader, unreachable, already replicating from the leader in its own
// configuration, a primary with targets of its own (a former leader not
// rebuilt), or replicating from another cluster. A rebuilt former target
// the leader still names is detached from the leader first. Attaching
// lifts a quarantine: the cluster was rebuilt. A rebuilt cluster is one
// restored from a backup of the leader (docs/operations.md): its own
// replicate configuration is empty or names only itself. The
// configuration goes to the cluster first (it becomes a secondary of the
// leader), then to the leader (its CDC starts replicating to it), then to
// the other targets.
func (a *Arbiter) Attach(ctx context.Context, id string) (Change, error) {
	if err := a.errNotDeciding(); err != nil {
		return a.refusedErr(KindAttach, "", id, err)
	}
	if err := a.acquireWait(ctx, "attaching "+id); err != nil {
		return a.refusedErr(KindAttach, "", id, err)
	}
	defer a.release()
	s := a.m.Snapshot()
	leader, err := a.attachable(s, id)
	if err != nil {
		return a.refusedErr(KindAttach, leader, id, err)
	}
	a.cancelBackground()
	t := &attachRun{changeRun: a.beginChange(ctx, KindAttach, leader, id, false), s: s, id: id, leader: leader}
	if err := t.readConfigs(ctx); err != nil {
		return t.failed(ctx, err)
	}
	if err := attachSafe(t.own, t.leaderCfg, id, leader); err != nil {
		ch := t.finish(ctx, ResultRefused, err.Error())
		a.setPhase(PhaseSteady)
		return ch, err
	}
	if targetOf(t.leaderCfg, leader, id) {
		if err := t.detach(ctx); err != nil {
			return t.failed(ctx, err)
		}
	}
	if err := t.configure(ctx); err != nil {
		return t.failed(ctx, err)
	}
	return t.done(ctx), nil
}

// attachRun carries one attach across its steps.
type attachRun struct {
	*changeRun
	s              *Snapshot
	id, leader     string
	own, leaderCfg *commonpb.ReplicateConfiguration
}

// readConfigs reads the cluster's own configuration and the leader's.
func (t *attachRun) readConfigs(ctx context.Context) error {
	a, m, id, leader := t.a, t.a.m, t.id, t.leader
	return t.step(ctx, StepReadConfigs, "", fmt.Sprintf("GetReplicateConfiguration on %s and %s", id, leader), func() (string, error) {
		var err error
		// A cluster never given a configuration may not answer at all:
		// Milvus 2.6 blocks GetReplicateConfiguration until one is set
		// (milvus#52686; its fix answers an empty one). It answered its
		// health probes, so a read that runs out of time means none.
		octx, ocancel := context.WithTimeout(ctx, min(a.opts.CallTimeout, 2*time.Second))
		t.own, err = m.replicateConfigOf(octx, id)
		ocancel()
		switch {
		case err != nil && status.Code(errors.Unwrap(err)) == codes.DeadlineExceeded && ctx.Err() == nil:
			t.own = &commonpb.ReplicateConfiguration{}
		case err != nil:
			return "", err
		}
		cctx, cancel := a.callCtx(ctx)
		defer cancel()
		if t.leaderCfg, err = m.replicateConfigOf(cctx, leader); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s: %s; %s: %s", id, describeConfig(t.own, false), leader, describeConfig(t.leaderCfg, false)), nil
	})
}

// detach has the leader let go of a rebuilt cluster it still names as
// its target (it was one before it was wiped), so that replication to it
// starts afresh at the configuration that attaches it again, not where
// the old cluster had stopped.
func (t *attachRun) detach(ctx context.Context) error {
	a := t.a
	detach := withoutTarget(t.leaderCfg, t.leader, t.id)
	if err := t.step(ctx, StepDetach, t.leader, describeConfig(detach, false), func() (string, error) {
		return "ok", a.sendConfig(ctx, t.leader, detach)
	}); err != nil {
		return err
	}
	t.leaderCfg = detach
	// The leader's CDC still carries that configuration message to the
	// cluster as the last one of the edge: applied after the cluster took
	// its new configuration, it would leave it standing alone. Give it
	// RejoinSettle to arrive first.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(a.opts.RejoinSettle):
		return nil
	}
}

// configure sends the configuration naming the cluster a target of the
// leader: to the cluster first (it becomes a secondary of the leader),
// then to the leader (its CDC starts replicating to it), then in the
// background to the other targets.
func (t *attachRun) configure(ctx context.Context) error {
	a := t.a
	entry := entryOf(t.own, t.id)
	if entry == nil {
		entry = a.newEntry(t.s, t.id)
	}
	newCfg := withTarget(t.leaderCfg, t.leader, entry)
	if err := t.step(ctx, StepDemote, t.id, describeConfig(newCfg, false), func() (string, error) {
		return "ok", a.sendConfig(ctx, t.id, newCfg)
	}); err != nil {
		return err
	}
	if err := t.step(ctx, StepAttach, t.leader, describeConfig(newCfg, false), func() (string, error) {
		return "ok", a.sendConfig(ctx, t.leader, newCfg)
	}); err != nil {
		return err
	}
	for _, e := range newCfg.GetClusters() {
		if other := e.GetClusterId(); other != t.leader && other != t.id {
			a.sendInBackground(other, newCfg)
		}
	}
	return nil
}

// done forgets what the cluster was held for (a rebuilt cluster no longer
// holds what got it quarantined or made it a former leader to rejoin) and
// records the attach.
func (t *attachRun) done(ctx context.Context) Change {
	a, m, id := t.a, t.a.m, t.id
	if err := m.SetQuarantine(id, ""); err != nil {
		a.log.Error("lifting the quarantine of an attached cluster", "cluster", id, "err", err)
	}
	a.mu.Lock()
	delete(a.pending, id)
	delete(a.gaps, id)
	delete(a.splitBrain, id)
	a.mu.Unlock()
	m.setFenced(id, false)
	m.Rediscover()
	ch := t.finish(ctx, ResultOK, fmt.Sprintf("%s is a replication target of %s; it serves reads once its checkpoints are polled", id, t.leader))
	a.setPhase(PhaseSteady)
	a.log.Info("cluster attached as a target of the leader", "cluster", id, "leader", t.leader)
	return ch
}

func (t *attachRun) failed(ctx context.Context, err error) (Change, error) {
	return t.a.attachFailed(ctx, t.changeRun, err)
}

// attachable checks what the snapshot says about attaching id and
// returns the leader.
func (a *Arbiter) attachable(s *Snapshot, id string) (leader string, err error) {
	c := s.Cluster(id)
	if c == nil {
		return "", fmt.Errorf("%w %q (configured: %s)", ErrUnknownCluster, id, strings.Join(a.m.clusterIDs(), ", "))
	}
	if s.Leader == nil {
		return "", fmt.Errorf("%w: no leader to attach %s to (a leader change is under way, or none is known)", ErrRefused, id)
	}
	leader = s.Leader.ID
	switch {
	case id == leader:
		return leader, fmt.Errorf("%w: %s is the leader", ErrRefused, id)
	case !c.Healthy:
		return leader, fmt.Errorf("%w: %s is not healthy: %s", ErrRefused, id, c.HealthReason)
	case pchannelCount(s, s.Leader) == 0:
		return leader, fmt.Errorf("%w: the leader's pchannels are unknown (discovery has not read a replicate configuration)", ErrRefused)
	}
	return leader, nil
}

// attachSafe checks the clusters' own configurations: id must not be
// replicating from another cluster, nor be a primary with targets of its
// own.
func attachSafe(own, leaderCfg *commonpb.ReplicateConfiguration, id, leader string) error {
	if sourceOf(leaderCfg) != leader {
		return fmt.Errorf("%w: %s is not a primary in its own replicate configuration", ErrRefused, leader)
	}
	switch src := sourceOf(own); {
	case len(own.GetClusters()) == 0:
		return nil // never configured: a new or rebuilt cluster
	case src == id && len(own.GetCrossClusterTopology()) == 0:
		return nil // standing alone
	case src == id:
		return fmt.Errorf("%w: %s is a primary with targets of its own (%s): detach them or rebuild it first", ErrRefused, id, describeConfig(own, false))
	case src == leader:
		return fmt.Errorf("%w: %s already replicates from %s", ErrRefused, id, leader)
	default:
		return fmt.Errorf("%w: %s replicates from %s, not from the leader %s (%s)", ErrRefused, id, orNone(src), leader, describeConfig(own, false))
	}
}

func orNone(s string) string {
	if s == "" {
		return "no single source"
	}
	return s
}

// newEntry builds the configuration entry of a cluster that has none:
// its URI from the proxy's configuration, its pchannels by Milvus's
// naming rule, as many as the leader has (they correspond by index).
func (a *Arbiter) newEntry(s *Snapshot, id string) *commonpb.MilvusCluster {
	e := &commonpb.MilvusCluster{ClusterId: id, ConnectionParam: &commonpb.ConnectionParam{Uri: s.Cluster(id).URI}}
	for i := range pchannelCount(s, s.Leader) {
		e.Pchannels = append(e.Pchannels, pchannelAt(id, nil, i))
	}
	return e
}

func (a *Arbiter) attachFailed(ctx context.Context, r *changeRun, err error) (Change, error) {
	ch := r.finish(ctx, ResultFailed, err.Error())
	a.setPhase(PhaseSteady)
	a.m.Rediscover()
	return ch, fmt.Errorf("attaching %s to %s: %w", r.ch.To, r.ch.From, err)
}
