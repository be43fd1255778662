package topology

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	gobreaker "github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ErrBreakerOpen is returned (wrapped) by Allow when a cluster's breaker
// does not let a request through.
var ErrBreakerOpen = errors.New("circuit breaker open")

// ErrFenced is returned (wrapped) by Allow for a cluster that is leaving
// the leader role (a switchover demoting it, a failover replacing it):
// nothing may be sent to it until the leader change is done.
var ErrFenced = errors.New("cluster fenced during a leader change")

// errDataPathFailure is what a failed data-path request tells the breaker.
var errDataPathFailure = errors.New("data-path request failed")

// StatusError is a Milvus error status a backend answered to one of the
// manager's own calls (e.g. DescribeCollection of a missing collection).
// The proxy can hand Status to its client unchanged.
type StatusError struct {
	Op      string
	Cluster string
	Status  *commonpb.Status
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s on cluster %s: milvus error code %d (%s): %s",
		e.Op, e.Cluster, e.Status.GetCode(), e.Status.GetErrorCode(), e.Status.GetReason())
}

// statusErr returns a *StatusError when st is not a success status.
func statusErr(op, cluster string, st *commonpb.Status) error {
	if st == nil || (st.GetCode() == 0 && st.GetErrorCode() == commonpb.ErrorCode_Success) {
		return nil
	}
	return &StatusError{Op: op, Cluster: cluster, Status: st}
}

// member is the live, per-cluster machinery: connection, breaker and the
// counters shared by every snapshot of the cluster.
type member struct {
	id    string
	order int
	auth  string // base64 of the proxy's token, as the Milvus SDKs send it
	conn  *grpc.ClientConn
	rpc   milvuspb.MilvusServiceClient

	breaker      *gobreaker.TwoStepCircuitBreaker[struct{}]
	breakerState atomic.Value // BreakerState, mirrored by OnStateChange

	// lastGood is when a probe or a data-path request last succeeded
	// (UnixNano); leader loss is measured from it.
	lastGood    atomic.Int64
	outstanding *atomic.Int64
	served      *atomic.Int64

	// fenced makes Allow refuse new data-path requests: the cluster is a
	// leader being demoted, or a lost leader that must never be written
	// to again. inflight counts requests between Allow and their done, so
	// a demotion can wait for the ones already sent. Allow increments
	// inflight before it reads fenced and the fencer sets fenced before
	// it reads inflight, so no request slips past a drain unseen.
	fenced   atomic.Bool
	inflight atomic.Int64
	// ackedWrite is the highest MutationResult.timestamp this proxy saw
	// the cluster acknowledge (ObserveWrite): a switchover waits until
	// the new leader covers it.
	ackedWrite atomic.Uint64
}

// outgoing adds the proxy's own credentials (and the database) to a
// topology call. Never used for client requests.
func (mb *member) outgoing(ctx context.Context, db string) context.Context {
	var kv [4]string
	n := 0
	if mb.auth != "" {
		kv[n], kv[n+1] = "authorization", mb.auth
		n += 2
	}
	if db != "" {
		kv[n], kv[n+1] = "dbname", db
		n += 2
	}
	if n == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv[:n]...)
}

// LeaderLoss reports that the leader has not answered a probe or a request
// for DetectAfter.
type LeaderLoss struct {
	ClusterID   string
	Epoch       uint64
	LastContact time.Time
	DetectedAt  time.Time
}

// Manager owns the topology: discovery, probes, breakers, checkpoints,
// the leader clock and the collection cache. Create it with New, start it
// with Start, stop it with Close.
type Manager struct {
	opts    Options
	log     *slog.Logger
	reg     *registry
	members map[string]*member // fixed after New
	order   []*member
	// tokens are the proxy's own credentials per cluster, for the
	// connection entries of replicate configurations it sends.
	tokens map[string]string

	clock leaderClock
	colls collectionCache

	// holdsStarted counts WaitLeader calls that had to wait for a leader.
	holdsStarted atomic.Int64

	lost          chan LeaderLoss
	kickDiscovery chan struct{}
	kickBreakers  chan struct{}

	ctx       context.Context
	cancel    context.CancelFunc
	goMu      sync.Mutex // guards closing and wg.Add against Close
	closing   bool
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once
}

// New validates the options, creates one gRPC connection per cluster
// (lazily connected) and the registry. Nothing runs until Start.
func New(opts Options) (*Manager, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		opts:          o,
		log:           o.Logger.With("component", "topology"),
		members:       make(map[string]*member, len(o.Clusters)),
		tokens:        make(map[string]string, len(o.Clusters)),
		lost:          make(chan LeaderLoss, 1),
		kickDiscovery: make(chan struct{}, 1),
		kickBreakers:  make(chan struct{}, 1),
		ctx:           ctx,
		cancel:        cancel,
	}
	m.colls.init()
	now := o.Now()
	var records []*clusterRecord
	leaderID := ""
	for i, co := range o.Clusters {
		mb, err := m.newMember(i, co)
		if err != nil {
			m.closeMembers()
			cancel()
			return nil, err
		}
		mb.lastGood.Store(now.UnixNano())
		m.members[co.ID] = mb
		m.tokens[co.ID] = co.Token
		m.order = append(m.order, mb)
		rec := &clusterRecord{
			ID: co.ID, Order: i, URI: co.URI, StaticRole: co.Role,
			HealthReason: "not probed yet",
			Breaker:      BreakerClosed,
			LagReason:    "not polled yet",
		}
		if o.Discovery == DiscoveryStatic {
			rec.Role = co.Role
			if rec.Role == "" {
				rec.Role = RoleAlternative
			}
			if rec.Role == RoleLeader {
				leaderID = co.ID
				rec.LagReason = ""
			} else {
				rec.Target = true
			}
		} else {
			// No traffic until discovery says what the cluster is.
			rec.Role = RoleStandby
			rec.LagReason = "awaiting discovery"
		}
		records = append(records, rec)
	}
	m.reg, err = newRegistry(o.Now, records, m.members)
	if err == nil && leaderID != "" {
		err = m.reg.update(func(tx *regTxn) error {
			return tx.modifyMeta(func(mr *metaRecord) { mr.LeaderID = leaderID })
		})
	}
	if err != nil {
		m.closeMembers()
		cancel()
		return nil, err
	}
	return m, nil
}

// Reconnect backoff of a cluster connection (jittered by 20%).
const (
	reconnectBackoffBase = 100 * time.Millisecond
	reconnectBackoffMax  = time.Second
)

func (m *Manager) newMember(i int, co ClusterOptions) (*member, error) {
	creds := co.TLS
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// Search requests and results can be large; the data path sends
		// them through this same connection.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)),
		// Notice a dead peer between probes on otherwise idle streams.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// A cluster that comes back (a restart, the end of a partition)
		// is a failover candidate or the leader itself: reconnect within
		// about a second instead of gRPC's default backoff (1s growing by
		// 1.6 up to 120s, several seconds after an outage of ten).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  reconnectBackoffBase,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   reconnectBackoffMax,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	dial = append(dial, m.opts.DialOptions...)
	conn, err := grpc.NewClient(stripScheme(co.URI), dial...)
	if err != nil {
		return nil, fmt.Errorf("topology: connecting to cluster %q at %s: %w", co.ID, co.URI, err)
	}
	mb := &member{
		id: co.ID, order: i, conn: conn,
		rpc:         milvuspb.NewMilvusServiceClient(conn),
		outstanding: new(atomic.Int64),
		served:      new(atomic.Int64),
	}
	if co.Token != "" {
		mb.auth = base64.StdEncoding.EncodeToString([]byte(co.Token))
	}
	mb.breakerState.Store(BreakerClosed)
	mb.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        co.ID,
		MaxRequests: m.opts.BreakerHalfOpenRequests,
		Timeout:     m.opts.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= m.opts.BreakerFailures
		},
		// Called with the breaker's own lock held: record and hand the
		// publication to the breaker loop, never call back into the
		// breaker from here.
		OnStateChange: func(_ string, from, to gobreaker.State) {
			mb.breakerState.Store(breakerState(to))
			m.log.Info("circuit breaker changed", "cluster", mb.id, "from", from.String(), "to", to.String())
			select {
			case m.kickBreakers <- struct{}{}:
			default:
			}
		},
	})
	return mb, nil
}

func stripScheme(uri string) string {
	for _, p := range []string{"http://", "https://", "tcp://", "grpc://"} {
		if strings.HasPrefix(uri, p) {
			return strings.TrimSuffix(strings.TrimPrefix(uri, p), "/")
		}
	}
	return uri
}

func breakerState(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	default:
		return BreakerClosed
	}
}

// Start launches the manager's goroutines: discovery, one prober per
// cluster, the checkpoint poller, the leader clock, and the watcher that
// publishes breaker changes and detects leader loss. Calling it twice is a
// no-op. Close stops them.
func (m *Manager) Start() {
	m.startOnce.Do(func() {
		// Loss is measured from the start, not from New.
		now := m.opts.Now().UnixNano()
		for _, mb := range m.order {
			mb.lastGood.Store(now)
		}
		m.goLoop(m.discoveryLoop)
		for _, mb := range m.order {
			m.goLoop(func(ctx context.Context) { m.probeLoop(ctx, mb) })
		}
		m.goLoop(m.checkpointLoop)
		m.goLoop(m.clockLoop)
		m.goLoop(m.watchLoop)
	})
}

// Run starts the manager and blocks until ctx is done, then closes it.
func (m *Manager) Run(ctx context.Context) error {
	m.Start()
	select {
	case <-ctx.Done():
	case <-m.ctx.Done():
	}
	return m.Close()
}

func (m *Manager) goLoop(fn func(ctx context.Context)) { m.spawn(fn) }

// spawn runs fn in a goroutine owned by the manager; false once Close has
// begun (the goroutine is not started).
func (m *Manager) spawn(fn func(ctx context.Context)) bool {
	m.goMu.Lock()
	defer m.goMu.Unlock()
	if m.closing {
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fn(m.ctx)
	}()
	return true
}

// Close stops every goroutine and closes the connections. The last
// snapshot stays readable.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.goMu.Lock()
		m.closing = true
		m.goMu.Unlock()
		m.cancel()
		m.wg.Wait()
		m.closeMembers()
	})
	return nil
}

func (m *Manager) closeMembers() {
	for _, mb := range m.order {
		_ = mb.conn.Close()
	}
}

// Snapshot returns the current routing view. Lock-free.
func (m *Manager) Snapshot() *Snapshot { return m.reg.snap.Load() }

// Changed returns a channel closed at the next publication. Take it before
// reading the Snapshot to never miss a change.
func (m *Manager) Changed() <-chan struct{} { return *m.reg.changed.Load() }

// LeaderLost delivers a report each time the leader is declared lost
// (once per loss; a newer report replaces one nobody read).
func (m *Manager) LeaderLost() <-chan LeaderLoss { return m.lost }

// LeaderLastContact returns when the current leader last answered a probe
// or a request successfully (zero without a leader).
func (m *Manager) LeaderLastContact() time.Time {
	var id string
	m.reg.read(func(tx *regTxn) { id = tx.meta().LeaderID })
	mb := m.members[id]
	if mb == nil {
		return time.Time{}
	}
	return time.Unix(0, mb.lastGood.Load())
}

// Rediscover asks the discovery loop to run now.
func (m *Manager) Rediscover() {
	select {
	case m.kickDiscovery <- struct{}{}:
	default:
	}
}

// Allow asks the cluster's breaker whether a data-path request may go.
// On success the caller must call done exactly once with the outcome:
// success means the cluster answered (a Milvus error status is still an
// answer); false means a transport failure or timeout. A success also
// counts as contact for leader-loss detection. The error wraps
// ErrBreakerOpen when the breaker refuses.
//
// A fenced cluster (a leader being demoted, or a lost one) refuses too,
// at once, with an error that wraps ErrFenced: the request was never
// sent, so the caller may send it again. Allow never blocks: a write
// waits for the leader change to end in WaitWritable, which treats a
// fenced leader as not writable.
func (m *Manager) Allow(clusterID string) (done func(success bool), err error) {
	mb := m.members[clusterID]
	if mb == nil {
		return nil, fmt.Errorf("topology: unknown cluster %q", clusterID)
	}
	mb.inflight.Add(1)
	if mb.fenced.Load() {
		mb.inflight.Add(-1)
		return nil, fmt.Errorf("topology: cluster %q: %w", clusterID, ErrFenced)
	}
	d, err := mb.breaker.Allow()
	if err != nil {
		mb.inflight.Add(-1)
		return nil, fmt.Errorf("topology: cluster %q: %w (%v)", clusterID, ErrBreakerOpen, err)
	}
	return func(success bool) {
		mb.inflight.Add(-1)
		if success {
			mb.lastGood.Store(m.opts.Now().UnixNano())
			d(nil)
			return
		}
		d(errDataPathFailure)
	}, nil
}

// Outcomes of a write held while no leader was available, as reported to
// HoldObserver.WriteHoldEnded; the same values as telemetry's outcome
// label (telemetry.HoldReleased...), so its Metrics can observe directly.
const (
	HoldReleased = "released"  // a leader appeared and the write went on
	HoldTimedOut = "timed_out" // WriteHold ran out; Unavailable
	HoldCanceled = "canceled"  // the client gave up first
)

// HoldObserver learns about writes held while there is no leader (the
// telemetry's Metrics fits).
type HoldObserver interface {
	WriteHoldStarted(ctx context.Context)
	WriteHoldEnded(ctx context.Context, outcome string, waited time.Duration)
}

func (m *Manager) holdEnded(ctx context.Context, w *WriteWait, outcome string) {
	if o := m.opts.HoldObserver; o != nil && !w.Read {
		o.WriteHoldEnded(context.WithoutCancel(ctx), outcome, m.opts.Now().Sub(w.start))
	}
}

// ObserveWrite records a write the cluster acknowledged with the given
// MutationResult.timestamp. A switchover waits until the new leader has
// replicated the old leader's highest one on every pchannel; for the
// current leader it also raises the clock's floor.
func (m *Manager) ObserveWrite(clusterID string, ts uint64) {
	mb := m.members[clusterID]
	if mb == nil || ts == 0 {
		return
	}
	for {
		cur := mb.ackedWrite.Load()
		if ts <= cur || mb.ackedWrite.CompareAndSwap(cur, ts) {
			break
		}
	}
	if s := m.Snapshot(); s.Leader != nil && s.Leader.ID == clusterID {
		m.clock.observe(ts)
	}
}

func (m *Manager) noLeaderError(s *Snapshot, held time.Duration, what string) error {
	held = held.Round(time.Millisecond)
	if s.FailingOver {
		why := s.HoldReason
		if s.LostLeader != "" {
			why = fmt.Sprintf("leader %q: %s", s.LostLeader, why)
		}
		// The hold's reason says why (a leader change, or the etcd
		// arbiter's fence): the words around it must not guess.
		return status.Errorf(codes.Unavailable, "no writable leader: writes held for %s (%s); %s held for %s",
			m.opts.Now().Sub(s.HoldSince).Round(time.Millisecond), why, what, held)
	}
	why := "discovery has not found one yet"
	if s.DiscoveryError != "" {
		why = s.DiscoveryError
	}
	return status.Errorf(codes.Unavailable, "no leader: %s; %s held for %s", why, what, held)
}

// LeaderNow returns the calibrated estimate of the leader's current hybrid
// timestamp: monotonic, never below a timestamp seen from the leader, and
// an upper bound of the leader's clock (see leaderClock). Lock-free.
func (m *Manager) LeaderNow() uint64 { return m.clock.now(m.opts.Now()) }

// LeaderClockCalibrated reports whether LeaderNow is extrapolated from a
// timestamp of the current leader (false: the local clock stands in, and
// a caller that needs a bound should use AllocLeaderTimestamp).
func (m *Manager) LeaderClockCalibrated() bool { return m.clock.calibrated() }

// ObserveLeaderTimestamp feeds a timestamp the leader returned (e.g. a
// MutationResult.timestamp) into the clock, so LeaderNow never goes below it.
func (m *Manager) ObserveLeaderTimestamp(ts uint64) { m.clock.observe(ts) }

// AllocLeaderTimestamp asks the leader for a fresh timestamp.
func (m *Manager) AllocLeaderTimestamp(ctx context.Context) (uint64, error) {
	s := m.Snapshot()
	if s.Leader == nil {
		return 0, status.Error(codes.Unavailable, "no leader to allocate a timestamp from")
	}
	return m.allocTimestamp(ctx, m.members[s.Leader.ID], s.Epoch)
}

func (m *Manager) allocTimestamp(ctx context.Context, mb *member, epoch uint64) (uint64, error) {
	t0 := m.opts.Now()
	resp, err := mb.rpc.AllocTimestamp(mb.outgoing(ctx, ""), &milvuspb.AllocTimestampRequest{})
	if err == nil {
		err = statusErr("AllocTimestamp", mb.id, resp.GetStatus())
	}
	if err != nil {
		return 0, fmt.Errorf("topology: AllocTimestamp on leader %q: %w", mb.id, err)
	}
	ts := resp.GetTimestamp()
	m.clock.calibrate(epoch, t0, ts)
	mb.lastGood.Store(m.opts.Now().UnixNano())
	return ts, nil
}
