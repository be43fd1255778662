package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
)

// A leader change is recorded as it runs: the Change names what is being
// done (kind, from, to, epoch) and lists its steps, each with the cluster
// it talked to, what was sent, what the cluster answered and when. The
// arbiter saves the record to a ChangeStore when the change begins, before
// and after every step, and when it ends, so that whoever runs the arbiter
// next (this process after a restart, or another proxy elected to decide)
// can see a change that did not finish and settle it from the clusters'
// own replicate configurations.

// ChangeStore keeps the record of the latest leader change. Load and Save
// are called by one arbiter at a time; an implementation backed by a
// shared store (etcd) makes Save fail once this arbiter no longer may
// decide, and the arbiter then abandons the change without another call
// to a cluster.
type ChangeStore interface {
	// Load returns the last saved change, or nil when none was saved.
	Load(ctx context.Context) (*Change, error)
	// Save stores c in place of the change saved before. c is the
	// caller's: an implementation that keeps it must copy it (Clone).
	Save(ctx context.Context, c *Change) error
}

// MemoryChangeStore is a ChangeStore in memory: the record lasts as long
// as the process. The zero value is ready to use.
type MemoryChangeStore struct {
	mu sync.Mutex
	c  *Change
}

// Load returns a copy of the last saved change, or nil.
func (s *MemoryChangeStore) Load(context.Context) (*Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return nil, nil
	}
	return s.c.Clone(), nil
}

// Save keeps a copy of c.
func (s *MemoryChangeStore) Save(_ context.Context, c *Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.c = c.Clone()
	return nil
}

// FileChangeStore is a ChangeStore in a JSON file, so a restarted proxy
// resumes an interrupted change and remembers the quarantines in force.
// Save writes a temporary file next to it, syncs it and renames it over
// the old one: a crash leaves the old record or the new one, never half.
type FileChangeStore struct {
	Path string
	mu   sync.Mutex
}

// Load reads the record; nil when the file does not exist yet.
func (s *FileChangeStore) Load(context.Context) (*Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the leader change record %s: %w", s.Path, err)
	}
	var c Change
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decoding the leader change record %s: %w", s.Path, err)
	}
	return &c, nil
}

// Save replaces the record with c.
func (s *FileChangeStore) Save(_ context.Context, c *Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the leader change record: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.Path), filepath.Base(s.Path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing the leader change record: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.Path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("writing the leader change record %s: %w", s.Path, err)
	}
	return nil
}

// Step is one step of a leader change: what was sent to which cluster and
// what it answered. Steps that talk to no cluster (holding writes,
// installing the new leader in the proxy) leave Cluster empty.
type Step struct {
	Name string `json:"name"`
	// Cluster is the cluster the step talked to, "" for none.
	Cluster string `json:"cluster,omitempty"`
	// Sent says what was sent (the call and a summary of its request).
	Sent string `json:"sent,omitempty"`
	// Answer says what came back (a summary), Error why the step failed.
	Answer string `json:"answer,omitempty"`
	Error  string `json:"error,omitempty"`
	// Start and End bound the step; End is zero while it runs.
	Start time.Time     `json:"start"`
	End   time.Time     `json:"end,omitzero"`
	Took  time.Duration `json:"took"`
}

// String is the step in one line: name, cluster, duration and error.
func (s Step) String() string {
	out := s.Name
	if s.Cluster != "" {
		out += "@" + s.Cluster
	}
	if s.Done() {
		out += " " + s.Took.Round(time.Microsecond).String()
	} else {
		out += " (running)"
	}
	if s.Error != "" {
		out += ": " + s.Error
	}
	return out
}

// Done reports whether the step ended.
func (s Step) Done() bool { return !s.End.IsZero() }

// Change is one leader change attempt and its record.
type Change struct {
	// ID names the attempt: unique within a ChangeStore.
	ID   string `json:"id,omitempty"`
	Kind string `json:"kind"` // failover | switchover | attach
	// Auto: started by the arbiter on leader loss, not by an operator.
	Auto bool   `json:"auto"`
	From string `json:"from"`
	To   string `json:"to"`
	// Epoch is the proxy's epoch when the change began, then the epoch
	// it installed (ok), or the epoch in force when it ended (failed).
	Epoch uint64 `json:"epoch"`
	// Result is "" while the change runs, then ok | refused | failed.
	Result string `json:"result"`
	// Message says why a change failed or was refused, or what to know.
	Message string    `json:"message,omitempty"`
	At      time.Time `json:"at"`
	// Took is the whole change; Held the time writes were held (from
	// holding them to releasing them to the new leader).
	Took time.Duration `json:"took"`
	Held time.Duration `json:"held"`
	// Bar is the old leader's last acknowledged write (a timestamp) that
	// a switchover's target was confirmed to hold before the old leader
	// demoted itself; a restarted arbiter settling the switchover
	// promotes the target by force only if it still covers it.
	Bar uint64 `json:"bar,omitempty"`
	// WritesHeld counts writes that had to wait for the new leader.
	WritesHeld int64 `json:"writes_held"`
	// Quarantined lists alternatives left without reads, with reasons.
	Quarantined map[string]string `json:"quarantined,omitempty"`
	// Salvage is the new leader's salvage checkpoint per pchannel
	// (failover only).
	Salvage []uint64 `json:"salvage,omitempty"`
	// Steps are the steps taken so far, in order; Current names the one
	// running ("" between steps and once the change ended).
	Steps   []Step `json:"steps,omitempty"`
	Current string `json:"current,omitempty"`
	// SplitBrainRisk names a former leader that may still accept writes
	// from clients connected to it directly: a forced failover could
	// neither send it the new configuration nor fence it.
	SplitBrainRisk string `json:"split_brain_risk,omitempty"`
	// QuarantinesInForce are the clusters kept from reads when the change
	// ended (or when the arbiter last changed a quarantine), with why: a
	// restarted arbiter puts them back, so a cluster that lacks data is
	// never read from or switched to because the proxy forgot.
	QuarantinesInForce map[string]string `json:"quarantines_in_force,omitempty"`
}

// Running reports whether the change has not ended.
func (c *Change) Running() bool { return c != nil && c.Result == "" }

// Clone returns a deep copy.
func (c *Change) Clone() *Change {
	if c == nil {
		return nil
	}
	cc := *c
	cc.Steps = slices.Clone(c.Steps)
	cc.Salvage = slices.Clone(c.Salvage)
	cc.Quarantined = maps.Clone(c.Quarantined)
	cc.QuarantinesInForce = maps.Clone(c.QuarantinesInForce)
	return &cc
}

// CurrentStep returns the step running now, or the last one taken.
func (c *Change) CurrentStep() (Step, bool) {
	if c == nil || len(c.Steps) == 0 {
		return Step{}, false
	}
	return c.Steps[len(c.Steps)-1], true
}

// changeRun drives the record of one change: every step goes through it,
// and every update is published (Status) and saved (ChangeStore).
type changeRun struct {
	a          *Arbiter
	ch         Change
	heldBefore int64
	saveErr    error
}

// beginChange starts the record of a change; the caller holds the change
// token and ends the run with finish.
func (a *Arbiter) beginChange(ctx context.Context, kind, from, to string, auto bool) *changeRun {
	now := a.mo.Now()
	s := a.m.Snapshot()
	r := &changeRun{a: a, heldBefore: a.m.writesHeld(), ch: Change{
		ID:   fmt.Sprintf("%s-%d-%s", kind, s.Epoch, now.UTC().Format("20060102T150405.000000000")),
		Kind: kind, Auto: auto, From: from, To: to, Epoch: s.Epoch, At: now,
	}}
	r.publish(ctx)
	return r
}

// publish makes the record visible to Status and saves it. A failed save
// is kept: the next step refuses to run (see step).
func (r *changeRun) publish(ctx context.Context) {
	c := r.ch.Clone()
	r.a.mu.Lock()
	r.a.current = c
	r.a.mu.Unlock()
	if err := r.a.opts.Store.Save(ctx, c); err != nil && r.saveErr == nil {
		r.saveErr = fmt.Errorf("saving the record of the %s: %w", r.ch.Kind, err)
		r.a.log.Error("leader change record not saved", "change", r.ch.ID, "err", err)
	}
}

// step runs fn as the named step of the change, talking to cluster (""
// for none) and sending what sent describes; fn returns a summary of the
// answer. The step is saved before fn runs and again with its outcome.
func (r *changeRun) step(ctx context.Context, name, cluster, sent string, fn func() (answer string, err error)) error {
	if r.saveErr != nil {
		return r.saveErr
	}
	r.a.setPhase(stepPhase(name))
	st := Step{Name: name, Cluster: cluster, Sent: sent, Start: r.a.mo.Now()}
	r.ch.Steps = append(r.ch.Steps, st)
	r.ch.Current = name
	r.publish(ctx)
	if r.saveErr != nil {
		r.endStep(ctx, "", r.saveErr)
		return r.saveErr
	}
	answer, err := fn()
	r.endStep(ctx, answer, err)
	return err
}

func (r *changeRun) endStep(ctx context.Context, answer string, err error) {
	st := &r.ch.Steps[len(r.ch.Steps)-1]
	st.End = r.a.mo.Now()
	st.Took = st.End.Sub(st.Start)
	st.Answer = answer
	if err != nil {
		st.Error = err.Error()
	}
	r.ch.Current = ""
	r.publish(ctx)
}

// finish ends the record: result, message, epoch and timings. It tells
// OnChange, keeps the change as the last one and clears the one under
// way.
func (r *changeRun) finish(ctx context.Context, result, msg string) Change {
	a := r.a
	now := a.mo.Now()
	r.ch.Result, r.ch.Message, r.ch.Current = result, msg, ""
	r.ch.Took = now.Sub(r.ch.At)
	r.ch.WritesHeld = a.m.writesHeld() - r.heldBefore
	r.ch.Epoch = a.m.Snapshot().Epoch
	r.ch.QuarantinesInForce = quarantinesOf(a.m.Snapshot())
	c := r.ch.Clone()
	if err := a.opts.Store.Save(ctx, c); err != nil {
		a.log.Error("leader change record not saved", "change", r.ch.ID, "err", err)
	}
	a.mu.Lock()
	a.current = nil
	a.mu.Unlock()
	a.record(*c)
	return *c
}

// quarantinesOf lists the quarantined clusters of s with their reasons.
func quarantinesOf(s *Snapshot) map[string]string {
	var out map[string]string
	for _, c := range s.Clusters {
		if c.Quarantined {
			if out == nil {
				out = map[string]string{}
			}
			out[c.ID] = c.QuarantineReason
		}
	}
	return out
}

// saveQuarantines re-saves the last change with the quarantines in force
// now, after the arbiter changed one outside a change (a rejoin, a gap
// check). The caller holds the change token.
func (a *Arbiter) saveQuarantines(ctx context.Context) {
	a.mu.Lock()
	last := a.last.Clone()
	a.mu.Unlock()
	q := quarantinesOf(a.m.Snapshot())
	if last == nil {
		if len(q) == 0 {
			return
		}
		last = &Change{ID: "quarantines", Kind: KindSettle, Result: ResultOK, At: a.mo.Now(),
			Message: "quarantines in force (no leader change recorded yet)"}
	}
	if maps.Equal(last.QuarantinesInForce, q) {
		return
	}
	last.QuarantinesInForce = q
	if err := a.opts.Store.Save(ctx, last); err != nil {
		a.log.Error("saving the quarantines in force failed", "err", err)
		return
	}
	a.mu.Lock()
	if a.last == nil || a.last.ID == last.ID {
		a.last = last
	}
	a.mu.Unlock()
}

// stepPhase maps a step name onto the phase Status reports.
func stepPhase(name string) string {
	switch name {
	case StepReadConfigs:
		return PhaseReading
	case StepCatchUp:
		return PhaseCatchingUp
	case StepHold:
		return PhaseHolding
	case StepCheckpoints:
		return PhaseChoosing
	case StepPromote:
		return PhasePromoting
	case StepAttach:
		return PhaseAttaching
	case StepDemote, StepDemoteOld:
		return PhaseDemoting
	case StepConfirm, StepCover:
		return PhaseConfirming
	case StepInstall:
		return PhaseInstalling
	case StepSettle:
		return PhaseSettling
	}
	return name
}

// Step names of leader changes, as the record shows them.
const (
	StepReadConfigs = "read-configs" // every reachable cluster's own configuration
	StepCatchUp     = "catch-up"     // switchover: target replicates the last acknowledged write
	StepHold        = "hold"         // writes held, old leader fenced and drained
	StepCheckpoints = "checkpoints"  // failover: how far each candidate replicated
	StepPromote     = "promote"      // force promotion (failover) or the target's configuration (switchover)
	StepDemote      = "demote"       // switchover: the old leader gets the new configuration first
	StepCover       = "cover"        // switchover, before the demotion: the target covers the last acknowledged write
	StepConfirm     = "confirm"      // switchover: the target covers the last acknowledged write
	StepAttach      = "attach"       // failover: the remaining alternatives become targets
	StepDemoteOld   = "demote-old"   // forced failover: the reachable old leader gets the new configuration
	StepInstall     = "install"      // the proxy routes writes to the new leader
	StepSettle      = "settle"       // a change that failed part-way is rolled forward or back
	StepRelease     = "release"      // writes released to the leader of before
	StepDetach      = "detach"       // attach: the leader lets go of a rebuilt former target
)

// describeConfig summarises a replicate configuration for a step record:
// its clusters, the topology edges and whether it force-promotes.
func describeConfig(cfg *commonpb.ReplicateConfiguration, force bool) string {
	var b strings.Builder
	b.WriteString("UpdateReplicateConfiguration(")
	ids := make([]string, 0, len(cfg.GetClusters()))
	for _, c := range cfg.GetClusters() {
		ids = append(ids, c.GetClusterId())
	}
	b.WriteString("clusters [" + strings.Join(ids, " ") + "]")
	var edges []string
	for _, e := range cfg.GetCrossClusterTopology() {
		edges = append(edges, e.GetSourceClusterId()+"->"+e.GetTargetClusterId())
	}
	if len(edges) > 0 {
		b.WriteString(", topology [" + strings.Join(edges, " ") + "]")
	}
	if force {
		b.WriteString(", force_promote")
	}
	b.WriteString(")")
	return b.String()
}
