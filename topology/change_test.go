package topology_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// recordingStore keeps every record saved, in order.
type recordingStore struct {
	topology.MemoryChangeStore
	mu    sync.Mutex
	saves []*topology.Change
}

func (s *recordingStore) Save(ctx context.Context, c *topology.Change) error {
	s.mu.Lock()
	s.saves = append(s.saves, c.Clone())
	s.mu.Unlock()
	return s.MemoryChangeStore.Save(ctx, c)
}

func stepNames(c *topology.Change) []string {
	var out []string
	for _, st := range c.Steps {
		out = append(out, st.Name)
	}
	return out
}

// TestChangeRecord: a switchover is saved as it runs: each step before
// it runs (current step named, no end) and after (what was sent to which
// cluster, what it answered), and the last save is the finished change.
func TestChangeRecord(t *testing.T) {
	store := &recordingStore{}
	r := newArbiterRig(t, topology.ModeAuto, func(o *topology.ArbiterOptions) { o.Store = store })
	ch, err := r.arb.Switchover(context.Background(), "b")
	if err != nil {
		t.Fatalf("switchover: %v", err)
	}
	want := []string{topology.StepCatchUp, topology.StepReadConfigs, topology.StepHold, topology.StepCover, topology.StepDemote,
		topology.StepConfirm, topology.StepPromote, topology.StepInstall}
	if got := stepNames(&ch); !slices.Equal(got, want) {
		t.Fatalf("steps %v, want %v", got, want)
	}
	for _, st := range ch.Steps {
		if !st.Done() || st.Error != "" || st.Start.IsZero() || st.End.Before(st.Start) {
			t.Fatalf("step %+v", st)
		}
	}
	if ch.Bar == 0 {
		t.Fatal("the switchover record has no bar: a restarted arbiter could not check the target covers it")
	}
	demote, promote := ch.Steps[4], ch.Steps[6]
	if demote.Cluster != "a" || !strings.Contains(demote.Sent, "topology [b->a b->c]") || demote.Answer != "ok" {
		t.Fatalf("demote step %+v", demote)
	}
	if promote.Cluster != "b" || promote.Sent != demote.Sent {
		t.Fatalf("promote step %+v", promote)
	}

	store.mu.Lock()
	saves := slices.Clone(store.saves)
	store.mu.Unlock()
	if len(saves) < 2*len(want)+1 {
		t.Fatalf("%d saves for %d steps", len(saves), len(want))
	}
	sawRunning := map[string]bool{}
	for _, c := range saves[:len(saves)-1] {
		if !c.Running() || c.ID != ch.ID {
			t.Fatalf("intermediate save %+v", c)
		}
		if c.Current != "" {
			st, _ := c.CurrentStep()
			if st.Name != c.Current || st.Done() {
				t.Fatalf("current step %q but last step %+v", c.Current, st)
			}
			sawRunning[c.Current] = true
		}
	}
	for _, name := range want {
		if !sawRunning[name] {
			t.Fatalf("step %s never saved while running", name)
		}
	}
	last, err := store.Load(context.Background())
	if err != nil || last.Running() || last.Result != topology.ResultOK || last.Epoch != 1 {
		t.Fatalf("stored record %+v, %v", last, err)
	}
	if st := r.arb.Status(); st.Current != nil || st.LastChange == nil || st.LastChange.ID != ch.ID {
		t.Fatalf("status after the change %+v", st)
	}
}

// TestResumeInterruptedChange: a change recorded as running when the
// arbiter starts (its previous runner stopped) is closed as interrupted,
// with the step it was in, and the clusters' own configurations decide
// the leader.
func TestResumeInterruptedChange(t *testing.T) {
	store := &topology.MemoryChangeStore{}
	rec := &topology.Change{ID: "switchover-0-x", Kind: topology.KindSwitchover, From: "a", To: "b", At: time.Now(),
		Steps: []topology.Step{{Name: topology.StepHold, Cluster: "a", Start: time.Now(), End: time.Now()},
			{Name: topology.StepDemote, Cluster: "a", Start: time.Now()}},
		Current: topology.StepDemote}
	if err := store.Save(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	r := newArbiterRig(t, topology.ModeAuto, func(o *topology.ArbiterOptions) { o.Store = store })
	testutil.Eventually(t, 10*time.Second, "the interrupted change closed", func() bool {
		c, _ := store.Load(context.Background())
		return c != nil && !c.Running()
	})
	c, _ := store.Load(context.Background())
	if c.ID != rec.ID || c.Result != topology.ResultFailed || !strings.Contains(c.Message, "interrupted at step demote") {
		t.Fatalf("closed record %+v", c)
	}
	if st := r.arb.Status(); st.LastChange == nil || st.LastChange.ID != rec.ID || st.Current != nil {
		t.Fatalf("status %+v", st)
	}
	if s := r.m.Snapshot(); s.Leader == nil || s.Leader.ID != "a" || s.FailingOver {
		t.Fatalf("leader after resuming: %+v", r.m.View())
	}
}

// TestQuarantineSurvivesRestart: the quarantines in force are saved with
// the change record (a file here) and put back by the next arbiter: a
// restarted proxy does not read from, or switch to, a cluster that lacks
// data because it forgot.
func TestQuarantineSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	store := &topology.FileChangeStore{Path: path}
	r := newArbiterRig(t, topology.ModeAuto, func(o *topology.ArbiterOptions) { o.Store = store })
	if err := r.m.SetQuarantine("c", "lacks what a took before it rejoined"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.arb.Switchover(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	saved, err := store.Load(context.Background())
	if err != nil || saved.QuarantinesInForce["c"] != "lacks what a took before it rejoined" {
		t.Fatalf("saved %+v, %v", saved, err)
	}
	r.m.Close()

	// A new proxy over the same clusters and the same file.
	opts := topology.Options{PollInterval: 20 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		DiscoveryInterval: 100 * time.Millisecond, DetectAfter: 400 * time.Millisecond, WriteHold: 5 * time.Second}
	for _, s := range []*sim.Cluster{r.a, r.b, r.c} {
		opts.Clusters = append(opts.Clusters, topology.ClusterOptions{ID: s.ID(), URI: s.Addr(), Token: "root:Milvus"})
	}
	m, err := topology.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	arb, err := topology.NewArbiter(m, topology.ArbiterOptions{Store: &topology.FileChangeStore{Path: path}})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	arb.Start()
	t.Cleanup(func() { m.Close() })
	s := waitSnap(t, m, "b leads, c quarantined again", func(s *topology.Snapshot) bool {
		return s.Leader != nil && s.Leader.ID == "b" && s.Cluster("c").Quarantined
	})
	if got := s.Cluster("c").QuarantineReason; got != "lacks what a took before it rejoined" {
		t.Fatalf("restored reason %q", got)
	}
	if _, err := arb.Switchover(context.Background(), "c"); err == nil || !strings.Contains(err.Error(), "quarantined") {
		t.Fatalf("switchover to the restored quarantined cluster: %v", err)
	}
	if st := arb.Status(); st.LastChange == nil || st.LastChange.Kind != topology.KindSwitchover {
		t.Fatalf("last change after restart %+v", st.LastChange)
	}
}

// TestFileChangeStore: a missing file is no record; a saved record reads
// back whole.
func TestFileChangeStore(t *testing.T) {
	s := &topology.FileChangeStore{Path: filepath.Join(t.TempDir(), "c.json")}
	if c, err := s.Load(context.Background()); c != nil || err != nil {
		t.Fatalf("empty store: %+v %v", c, err)
	}
	in := &topology.Change{ID: "x", Kind: topology.KindFailover, From: "a", To: "b", Epoch: 3,
		Steps:              []topology.Step{{Name: topology.StepPromote, Cluster: "b", Sent: "s", Answer: "ok", Took: time.Millisecond}},
		QuarantinesInForce: map[string]string{"c": "why"}}
	if err := s.Save(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	out, err := s.Load(context.Background())
	if err != nil || out.ID != "x" || out.Steps[0].Answer != "ok" || out.QuarantinesInForce["c"] != "why" || out.Epoch != 3 {
		t.Fatalf("read back %+v, %v", out, err)
	}
	bad := &topology.FileChangeStore{Path: filepath.Join(t.TempDir(), "missing-dir", "c.json")}
	if err := bad.Save(context.Background(), in); err == nil || !strings.Contains(err.Error(), "missing-dir") {
		t.Fatalf("save into a missing directory: %v", err)
	}
}
