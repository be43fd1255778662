package topology_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// startSimAt starts a simulated cluster persisting to dir, on listen
// ("127.0.0.1:0" the first time, its old address to restart it).
func startSimAt(t *testing.T, id, dir, listen string) *sim.Cluster {
	t.Helper()
	c, err := sim.Start(context.Background(), sim.Options{ClusterID: id, Users: users, TimeTickInterval: 20 * time.Millisecond,
		DataDir: dir, Listen: listen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// arbiterRig is three simulated clusters a -> b, c, a manager and an
// arbiter over them.
type arbiterRig struct {
	a, b, c *sim.Cluster
	aDir    string
	m       *topology.Manager
	arb     *topology.Arbiter
	changes chan topology.Change
}

func newArbiterRig(t *testing.T, mode string, arbOpts ...func(*topology.ArbiterOptions)) *arbiterRig {
	return newArbiterRigSims(t, mode, nil, arbOpts...)
}

// newArbiterRigSims is newArbiterRig with options for the alternatives' simulators.
func newArbiterRigSims(t *testing.T, mode string, simOpts func(*sim.Options), arbOpts ...func(*topology.ArbiterOptions)) *arbiterRig {
	t.Helper()
	r := &arbiterRig{aDir: t.TempDir(), changes: make(chan topology.Change, 16)}
	r.a = startSimAt(t, "a", r.aDir, "127.0.0.1:0")
	if simOpts == nil {
		simOpts = func(*sim.Options) {}
	}
	r.b, r.c = startSim(t, "b", simOpts), startSim(t, "c", simOpts)
	if err := sim.JoinReplication(context.Background(), r.a, r.b, r.c); err != nil {
		t.Fatal(err)
	}
	r.m, r.arb = startProxyOver(t, mode, r.changes, []*sim.Cluster{r.a, r.b, r.c}, arbOpts...)
	waitSnap(t, r.m, "a leads, b and c polled", func(s *topology.Snapshot) bool {
		return s.Leader != nil && s.Leader.ID == "a" && s.Cluster("b").CheckpointsKnown && s.Cluster("c").CheckpointsKnown &&
			s.Cluster("b").Healthy && s.Cluster("c").Healthy
	})
	return r
}

// startProxyOver starts a manager and an arbiter over running clusters,
// as a proxy (re)started over them does; they stop with the test.
func startProxyOver(t *testing.T, mode string, changes chan topology.Change, sims []*sim.Cluster, arbOpts ...func(*topology.ArbiterOptions)) (*topology.Manager, *topology.Arbiter) {
	t.Helper()
	return startProxyOverPlus(t, mode, changes, sims, nil, arbOpts...)
}

// startProxyOverPlus is startProxyOver with more configured clusters
// after the simulated ones.
func startProxyOverPlus(t *testing.T, mode string, changes chan topology.Change, sims []*sim.Cluster, more []topology.ClusterOptions, arbOpts ...func(*topology.ArbiterOptions)) (*topology.Manager, *topology.Arbiter) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := topology.Options{
		PollInterval:      20 * time.Millisecond,
		ProbeInterval:     50 * time.Millisecond,
		DiscoveryInterval: 100 * time.Millisecond,
		DetectAfter:       400 * time.Millisecond,
		ProbeTimeout:      time.Second, // the default (2*ProbeInterval, 100ms) times out on a loaded machine and fails the leader over
		WriteHold:         5 * time.Second,
		BreakerOpenFor:    300 * time.Millisecond,
		Logger:            logger,
	}
	for _, s := range sims {
		opts.Clusters = append(opts.Clusters, topology.ClusterOptions{ID: s.ID(), URI: s.Addr(), Token: "root:Milvus"})
	}
	opts.Clusters = append(opts.Clusters, more...)
	m, err := topology.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ao := topology.ArbiterOptions{Mode: mode, RejoinSettle: 1500 * time.Millisecond, Logger: logger,
		OnChange: func(c topology.Change) {
			select {
			case changes <- c:
			default:
			}
		}}
	for _, o := range arbOpts {
		o(&ao)
	}
	arb, err := topology.NewArbiter(m, ao)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	arb.Start()
	t.Cleanup(func() { m.Close() })
	return m, arb
}

// TestArbiterSwitchover: a planned switchover under the protocol: the new
// leader covers the old one's last acknowledged write, takes writes, the
// old one refuses them and follows as a target.
func TestArbiterSwitchover(t *testing.T) {
	r := newArbiterRig(t, topology.ModeAuto)
	ca, cb := dial(t, r.a.Addr()), dial(t, r.b.Addr())
	ca.createLoaded("docs")
	var last uint64
	for i := range int64(20) {
		last = ca.insert("docs", i)
	}
	r.m.ObserveWrite("a", last)

	if _, err := r.arb.Switchover(context.Background(), "nope"); !errors.Is(err, topology.ErrUnknownCluster) {
		t.Fatalf("switchover to an unknown cluster: %v", err)
	}
	if _, err := r.arb.Switchover(context.Background(), "a"); !errors.Is(err, topology.ErrRefused) {
		t.Fatalf("switchover to the leader: %v", err)
	}
	ch, err := r.arb.Switchover(context.Background(), "b")
	if err != nil {
		t.Fatalf("switchover: %v (%+v)", err, ch)
	}
	if ch.Result != topology.ResultOK || ch.To != "b" || ch.Epoch != 1 || ch.Held <= 0 {
		t.Fatalf("change %+v", ch)
	}
	t.Logf("switchover held writes for %s; steps %+v", ch.Held, ch.Steps)
	s := r.m.Snapshot()
	if s.Leader == nil || s.Leader.ID != "b" || s.FailingOver {
		t.Fatalf("after switchover: %+v", r.m.View())
	}
	if got := cb.has("docs", 0, 19); !got[0] || !got[19] {
		t.Fatalf("new leader lacks acknowledged writes: %v", got)
	}
	cb.insert("docs", 100)
	if err := ca.tryInsert("docs", 101); err == nil || !strings.Contains(err.Error(), "REPLICATE_VIOLATION") {
		t.Fatalf("old leader took a write after the switchover: %v", err)
	}
	if got := topologyOf(ca.replicateConfig()); got != "b>a,b>c" {
		t.Fatalf("old leader's configuration %s", got)
	}
	cc := dial(t, r.c.Addr())
	testutil.EventuallyOr(t, 10*time.Second, "a and c follow b", func() bool {
		return cc.has("docs", 100)[100] && ca.has("docs", 100)[100]
	}, func() string { return fmt.Sprintf("a %+v\nb %+v\nc %+v", r.a.Status(), r.b.Status(), r.c.Status()) })
	waitSnap(t, r.m, "a an alternative again", func(s *topology.Snapshot) bool {
		a := s.Cluster("a")
		return a.Role == topology.RoleAlternative && a.CheckpointsKnown && !a.Quarantined
	})
	if c := <-r.changes; c.Kind != topology.KindSwitchover || c.Result != topology.ResultRefused {
		t.Fatalf("first recorded change %+v", c)
	}
}

// TestArbiterAutoFailover walks a forced failover and the old leader's
// return: the alternative that replicated furthest is promoted, the one
// behind is attached but quarantined, the old leader returns as a
// quarantined target and its unreplicated write is reported; the
// alternative behind is told what it missed.
func TestArbiterAutoFailover(t *testing.T) {
	r := newArbiterRig(t, topology.ModeAuto)
	ca, cb, cc := dial(t, r.a.Addr()), dial(t, r.b.Addr()), dial(t, r.c.Addr())
	ca.createLoaded("docs")
	ca.insert("docs", 1)
	testutil.Eventually(t, 10*time.Second, "both alternatives have 1", func() bool { return cb.has("docs", 1)[1] && cc.has("docs", 1)[1] })
	r.c.PauseReplication()
	ca.insert("docs", 2) // b only
	testutil.Eventually(t, 10*time.Second, "b has 2", func() bool { return cb.has("docs", 2)[2] })
	r.b.PauseReplication()
	ca.insert("docs", 3) // nobody
	r.a.Crash()

	var ch topology.Change
	select {
	case ch = <-r.changes:
	case <-time.After(15 * time.Second):
		t.Fatalf("no failover: %+v", r.m.View())
	}
	// Resumed only now: messages c held back must die with a's stream,
	// not be applied before c notices a is gone.
	r.b.ResumeReplication()
	r.c.ResumeReplication()
	if ch.Kind != topology.KindFailover || !ch.Auto || ch.Result != topology.ResultOK || ch.From != "a" || ch.To != "b" || ch.Epoch != 1 {
		t.Fatalf("failover %+v", ch)
	}
	t.Logf("failover held writes for %s; steps %+v", ch.Held, ch.Steps)
	if !strings.Contains(ch.Quarantined["c"], "behind") {
		t.Fatalf("c stood behind the salvage checkpoint, quarantine %q", ch.Quarantined)
	}
	s := waitSnap(t, r.m, "b leads, c attached", func(s *topology.Snapshot) bool {
		return s.Leader != nil && s.Leader.ID == "b" && s.Cluster("c").Target
	})
	if c := s.Cluster("c"); !c.Quarantined || s.Cluster("a").Role != topology.RoleStandby {
		t.Fatalf("after failover: %+v", r.m.View())
	}
	if got := cb.has("docs", 1, 2, 3); !got[1] || !got[2] || got[3] {
		t.Fatalf("new leader holds %v; want 1 and 2, not 3", got)
	}
	cb.insert("docs", 4)
	testutil.Eventually(t, 10*time.Second, "c replicates from b", func() bool { return cc.has("docs", 4)[4] })
	if got := cc.has("docs", 2); got[2] {
		t.Fatal("c got 2 after all: it should have been missed")
	}

	// The old leader comes back with its data.
	r.a = startSimAt(t, "a", r.aDir, r.a.Addr())
	testutil.Eventually(t, 20*time.Second, "old leader demoted and reported", func() bool {
		st := r.arb.Status()
		return len(st.Salvage) == 1 && st.Salvage[0].OldLeaderReturned && len(st.Pending) == 0
	})
	rep := r.arb.Status().Salvage[0]
	if rep.OldLeader != "a" || rep.NewLeader != "b" || rep.Unreplicated == nil || rep.Unreplicated.Inserts != 1 || rep.Unreplicated.Deletes != 0 {
		t.Fatalf("salvage report %+v (unreplicated %+v)", rep, rep.Unreplicated)
	}
	if got := topologyOf(ca.replicateConfig()); !strings.Contains(got, "b>a") || strings.HasPrefix(got, "a>") {
		t.Fatalf("old leader's configuration after it returned: %s", got)
	}
	s = waitSnap(t, r.m, "a a quarantined target, c told what it missed", func(s *topology.Snapshot) bool {
		return s.Cluster("a").Target && s.Cluster("a").Quarantined && strings.Contains(s.Cluster("c").QuarantineReason, "missed 1 insert")
	})
	if s.Leader.ID != "b" {
		t.Fatalf("leader changed: %+v", r.m.View())
	}
	cb.insert("docs", 5)
	testutil.Eventually(t, 10*time.Second, "the old leader replicates from b", func() bool { return ca.has("docs", 5)[5] })
	if err := ca.tryInsert("docs", 6); err == nil {
		t.Fatal("the demoted old leader took a write")
	}
}

// TestArbiterManualMode: a lost leader is only reported until an operator
// forces a failover.
func TestArbiterManualMode(t *testing.T) {
	r := newArbiterRig(t, topology.ModeManual)
	r.a.Crash()
	testutil.Eventually(t, 10*time.Second, "loss reported", func() bool { return r.arb.Status().Phase == topology.PhaseLost })
	time.Sleep(500 * time.Millisecond)
	if s := r.m.Snapshot(); s.Leader == nil || s.Leader.ID != "a" || s.FailingOver || s.LeaderLostAt.IsZero() {
		t.Fatalf("manual mode acted on its own: %+v", r.m.View())
	}
	if _, err := r.arb.Failover(context.Background(), "a"); !errors.Is(err, topology.ErrRefused) {
		t.Fatalf("failover to the lost leader: %v", err)
	}
	ch, err := r.arb.Failover(context.Background(), "c")
	if err != nil || ch.To != "c" || ch.Auto {
		t.Fatalf("failover --to c: %v %+v", err, ch)
	}
	s := waitSnap(t, r.m, "c leads, b attached", func(s *topology.Snapshot) bool {
		return s.Leader != nil && s.Leader.ID == "c" && s.Cluster("b").Target && s.Cluster("b").Role == topology.RoleAlternative
	})
	// b and c stood level with each other unless the crash fell between
	// a's sends to them (a time tick can reach b and not c): then b is
	// quarantined as behind or ahead of c's salvage checkpoint, and says so.
	if b := s.Cluster("b"); b.Quarantined && !strings.Contains(b.QuarantineReason, "behind") && !strings.Contains(b.QuarantineReason, "ahead") {
		t.Fatalf("b quarantined for another reason: %s", b.QuarantineReason)
	}
	if st := r.arb.Status(); st.Phase != topology.PhaseSteady || st.LastChange == nil || st.LastChange.To != "c" {
		t.Fatalf("status %+v", st)
	}
}

// TestArbiterForcePromoteShapes: a forced failover works whichever
// force_promote request shape the clusters accept (one-cluster
// configuration, or empty).
func TestArbiterForcePromoteShapes(t *testing.T) {
	for _, shape := range []string{sim.ForcePromoteSingle, sim.ForcePromoteEmpty} {
		t.Run(shape, func(t *testing.T) {
			r := newArbiterRigSims(t, topology.ModeManual, func(o *sim.Options) { o.ForcePromoteShape = shape })
			r.a.Crash()
			testutil.Eventually(t, 10*time.Second, "loss reported", func() bool { return r.arb.Status().Phase == topology.PhaseLost })
			ch, err := r.arb.Failover(context.Background(), "b")
			if err != nil || ch.To != "b" || ch.Result != topology.ResultOK {
				t.Fatalf("failover --to b: %v %+v", err, ch)
			}
			if got := topologyOf(dial(t, r.b.Addr()).replicateConfig()); !strings.HasPrefix(got, "b>") && got != "" {
				t.Fatalf("b's configuration after the failover: %s", got)
			}
			waitSnap(t, r.m, "b leads", func(s *topology.Snapshot) bool { return s.Leader != nil && s.Leader.ID == "b" })
		})
	}
}

// TestArbiterAttach: a new cluster is attached as a target of the leader
// (configuration to it first, then to the leader) and replicates what the
// leader takes from then on; attaching the leader, a target, an unknown
// cluster, or a cluster replicating from elsewhere is refused with the
// reason.
func TestArbiterAttach(t *testing.T) {
	a, b, d, e := startSim(t, "a"), startSim(t, "b"), startSim(t, "d"), startSim(t, "e")
	if err := sim.JoinReplication(context.Background(), a, b); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := topology.Options{PollInterval: 20 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		DiscoveryInterval: 100 * time.Millisecond, DetectAfter: 2 * time.Second, WriteHold: 5 * time.Second, Logger: logger,
		ProbeTimeout: 2 * time.Second} // a loaded machine must not make d or b look down
	for _, s := range []*sim.Cluster{a, b, d, e} {
		opts.Clusters = append(opts.Clusters, topology.ClusterOptions{ID: s.ID(), URI: s.Addr(), Token: "root:Milvus"})
	}
	m, err := topology.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	arb, err := topology.NewArbiter(m, topology.ArbiterOptions{Logger: logger, QueueWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	arb.Start()
	t.Cleanup(func() { m.Close() })
	waitSnap(t, m, "a leads, b polled, d healthy", func(s *topology.Snapshot) bool {
		return s.Leader != nil && s.Leader.ID == "a" && s.Cluster("b").CheckpointsKnown && s.Cluster("d").Healthy && s.Cluster("e").Healthy
	})
	ca, cd := dial(t, a.Addr()), dial(t, d.Addr())

	for _, tc := range []struct{ id, want string }{
		{"zz", `unknown cluster "zz" (configured: a, b, d, e)`},
		{"a", "a is the leader"},
		{"b", "b already replicates from a"},
	} {
		_, err := arb.Attach(context.Background(), tc.id)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), "refused") > 1 {
			t.Fatalf("attach %s: %v, want %q", tc.id, err, tc.want)
		}
	}
	ch, err := arb.Attach(context.Background(), "d")
	if err != nil || ch.Result != topology.ResultOK {
		t.Fatalf("attach d: %v %+v", err, ch)
	}
	var order []string
	for _, st := range ch.Steps {
		order = append(order, st.Name+"@"+st.Cluster)
	}
	if got := strings.Join(order, ","); got != "read-configs@,demote@d,attach@a" {
		t.Fatalf("attach steps %s", got)
	}
	if got := topologyOf(cd.replicateConfig()); got != "a>b,a>d" {
		t.Fatalf("d's configuration %s", got)
	}
	// CDC carries what the leader takes from the attach on (history
	// comes from a backup): a collection created now, and its rows.
	ca.createLoaded("docs")
	ca.insert("docs", 2)
	testutil.Eventually(t, 10*time.Second, "d replicates what a takes after the attach", func() bool { return cd.has("docs", 2)[2] })
	waitSnap(t, m, "d an alternative", func(s *topology.Snapshot) bool {
		return s.Cluster("d").Target && s.Cluster("d").Role == topology.RoleAlternative
	})
	if _, err := arb.Attach(context.Background(), "d"); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("attach d again: %v", err)
	}

	// b is rebuilt: a new, empty deployment on its address. The leader
	// still names it; attach detaches it first, then attaches it anew.
	if err := m.SetQuarantine("b", "diverged"); err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	b.Stop()
	testutil.Eventually(t, 10*time.Second, "b seen down", func() bool { return !m.Snapshot().Cluster("b").Healthy })
	b = startSimOn(t, "b", addr)
	testutil.Eventually(t, 10*time.Second, "the rebuilt b seen healthy", func() bool { return m.Snapshot().Cluster("b").Healthy })
	// The proxy's connection to b may still be in its reconnect backoff:
	// a failed attach says so and is retried, as an operator would.
	for i := 0; ; i++ {
		ch, err = arb.Attach(context.Background(), "b")
		if err == nil || i == 20 || errors.Is(err, topology.ErrRefused) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("attach the rebuilt b: %v %+v", err, ch)
	}
	order = nil
	for _, st := range ch.Steps {
		order = append(order, st.Name+"@"+st.Cluster)
	}
	if got := strings.Join(order, ","); got != "read-configs@,detach@a,demote@b,attach@a" {
		t.Fatalf("re-attach steps %s", got)
	}
	cb := dial(t, b.Addr())
	ca.createLoaded("docs2")
	ca.insert("docs2", 7)
	testutil.EventuallyOr(t, 10*time.Second, "the rebuilt b replicates what a takes", func() bool { return cb.has("docs2", 7)[7] },
		func() string { return fmt.Sprintf("a %+v\nb %+v", a.Status(), b.Status()) })
	if c := m.Snapshot().Cluster("b"); c.Quarantined {
		t.Fatalf("b still quarantined after the attach: %s", c.QuarantineReason)
	}
	e.Crash()
	testutil.Eventually(t, 10*time.Second, "e seen down", func() bool { return !m.Snapshot().Cluster("e").Healthy })
	if _, err := arb.Attach(context.Background(), "e"); err == nil || !strings.Contains(err.Error(), "not healthy") {
		t.Fatalf("attach an unhealthy cluster: %v", err)
	}
}

// startSimOn starts an empty simulated cluster on addr (a rebuilt one).
func startSimOn(t *testing.T, id, addr string) *sim.Cluster {
	t.Helper()
	var c *sim.Cluster
	var err error
	for range 20 {
		c, err = sim.Start(context.Background(), sim.Options{ClusterID: id, Users: users, TimeTickInterval: 20 * time.Millisecond, Listen: addr})
		if err == nil {
			t.Cleanup(c.Stop)
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("starting %s on %s: %v", id, addr, err)
	return nil
}
