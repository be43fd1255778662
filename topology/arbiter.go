package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
)

// The Arbiter is the failover/switchover/demotion state machine. The
// Manager detects and records; the Arbiter decides and drives Milvus's
// own replication protocol (Milvus 2.6 CDC: UpdateReplicateConfiguration,
// force_promote and GetReplicateInfo in milvus-proto's milvus.proto; the
// Milvus documentation's cdc_failover and switchover guides;
// docs/architecture.md, "A failover's path"):
//
//	steady ──leader lost──▶ lost ──auto, or `failover --to`──▶ holding
//	holding ──▶ promoting (force_promote on the chosen alternative)
//	        ──▶ attaching (new configuration to the remaining alternatives)
//	        ──▶ installing ──▶ steady
//	steady ──`failover --to` with the old leader answering──▶ reading
//	        (every cluster's own configuration) ──▶ holding ──▶ demoting (old
//	        leader first) ──▶ promoting (target, from the old leader's
//	        stream; by force if it does not take over) ──▶ installing ──▶ steady
//	steady ──`switchover --to`──▶ catching-up ──▶ reading ──▶ holding ──▶
//	        confirming (checkpoints cover the last acknowledged write; if
//	        not within the catch-up timeout, rolled back: nothing changed)
//	        ──▶ demoting (old leader first) ──▶ confirming again ──▶
//	        promoting (target) ──▶ installing ──▶ steady
//	steady ──`attach --cluster`──▶ reading ──▶ the cluster, then the leader,
//	        get the configuration naming it a target ──▶ steady
//	steady ──former leader, unreachable alternative, or a cluster that
//	        takes writes on its own healthy again──▶ rejoining (salvage
//	        report, then a quarantined target of the leader) ──▶ steady
//
// Every change is recorded step by step (Change, Step) and saved to a
// ChangeStore before and after each step; a restarted arbiter closes an
// interrupted one and settles it from the clusters' own configurations.
// Any failure before a promotion takes effect releases the held writes
// and leaves the old topology; a switchover whose old leader already
// demoted itself but whose target never confirmed stays "stuck", with
// writes held, until it is retried, forced, or settled by the arbiter
// after detect_after (rolled forward or back from what the clusters say).
// One change runs at a time; another waits for it up to QueueWait.

// Failover modes (config failover.mode).
const (
	ModeAuto   = "auto"
	ModeManual = "manual"
)

// Errors of leader changes; the admin adapter maps them onto HTTP codes.
var (
	// ErrUnknownCluster: the target is not a configured cluster.
	ErrUnknownCluster = errors.New("unknown cluster")
	// ErrRefused: the request is understood but not allowed now.
	ErrRefused = errors.New("refused")
)

// Kinds of leader change.
const (
	KindFailover   = "failover"
	KindSwitchover = "switchover"
)

// Results of a leader change.
const (
	ResultOK      = "ok"
	ResultRefused = "refused"
	ResultFailed  = "failed"
)

// Phases of the state machine, as Status reports them.
const (
	PhaseSteady     = "steady"
	PhaseLost       = "leader lost; waiting for `failover --to`"
	PhaseHolding    = "holding writes"
	PhaseCatchingUp = "waiting for the target to catch up"
	PhaseChoosing   = "choosing the alternative that replicated furthest"
	PhasePromoting  = "promoting"
	PhaseAttaching  = "attaching the remaining alternatives"
	PhaseDemoting   = "demoting the old leader"
	PhaseConfirming = "confirming the target covers the last acknowledged write"
	PhaseInstalling = "installing the new leader"
	PhaseStuck      = "stuck"
	PhaseRejoining  = "rejoining a returning cluster"
	PhaseReading    = "reading every reachable cluster's replicate configuration"
	PhaseSettling   = "settling a change that failed part-way from the clusters' own configurations"
)

// ArbiterOptions configure an Arbiter. Zero durations mean defaults.
type ArbiterOptions struct {
	// Mode is ModeAuto (default) or ModeManual.
	Mode string
	// CallTimeout bounds one Milvus call of a leader change (default 5s).
	CallTimeout time.Duration
	// CatchUpTimeout is how long a switchover waits, before it holds
	// writes, for the target to replicate the leader's last acknowledged
	// write (default 5s); a target further behind is refused.
	CatchUpTimeout time.Duration
	// DrainTimeout bounds the wait for requests already in flight to a
	// leader being demoted (default 1s).
	DrainTimeout time.Duration
	// RejoinSettle is how long a returning former leader's own CDC gets to
	// stop after it is demoted, before the leader's configuration names it
	// (default 2s). Milvus's secondaries refuse a stream from a cluster
	// that is not their source; one that did not would otherwise take
	// the former leader's unreplicated messages once the new configuration
	// lists it.
	RejoinSettle time.Duration
	// QueueWait bounds how long an operator's change waits for the one
	// under way (or a returning cluster's rejoin) before it is refused
	// with the reason (default 30s).
	QueueWait time.Duration
	// RetryBackoff is the first wait after a failed automatic failover or
	// rejoin (default 1s, doubling up to 30s).
	RetryBackoff time.Duration
	// OnChange, when set, is called after every leader change attempt
	// (metrics). It must not block.
	OnChange func(Change)
	// Store keeps the record of the change under way (default: in
	// memory, a MemoryChangeStore).
	Store ChangeStore
	// Decides, when set, says whether this proxy may decide now (several
	// proxies elect one through the etcd arbiter). While it is false the
	// arbiter acts on no leader loss, looks after no returning cluster
	// and refuses operators' changes; a loss reported meanwhile is acted
	// on once it turns true, if it still stands. nil: always.
	Decides func() bool
	// Logger defaults to the manager's.
	Logger *slog.Logger
}

// SalvageReport is what a forced promotion left behind.
type SalvageReport struct {
	Epoch     uint64    `json:"epoch"`
	OldLeader string    `json:"old_leader"`
	NewLeader string    `json:"new_leader"`
	At        time.Time `json:"at"`
	// Checkpoints are the new leader's salvage checkpoint (time ticks of
	// the old leader's pchannels).
	Checkpoints []uint64 `json:"checkpoints,omitempty"`
	// OldLeaderReturned is set once the old leader is back and demoted.
	OldLeaderReturned bool      `json:"old_leader_returned"`
	ReturnedAt        time.Time `json:"returned_at,omitzero"`
	// Unreplicated is what DumpMessages on the old leader returned past
	// the salvage checkpoint; nil until the old leader returns.
	Unreplicated *Unreplicated `json:"unreplicated,omitempty"`
	// Error says what went wrong reading or demoting the old leader.
	Error string `json:"error,omitempty"`
}

// PendingCluster is a cluster the arbiter waits for: a former leader to
// rejoin, or an alternative that was unreachable during a failover.
type PendingCluster struct {
	ID        string `json:"id"`
	Why       string `json:"why"`
	LastError string `json:"last_error,omitempty"`
}

// ArbiterStatus is the arbiter's state for status and the admin API.
type ArbiterStatus struct {
	Mode  string `json:"mode"`
	Phase string `json:"phase"`
	// Current is the change under way, with the step it is in; nil when
	// none runs.
	Current    *Change          `json:"current,omitempty"`
	LastChange *Change          `json:"last_change,omitempty"`
	Salvage    []SalvageReport  `json:"salvage,omitempty"`
	Pending    []PendingCluster `json:"pending,omitempty"`
	// SplitBrainRisk lists former leaders that a forced failover could
	// not demote while they were reachable, with why: clients connected
	// to them directly may still write there.
	SplitBrainRisk []string `json:"split_brain_risk,omitempty"`
}

// pendingKind says what the arbiter waits to do with a cluster.
type pendingKind int

const (
	// pendingFormerLeader: report its salvage and demote it to a target.
	pendingFormerLeader pendingKind = iota
	// pendingUnevaluated: it was unreachable during a failover; compare
	// it with the salvage checkpoint, then attach or quarantine it.
	pendingUnevaluated
)

type pendingCluster struct {
	id   string
	kind pendingKind
	// source is the leader it replicated from when the failover
	// happened; salvage the promoted leader's salvage checkpoint of
	// source's pchannels; report indexes salvage reports (former leader).
	source  string
	salvage []*commonpb.ReplicateCheckpoint
	entry   *commonpb.MilvusCluster // its replicate-configuration entry
	report  int
	lastErr string
	backoff time.Duration
	nextTry time.Time
}

// gapCheck is an alternative attached to a new leader while it stood
// behind the salvage checkpoint: replication from the new leader starts
// at the reconfiguration, so whatever it lacked between its own
// checkpoint and the salvage checkpoint never reaches it. It is
// quarantined until the former leader returns and DumpMessages shows the
// gap held no data.
type gapCheck struct {
	id      string
	source  string
	from    []*commonpb.ReplicateCheckpoint // its checkpoints
	salvage []uint64
}

// stuckSwitchover is a switchover whose old leader demoted itself but
// whose target has not confirmed.
// bar is the old leader's last acknowledged write the target was
// confirmed to cover (0: unknown).
type stuckSwitchover struct {
	from, to string
	bar      uint64
}

// Arbiter drives leader changes for one Manager. Create it with
// NewArbiter and Start it after the manager; it stops with the manager.
type Arbiter struct {
	m    control
	mo   Options // the manager's settings
	opts ArbiterOptions
	log  *slog.Logger
	sem  chan struct{} // one leader change or rejoin at a time

	mu      sync.Mutex
	phase   string
	current *Change // the change under way (its record), nil when none
	busy    string  // what holds the change token ("" when free)
	last    *Change
	reports []SalvageReport
	pending map[string]*pendingCluster
	gaps    map[string]*gapCheck
	stuck   *stuckSwitchover
	// stuckSince is when the switchover got stuck (settle waits
	// DetectAfter before it acts).
	stuckSince time.Time
	// splitBrain: former leaders a forced failover could not demote
	// while they were reachable, with why.
	splitBrain map[string]string
	// emptyShape: clusters that took force_promote with an empty
	// configuration (the later Milvus request shape).
	emptyShape map[string]bool

	// bgCancel cancels background configuration calls (sendInBackground)
	// still waiting for their answer.
	bgMu     sync.Mutex
	bgSeq    uint64
	bgCancel map[uint64]context.CancelFunc

	startOnce sync.Once
}

// NewArbiter returns an arbiter for m.
func NewArbiter(m *Manager, opts ArbiterOptions) (*Arbiter, error) {
	switch opts.Mode {
	case "":
		opts.Mode = ModeAuto
	case ModeAuto, ModeManual:
	default:
		return nil, fmt.Errorf("topology: unknown failover mode %q (want %q or %q)", opts.Mode, ModeAuto, ModeManual)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.CallTimeout, 5*time.Second)
	def(&opts.CatchUpTimeout, 5*time.Second)
	def(&opts.DrainTimeout, time.Second)
	def(&opts.RejoinSettle, 2*time.Second)
	def(&opts.RetryBackoff, time.Second)
	def(&opts.QueueWait, 30*time.Second)
	if opts.Logger == nil {
		opts.Logger = m.settings().Logger
	}
	if opts.Store == nil {
		opts.Store = &MemoryChangeStore{}
	}
	return &Arbiter{
		m: m, mo: m.settings(), opts: opts,
		log:        opts.Logger.With("component", "arbiter"),
		sem:        make(chan struct{}, 1),
		phase:      PhaseSteady,
		pending:    map[string]*pendingCluster{},
		gaps:       map[string]*gapCheck{},
		splitBrain: map[string]string{},
		emptyShape: map[string]bool{},
		bgCancel:   map[uint64]context.CancelFunc{},
	}, nil
}

// Start runs the arbiter's loop (leader-loss reports, returning clusters)
// as one of the manager's goroutines; it stops when the manager closes.
func (a *Arbiter) Start() {
	a.startOnce.Do(func() { a.m.spawn(a.loop) })
}

// Status returns the arbiter's state. It never blocks on the network.
func (a *Arbiter) Status() ArbiterStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := ArbiterStatus{Mode: a.opts.Mode, Phase: a.phase, Current: a.current.Clone()}
	if a.last != nil {
		c := *a.last
		st.LastChange = &c
	}
	st.Salvage = slices.Clone(a.reports)
	for _, p := range a.pending {
		why := "former leader: report its salvage and demote it to a target once it is healthy"
		if p.kind == pendingUnevaluated {
			why = "unreachable during a failover: compare it with the salvage checkpoint once it is healthy"
		}
		st.Pending = append(st.Pending, PendingCluster{ID: p.id, Why: why, LastError: p.lastErr})
	}
	for _, g := range a.gaps {
		st.Pending = append(st.Pending, PendingCluster{ID: g.id,
			Why: fmt.Sprintf("attached behind the salvage checkpoint: quarantined until %s returns and shows what it missed", g.source)})
	}
	for _, id := range slices.Sorted(maps.Keys(a.splitBrain)) {
		st.SplitBrainRisk = append(st.SplitBrainRisk, a.splitBrain[id])
	}
	slices.SortFunc(st.Pending, func(x, y PendingCluster) int {
		if x.ID < y.ID {
			return -1
		}
		if x.ID > y.ID {
			return 1
		}
		return 0
	})
	return st
}

func (a *Arbiter) setPhase(p string) {
	a.mu.Lock()
	changed := a.phase != p
	a.phase = p
	a.mu.Unlock()
	if changed {
		a.log.Debug("arbiter phase", "phase", p)
	}
}

// acquire takes the one-change-at-a-time token without waiting; what
// names the work for whoever waits (busy).
func (a *Arbiter) acquire(what string) bool {
	select {
	case a.sem <- struct{}{}:
		a.mu.Lock()
		a.busy = what
		a.mu.Unlock()
		return true
	default:
		return false
	}
}

// acquireWait takes the token, waiting up to QueueWait for the change or
// rejoin that holds it; the error (ErrRefused) says what held it.
func (a *Arbiter) acquireWait(ctx context.Context, what string) error {
	if a.acquire(what) {
		return nil
	}
	t := time.NewTimer(a.opts.QueueWait)
	defer t.Stop()
	for {
		select {
		case a.sem <- struct{}{}:
			a.mu.Lock()
			a.busy = what
			a.mu.Unlock()
			return nil
		case <-t.C:
			return fmt.Errorf("%w: %s is under way and did not end within %s (failover queue wait); see `milvus-ha-proxy status`", ErrRefused, a.busyWith(), a.opts.QueueWait)
		case <-ctx.Done():
			return fmt.Errorf("%w: %s is under way: %w", ErrRefused, a.busyWith(), ctx.Err())
		}
	}
}

// busyWith describes the change holding the token, with its step.
func (a *Arbiter) busyWith() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	what := a.busy
	if what == "" {
		what = "another leader change"
	}
	if c := a.current; c != nil {
		if st, ok := c.CurrentStep(); ok {
			what += " (step " + st.Name + ")"
		}
	}
	return what
}

func (a *Arbiter) release() {
	a.mu.Lock()
	a.busy = ""
	a.mu.Unlock()
	<-a.sem
}

// record stores a finished attempt and tells OnChange.
func (a *Arbiter) record(c Change) {
	a.mu.Lock()
	cc := c
	a.last = &cc
	a.mu.Unlock()
	if a.opts.OnChange != nil {
		a.opts.OnChange(c)
	}
}

// loop reacts to leader loss and looks after returning clusters.
func (a *Arbiter) loop(ctx context.Context) {
	t := time.NewTicker(a.mo.ProbeInterval)
	defer t.Stop()
	backoff := a.opts.RetryBackoff
	// deferred is a loss reported while another proxy decided; resumed
	// says whether the recorded change was looked at since this proxy
	// last began to decide (it may have been left unfinished by another).
	var deferred *LeaderLoss
	resumed := false
	decides := func() bool {
		if !a.decides() {
			resumed = false
			return false
		}
		if !resumed {
			resumed = true
			a.resume(ctx)
		}
		return true
	}
	for {
		var ev LeaderLoss
		if decides() && deferred != nil {
			ev, deferred = *deferred, nil
		} else {
			select {
			case <-ctx.Done():
				return
			case ev = <-a.m.LeaderLost():
			case <-t.C:
				if decides() {
					a.tick(ctx)
				}
				continue
			}
			if !decides() {
				deferred = &ev
				continue
			}
		}
		if a.opts.Mode != ModeAuto {
			a.setPhase(PhaseLost)
			a.log.Warn("leader lost; failover.mode is manual: waiting for `milvus-ha-proxy failover --to ID`",
				"leader", ev.ClusterID, "last_contact", ev.LastContact, "epoch", ev.Epoch)
			continue
		}
		if _, err := a.autoFailover(ctx, ev); err != nil && !errors.Is(err, errNotNeeded) {
			a.log.Error("automatic failover failed; retrying", "lost", ev.ClusterID, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			// Report the loss again if it still stands.
			a.m.rearmLossDetection()
			continue
		}
		backoff = a.opts.RetryBackoff
	}
}

func (a *Arbiter) decides() bool { return a.opts.Decides == nil || a.opts.Decides() }

// errNotDeciding refuses an operator's change on a proxy that does not
// decide (the admin API forwards it to the one that does).
func (a *Arbiter) errNotDeciding() error {
	if a.decides() {
		return nil
	}
	return fmt.Errorf("%w: this proxy does not decide leader changes now (another proxy of the etcd arbiter does, or this one cannot reach etcd)", ErrRefused)
}

// errNotNeeded: the leader recovered before the failover began.
var errNotNeeded = errors.New("leader is no longer lost")

// tick clears a stale "lost" phase and looks after returning clusters.
func (a *Arbiter) tick(ctx context.Context) {
	s := a.m.Snapshot()
	a.mu.Lock()
	if a.phase == PhaseLost && (s.Leader == nil || s.LeaderLostAt.IsZero()) && !s.FailingOver {
		a.phase = PhaseSteady
	}
	a.mu.Unlock()
	a.settle(ctx, s)
	a.reconcile(ctx, a.m.Snapshot())
}

// autoFailover reacts to a leader-loss report in auto mode.
func (a *Arbiter) autoFailover(ctx context.Context, ev LeaderLoss) (Change, error) {
	if err := a.acquireWait(ctx, "an automatic failover from "+ev.ClusterID); err != nil {
		return Change{}, err
	}
	defer a.release()
	s := a.m.Snapshot()
	if s.Leader == nil || s.Leader.ID != ev.ClusterID || s.Epoch != ev.Epoch || s.LeaderLostAt.IsZero() {
		return Change{}, errNotNeeded
	}
	a.cancelBackground()
	return a.failover(ctx, s, ev.ClusterID, "", true)
}

// Failover force-promotes to (an operator's `failover --to`): the leader is
// lost, or the operator says so. Writes are held meanwhile.
func (a *Arbiter) Failover(ctx context.Context, to string) (Change, error) {
	if err := a.errNotDeciding(); err != nil {
		return a.refusedErr(KindFailover, "", to, err)
	}
	a.awaitDiscovery(ctx)
	if err := a.acquireWait(ctx, "a failover to "+to); err != nil {
		return a.refusedErr(KindFailover, "", to, err)
	}
	defer a.release()
	s := a.m.Snapshot()
	from := ""
	switch {
	case s.Leader != nil:
		from = s.Leader.ID
	case s.FailingOver:
		from = s.LostLeader
	default:
		// No leader and no change under way: discovery found several
		// clusters that could be primary (split brain) or none.
		return a.nameLeader(ctx, to)
	}
	if err := a.checkTarget(s, to); err != nil {
		return a.refusedErr(KindFailover, from, to, err)
	}
	if from == "" {
		return a.refused(KindFailover, from, to, "no leader is known to fail over from; check discovery in `milvus-ha-proxy status`")
	}
	if from == to {
		return a.refused(KindFailover, from, to, to+" is already the leader")
	}
	c := s.Cluster(to)
	if !c.Healthy {
		return a.refused(KindFailover, from, to, fmt.Sprintf("%s is not healthy: %s", to, c.HealthReason))
	}
	a.cancelBackground()
	if old := s.Cluster(from); s.Leader != nil && old.Healthy && s.LeaderLostAt.IsZero() && pchannelCount(s, c) > 0 {
		return a.failoverReachable(ctx, s, from, to)
	}
	return a.failover(ctx, s, from, to, false)
}

// awaitDiscovery waits, when no leader is known and no change is under
// way, for discovery to name one: right after the proxy starts its first
// round may still be reading the clusters' configurations, and an
// operator's change is answered from that round instead of "no leader is
// known". The wait is bounded by two discovery rounds and detect_after
// (and by QueueWait and ctx); a split brain, or clusters that name no
// source, end it with no leader still.
func (a *Arbiter) awaitDiscovery(ctx context.Context) {
	s := a.m.Snapshot()
	if s.Leader != nil || s.FailingOver {
		return
	}
	bound := min(2*(a.mo.DiscoveryInterval+max(a.mo.PollTimeout, a.mo.ProbeTimeout))+a.mo.DetectAfter, a.opts.QueueWait)
	t := time.NewTimer(bound)
	defer t.Stop()
	a.m.Rediscover()
	for {
		ch := a.m.Changed()
		if s := a.m.Snapshot(); s.Leader != nil || s.FailingOver || strings.HasPrefix(s.DiscoveryError, splitBrainPrefix) {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// checkTarget validates a target named by an operator.
func (a *Arbiter) checkTarget(s *Snapshot, to string) error {
	c := s.Cluster(to)
	if c == nil {
		return fmt.Errorf("%w %q (configured: %s)", ErrUnknownCluster, to, strings.Join(a.m.clusterIDs(), ", "))
	}
	if c.Quarantined {
		return fmt.Errorf("%w: %s is quarantined: %s", ErrRefused, to, c.QuarantineReason)
	}
	if c.Role != RoleLeader && !c.Target {
		return fmt.Errorf("%w: %s is not a replication target of the leader: %s", ErrRefused, to, c.LagReason)
	}
	return nil
}

func (a *Arbiter) refused(kind, from, to, msg string) (Change, error) {
	return a.refusedErr(kind, from, to, fmt.Errorf("%w: %s", ErrRefused, msg))
}

func (a *Arbiter) refusedErr(kind, from, to string, err error) (Change, error) {
	c := Change{Kind: kind, From: from, To: to, Epoch: a.m.Snapshot().Epoch, Result: ResultRefused, Message: err.Error(), At: a.mo.Now()}
	if a.opts.OnChange != nil {
		a.opts.OnChange(c)
	}
	return c, err
}

// known reports whether id is a configured cluster.
func (a *Arbiter) known(id string) bool { return slices.Contains(a.m.clusterIDs(), id) }

// callCtx bounds one Milvus call.
func (a *Arbiter) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.opts.CallTimeout)
}
