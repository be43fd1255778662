// Package etcdarbiter makes etcd the arbiter of several milvus-ha-proxy
// processes in front of the same Milvus clusters, through the official
// client (go.etcd.io/etcd/client/v3) and its concurrency package: no
// consensus of its own.
//
//   - Every proxy holds an etcd lease (concurrency.Session) and campaigns
//     in one concurrency.Election; the oldest candidate decides. Only the
//     decider acts on a lost leader and runs failovers, switchovers,
//     demotions and attaches; the others forward admin requests to it.
//   - The decider writes the topology (leader, roles, epoch, the change
//     under way and its steps) as one Document, in a transaction that
//     succeeds only while its election key exists. Every proxy watches the
//     document and routes by it.
//   - Fencing: a proxy judges its lease from its own keepalives. It stops
//     deciding a quarter of the lease before the lease can have expired
//     (another proxy may be elected only after it expires), and once it
//     cannot show the lease is alive it holds writes (up to
//     failover.write_hold, then refuses them): it can no longer tell
//     whether another proxy moved the leader. Reads go on by the last
//     document it read.
package etcdarbiter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// ErrNotDecider is returned (wrapped) when this proxy tries to change the
// topology document without deciding: it was never elected, its lease
// may have expired, or etcd says its election key is gone.
var ErrNotDecider = errors.New("this proxy does not decide")

// Arbiter is one proxy's membership in the etcd arbiter. Create it with
// New, Start it, stop it with Close.
type Arbiter struct {
	opts Options
	cli  *clientv3.Client
	log  *slog.Logger
	ttl  time.Duration

	// validUntil is the end of the lease as this proxy's last keepalive
	// proved it (UnixNano of the keepalive's start plus the TTL etcd
	// granted); 0 before the first one.
	validUntil atomic.Int64
	deciding   atomic.Bool

	mu sync.Mutex
	// elected: this proxy won the election in the current session;
	// election is its key.
	elected  bool
	election *concurrency.Election
	lease    clientv3.LeaseID
	// doc is the last document read from etcd (nil: none exists yet),
	// docLoaded whether etcd was ever read; written what this proxy last
	// wrote while deciding.
	doc       *Document
	docRev    int64 // mod revision of doc in etcd
	docLoaded bool
	written   *Document
	proxies   []ProxyRecord
	decider   string
	lastErr   string
	// lostSince: when the lease stopped being provably alive (zero while
	// it is); fenceReason the hold reason while writes are fenced.
	lostSince   time.Time
	fenceReason string
	// docHold: the hold in force is the document's (a change under way
	// on the decider).
	docHold bool

	pubMu sync.Mutex // one document write at a time
	// followMu: one application of the document to the local topology at
	// a time (the watch and the guard both apply it), always of the
	// newest document.
	followMu sync.Mutex

	kick      chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once
}

// New connects the etcd client (lazily: no call is made until Start).
func New(opts Options) (*Arbiter, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		Username:    o.Username,
		Password:    o.Password,
		TLS:         o.TLS,
		DialTimeout: o.DialTimeout,
		// Keepalives on the gRPC connection notice a silent peer (a
		// partition that drops packets) within the lease.
		DialKeepAliveTime:    o.LeaseTTL / 2,
		DialKeepAliveTimeout: o.LeaseTTL / 4,
		// The client logs through zap; its retries are what this package
		// reports through slog, with context.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcdarbiter: etcd client for %s: %w", strings.Join(o.Endpoints, ","), err)
	}
	return &Arbiter{
		opts: o, cli: cli, ttl: o.LeaseTTL,
		log:  o.Logger.With("component", "etcd-arbiter", "proxy", o.ProxyID),
		kick: make(chan struct{}, 1),
	}, nil
}

// SetIdentity replaces the proxy id and admin address given in Options,
// before Start (an admin listener on port 0 knows its port only once
// bound).
func (a *Arbiter) SetIdentity(proxyID, address string) {
	if proxyID != "" {
		a.opts.ProxyID = proxyID
		a.log = a.opts.Logger.With("component", "etcd-arbiter", "proxy", proxyID)
	}
	if address != "" {
		a.opts.Address = address
	}
}

// Start runs the session (lease, election, heartbeat), the document
// watch and the guard that judges the lease and fences writes.
func (a *Arbiter) Start() {
	a.startOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		a.cancel = cancel
		// Until etcd has been read, this proxy cannot confirm the leader.
		a.fence(a.opts.Now(), "the etcd arbiter has not been reached yet")
		for _, fn := range []func(context.Context){a.sessionLoop, a.watchLoop, a.guardLoop} {
			a.wg.Go(func() { fn(ctx) })
		}
		a.log.Info("etcd arbiter started", "endpoints", strings.Join(a.opts.Endpoints, ","),
			"prefix", a.opts.Prefix, "lease_ttl", a.ttl, "address", a.opts.Address)
	})
}

// Close stops deciding, resigns, revokes the lease (so another proxy is
// elected at once instead of after the TTL) and closes the client.
func (a *Arbiter) Close() error {
	a.closeOnce.Do(func() {
		a.setDeciding(false)
		if a.cancel != nil {
			a.cancel()
		}
		a.wg.Wait()
		_ = a.cli.Close()
	})
	return nil
}

// Deciding reports whether this proxy decides now: it won the election
// and its lease is provably alive with a quarter of its TTL to spare.
// The topology arbiter acts on leader loss and admin requests only while
// it is true.
func (a *Arbiter) Deciding() bool { return a.deciding.Load() }

// DeciderAddress returns the decider's id and admin address, as the
// proxies' records say ("" when none is known).
func (a *Arbiter) DeciderAddress() (id, address string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.proxies {
		if p.ID == a.decider {
			return p.ID, p.Address
		}
	}
	return a.decider, ""
}

func (a *Arbiter) key(suffix string) string { return a.opts.Prefix + suffix }

// opCtx bounds one etcd call: a third of the lease, so a silent etcd is
// noticed well before the lease could expire.
func (a *Arbiter) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.ttl/3)
}

func (a *Arbiter) setErr(err error) {
	a.mu.Lock()
	if err == nil {
		a.lastErr = ""
	} else {
		a.lastErr = err.Error()
	}
	a.mu.Unlock()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// sessionLoop keeps one session (lease, registration, campaign) alive,
// starting a new one whenever the last ended (its lease expired, etcd was
// unreachable past the TTL).
func (a *Arbiter) sessionLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := a.runSession(ctx)
		if ctx.Err() != nil {
			return
		}
		a.setErr(err)
		a.log.Warn("etcd session ended; starting a new one", "err", err, "retry_in", backoff)
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, a.ttl/2)
	}
}

var errSessionEnded = errors.New("the lease expired or was lost")

func (a *Arbiter) runSession(ctx context.Context) error {
	start := a.opts.Now()
	gctx, cancel := a.opCtx(ctx)
	lease, err := a.cli.Grant(gctx, int64(a.ttl/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("granting a lease: %w", err)
	}
	s, err := concurrency.NewSession(a.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("starting a session: %w", err)
	}
	sctx, scancel := context.WithCancel(ctx)
	defer func() {
		scancel()
		a.stepDown("session ended")
		// Revoke so the next decider need not wait for the TTL; bounded,
		// as etcd may be the reason the session ended.
		rctx, rcancel := a.opCtx(context.Background())
		_, _ = a.cli.Revoke(rctx, lease.ID)
		rcancel()
		s.Orphan()
	}()
	go func() {
		select {
		case <-s.Done():
		case <-sctx.Done():
		}
		scancel()
	}()
	if err := a.register(sctx, lease.ID); err != nil {
		return err
	}
	// Only a registered proxy counts its lease as proof that it may route
	// writes.
	a.extendLease(start, lease.TTL)
	a.mu.Lock()
	a.lease = lease.ID
	a.mu.Unlock()
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		a.heartbeatLoop(sctx, lease.ID)
	}()
	defer func() {
		scancel()
		<-hbDone
	}()

	e := concurrency.NewElection(s, a.key(keyElection))
	if err := e.Campaign(sctx, a.opts.ProxyID); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("campaigning: %w", err)
	}
	if err := a.becomeDecider(sctx, e); err != nil {
		return err
	}
	<-sctx.Done()
	if ctx.Err() != nil {
		// Closing: hand the decision over at once.
		rctx, rcancel := a.opCtx(context.Background())
		_ = e.Resign(rctx)
		rcancel()
		return ctx.Err()
	}
	return errSessionEnded
}

// register claims this proxy's record, refusing an id another running
// proxy holds.
func (a *Arbiter) register(ctx context.Context, lease clientv3.LeaseID) error {
	k := a.key(keyProxies + a.opts.ProxyID)
	b, _ := json.Marshal(a.record(false))
	cctx, cancel := a.opCtx(ctx)
	defer cancel()
	resp, err := a.cli.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b), clientv3.WithLease(lease))).
		Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return fmt.Errorf("registering proxy %s: %w", a.opts.ProxyID, err)
	}
	if !resp.Succeeded {
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 && clientv3.LeaseID(kvs[0].Lease) != lease {
			return fmt.Errorf("proxy id %q is registered under %s by another running proxy (or one that stopped less than a lease ago): give every proxy its own arbiter.proxy_id",
				a.opts.ProxyID, a.opts.Prefix)
		}
	}
	return nil
}

func (a *Arbiter) record(deciding bool) ProxyRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := ProxyRecord{ID: a.opts.ProxyID, Address: a.opts.Address, Deciding: deciding, Heartbeat: a.opts.Now().UTC()}
	if a.doc != nil {
		r.Epoch, r.Leader = a.doc.Epoch, a.doc.Leader
	}
	return r
}

// extendLease records that the lease was alive at start for ttl seconds
// more.
func (a *Arbiter) extendLease(start time.Time, ttl int64) {
	until := start.Add(time.Duration(ttl) * time.Second).UnixNano()
	for {
		cur := a.validUntil.Load()
		if until <= cur || a.validUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// heartbeatLoop proves the lease alive (KeepAliveOnce: its start time plus
// the TTL etcd answers is how long it lasts at least), refreshes this
// proxy's record, and reads the other proxies' records and the decider.
func (a *Arbiter) heartbeatLoop(ctx context.Context, lease clientv3.LeaseID) {
	t := time.NewTicker(a.ttl / 4)
	defer t.Stop()
	for {
		if err := a.heartbeat(ctx, lease); err != nil && ctx.Err() == nil {
			a.setErr(err)
			a.log.Debug("etcd heartbeat failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Arbiter) heartbeat(ctx context.Context, lease clientv3.LeaseID) error {
	start := a.opts.Now()
	cctx, cancel := a.opCtx(ctx)
	defer cancel()
	ka, err := a.cli.KeepAliveOnce(cctx, lease)
	if err != nil {
		return fmt.Errorf("keeping the lease alive: %w", err)
	}
	a.extendLease(start, ka.TTL)
	b, _ := json.Marshal(a.record(a.Deciding()))
	if _, err := a.cli.Put(cctx, a.key(keyProxies+a.opts.ProxyID), string(b), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("writing this proxy's record: %w", err)
	}
	resp, err := a.cli.Get(cctx, a.key(keyProxies), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("reading the proxies' records: %w", err)
	}
	var rs []ProxyRecord
	for _, kv := range resp.Kvs {
		var r ProxyRecord
		if json.Unmarshal(kv.Value, &r) == nil {
			rs = append(rs, r)
		}
	}
	sortRecords(rs)
	lead, err := a.cli.Get(cctx, a.key(keyElection)+"/", append(clientv3.WithFirstCreate(), clientv3.WithPrefix())...)
	if err != nil {
		return fmt.Errorf("reading the election: %w", err)
	}
	a.mu.Lock()
	a.proxies = rs
	a.decider = ""
	if len(lead.Kvs) > 0 {
		a.decider = string(lead.Kvs[0].Value)
	}
	a.lastErr = ""
	a.mu.Unlock()
	return nil
}

// becomeDecider runs once this proxy won the election: it reads the
// document, makes its own topology follow it (so that it continues from
// what the last decider decided, not from what it discovered itself),
// hands an unfinished change to Takeover, and lets the guard turn
// deciding on.
func (a *Arbiter) becomeDecider(ctx context.Context, e *concurrency.Election) error {
	cctx, cancel := a.opCtx(ctx)
	resp, err := a.cli.Get(cctx, a.key(keyTopology))
	cancel()
	if err != nil {
		return fmt.Errorf("reading the topology after being elected: %w", err)
	}
	var doc *Document
	if len(resp.Kvs) > 0 {
		if doc, err = decodeDocument(resp.Kvs[0].Value); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.elected, a.election = true, e
	a.written = doc.clone()
	if doc != nil && resp.Kvs[0].ModRevision >= a.docRev {
		a.doc, a.docRev = doc.clone(), resp.Kvs[0].ModRevision
	}
	a.docLoaded = true
	a.mu.Unlock()
	var change *topology.Change
	if doc != nil {
		a.follow(true)
		change = cloneChange(doc.Change)
	}
	// A hold copied from the last decider's document is this proxy's to
	// settle now: released here, held again by whatever change runs next.
	a.mu.Lock()
	docHold := a.docHold
	a.docHold = false
	a.mu.Unlock()
	if s := a.opts.Local.Snapshot(); docHold && s.FailingOver && strings.HasPrefix(s.HoldReason, docHoldPrefix) {
		_ = a.opts.Local.ReleaseWrites()
	}
	a.log.Info("elected to decide", "epoch", docEpoch(doc), "leader", docLeader(doc),
		"unfinished_change", change != nil && change.Result == "")
	if a.opts.Takeover != nil {
		a.opts.Takeover(change)
	}
	a.poke()
	return nil
}

// docHoldPrefix starts the reason of a hold copied from the document.
const docHoldPrefix = "leader change under way on proxy"

func docEpoch(d *Document) uint64 {
	if d == nil {
		return 0
	}
	return d.Epoch
}

func docLeader(d *Document) string {
	if d == nil {
		return ""
	}
	return d.Leader
}

// stepDown ends this proxy's term (its session ended).
func (a *Arbiter) stepDown(why string) {
	a.mu.Lock()
	was := a.elected
	a.elected, a.election, a.written, a.lease = false, nil, nil, 0
	a.mu.Unlock()
	a.setDeciding(false)
	if was {
		a.log.Warn("no longer deciding", "why", why)
	}
}

func (a *Arbiter) setDeciding(on bool) {
	if a.deciding.Swap(on) != on {
		if on {
			a.log.Info("deciding: this proxy now acts on leader loss and runs leader changes")
		} else {
			a.log.Info("not deciding")
		}
	}
}

func (a *Arbiter) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// watchLoop reads the document and follows its changes.
func (a *Arbiter) watchLoop(ctx context.Context) {
	for ctx.Err() == nil {
		cctx, cancel := a.opCtx(ctx)
		resp, err := a.cli.Get(cctx, a.key(keyTopology))
		cancel()
		if err != nil {
			a.setErr(fmt.Errorf("reading the topology: %w", err))
			if !sleepCtx(ctx, a.ttl/10) {
				return
			}
			continue
		}
		if len(resp.Kvs) > 0 {
			a.onDocument(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
		} else {
			a.mu.Lock()
			a.docLoaded = true
			a.mu.Unlock()
			a.poke()
		}
		// WithRequireLeader: a member cut off from its quorum ends the
		// watch instead of serving a stale one.
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := a.cli.Watch(wctx, a.key(keyTopology), clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				a.setErr(fmt.Errorf("watching the topology: %w", err))
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut {
					a.onDocument(ev.Kv.Value, ev.Kv.ModRevision)
				}
			}
		}
		wcancel()
		if !sleepCtx(ctx, a.ttl/10) {
			return
		}
	}
}

func (a *Arbiter) onDocument(b []byte, rev int64) {
	doc, err := decodeDocument(b)
	if err != nil {
		a.setErr(err)
		a.log.Error("ignoring a topology document that does not decode", "err", err)
		return
	}
	a.mu.Lock()
	if rev < a.docRev {
		a.mu.Unlock()
		return // older than one already read
	}
	a.doc, a.docRev, a.docLoaded = doc, rev, true
	mine := a.elected
	a.mu.Unlock()
	if !mine {
		a.follow(false)
	}
	a.poke()
}

// follow makes the local topology route by the newest document read.
// takeover: this proxy was just elected; the document's hold is not
// copied (the new decider's own arbiter decides what happens to it).
func (a *Arbiter) follow(takeover bool) {
	a.followMu.Lock()
	defer a.followMu.Unlock()
	a.mu.Lock()
	doc := a.doc.clone()
	a.mu.Unlock()
	if doc == nil {
		return
	}
	s, ok := a.followLeader(doc)
	if !ok {
		return
	}
	a.followQuarantines(doc, s)
	if !takeover {
		a.followHold(doc, s)
	}
}

// followLeader installs the document's leader when the local topology has
// another one, or is failing over while the document holds nothing. It
// returns the local snapshot after that, or !ok when the document's leader
// cannot be installed.
func (a *Arbiter) followLeader(doc *Document) (*topology.Snapshot, bool) {
	l := a.opts.Local
	s := l.Snapshot()
	cur := ""
	switch {
	case s.FailingOver:
		cur = s.LostLeader
	case s.Leader != nil:
		cur = s.Leader.ID
	}
	if doc.Leader == "" || s.Cluster(doc.Leader) == nil {
		if doc.Leader != "" {
			a.log.Error("the topology names a leader this proxy has no cluster for; check that every proxy has the same clusters",
				"leader", doc.Leader, "decider", doc.Decider)
		}
		return nil, false
	}
	if doc.Leader == cur && (!s.FailingOver || doc.Hold) {
		return s, true
	}
	demoted := false
	if r := doc.Roles[cur]; cur != "" && (r == string(topology.RoleAlternative) || r == string(topology.RoleStandby)) {
		demoted = s.Cluster(cur) != nil
	}
	if err := l.InstallLeader(topology.Promotion{Leader: doc.Leader, Quarantine: doc.Quarantined, Demoted: demoted}); err != nil {
		a.log.Error("installing the leader the topology names", "leader", doc.Leader, "err", err)
		return nil, false
	}
	a.mu.Lock()
	a.docHold = false
	a.mu.Unlock()
	if doc.Leader != cur {
		a.log.Info("following the decider: new leader", "leader", doc.Leader, "previous", cur,
			"epoch", doc.Epoch, "decider", doc.Decider)
	}
	return l.Snapshot(), true
}

// followQuarantines sets and lifts quarantines as the document names them.
func (a *Arbiter) followQuarantines(doc *Document, s *topology.Snapshot) {
	for _, c := range s.Clusters {
		want, q := doc.Quarantined[c.ID]
		if c.Quarantined != q || (q && c.QuarantineReason != want) {
			if err := a.opts.Local.SetQuarantine(c.ID, want); err != nil {
				a.log.Error("setting the quarantine the topology names", "cluster", c.ID, "err", err)
			}
		}
	}
}

// followHold holds writes while the document does (the decider is
// changing the leader) and releases the hold it took when the document
// no longer holds; this proxy's own fence, when it has one, wins and is
// put back at the end.
func (a *Arbiter) followHold(doc *Document, s *topology.Snapshot) {
	l := a.opts.Local
	a.mu.Lock()
	fence := a.fenceReason
	a.mu.Unlock()
	fenced := fence != ""
	if fenced {
		// Installing the leader ended the fence's hold.
		defer a.holdForFence(fence)
	}
	switch {
	case doc.Hold && !fenced:
		reason := fmt.Sprintf("%s %s: %s", docHoldPrefix, doc.Decider, doc.HoldReason)
		if !s.FailingOver || s.HoldReason != reason {
			if err := l.HoldWrites(reason); err != nil {
				a.log.Error("holding writes as the decider does", "err", err)
				return
			}
		}
		a.mu.Lock()
		a.docHold = true
		a.mu.Unlock()
	case !doc.Hold:
		a.mu.Lock()
		held := a.docHold
		a.docHold = false
		a.mu.Unlock()
		if held && s.FailingOver && !fenced {
			_ = l.ReleaseWrites()
		}
	}
}

// guardLoop judges the lease every tick: it turns deciding on and off,
// fences writes once the lease may have expired and lifts the fence when
// etcd answers again; while deciding, it writes the document whenever the
// local topology changed.
func (a *Arbiter) guardLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.TickInterval)
	defer t.Stop()
	for {
		changed := a.opts.Local.Changed()
		a.guard(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.kick:
		case <-changed:
		}
	}
}

func (a *Arbiter) guard(ctx context.Context) {
	now := a.opts.Now()
	vu := a.validUntil.Load()
	a.mu.Lock()
	elected, fenced := a.elected, a.fenceReason != ""
	// A follower routes by etcd's document only; the decider, before any
	// document exists, by its own discovery (it writes the first one).
	loaded := a.docLoaded && (a.doc != nil || elected)
	a.mu.Unlock()
	// Stop deciding a quarter of the lease before it can expire: only
	// then may etcd elect another proxy.
	margin := a.ttl / 4
	a.setDeciding(elected && vu != 0 && now.Before(time.Unix(0, vu).Add(-margin)))

	alive := vu != 0 && now.Before(time.Unix(0, vu))
	switch {
	case !alive || !loaded:
		why := "the etcd arbiter has not been reached yet"
		switch {
		case alive:
			why = "no proxy has written the topology to etcd yet (none decides yet)"
		case vu != 0:
			why = fmt.Sprintf("etcd has not confirmed this proxy's lease since %s (lease %s)",
				time.Unix(0, vu).Add(-a.ttl).Format(time.RFC3339Nano), a.ttl)
		}
		a.fence(now, why)
	case fenced:
		a.unfence()
	}
	a.mu.Lock()
	doc, fenced := a.doc.clone(), a.fenceReason != ""
	a.mu.Unlock()
	if !elected && !fenced && doc != nil && a.strays(doc) {
		// Local discovery moved the leader on its own: the document wins.
		a.follow(false)
	}
	if a.Deciding() {
		if err := a.publish(ctx); err != nil && ctx.Err() == nil {
			a.setErr(err)
			a.log.Warn("writing the topology document", "err", err)
		}
	}
}

// strays reports whether the local topology routes writes elsewhere than
// doc says.
func (a *Arbiter) strays(doc *Document) bool {
	s := a.opts.Local.Snapshot()
	switch {
	case doc.Leader == "":
		return false
	case s.FailingOver:
		return s.LostLeader != doc.Leader
	case s.Leader == nil:
		return true
	}
	return s.Leader.ID != doc.Leader
}

// fence holds writes: this proxy cannot show that the leader it routes
// to is still the one etcd names.
func (a *Arbiter) fence(now time.Time, why string) {
	a.mu.Lock()
	if a.fenceReason == "" {
		a.lostSince = now
		a.fenceReason = "cannot confirm the leader with the etcd arbiter: " + why +
			"; writes are held, then refused, until etcd answers again (another proxy may have moved the leader)"
		a.log.Warn("fencing writes", "why", why)
	}
	reason := a.fenceReason
	a.mu.Unlock()
	a.holdForFence(reason)
}

// holdForFence holds writes with the fence's reason. Called every tick
// while fenced: a hold this proxy's own arbiter released (an abandoned
// change) must not let writes through; a hold copied from the document
// takes the fence's reason, which is the one that says what to fix.
func (a *Arbiter) holdForFence(reason string) {
	a.mu.Lock()
	docHold := a.docHold
	a.mu.Unlock()
	if s := a.opts.Local.Snapshot(); !s.FailingOver || (docHold && s.HoldReason != reason) {
		if err := a.opts.Local.HoldWrites(reason); err != nil {
			a.log.Error("fencing writes", "err", err)
		}
	}
}

// unfence lifts the fence once the lease is alive again and the document
// was read: the document decides what happens next.
func (a *Arbiter) unfence() {
	a.mu.Lock()
	reason := a.fenceReason
	a.fenceReason, a.lostSince = "", time.Time{}
	doc, elected := a.doc.clone(), a.elected
	a.mu.Unlock()
	a.log.Info("etcd confirms this proxy's lease again; writes follow the topology document")
	if s := a.opts.Local.Snapshot(); s.FailingOver && s.HoldReason == reason {
		_ = a.opts.Local.ReleaseWrites()
	}
	if doc != nil && !elected {
		a.follow(false)
	}
}

// publish writes the local topology as the document when it routes
// differently from the last one written.
func (a *Arbiter) publish(ctx context.Context) error {
	next, ok := documentFrom(a.opts.Local.Snapshot())
	if !ok {
		return nil
	}
	return a.update(ctx, func(prev *Document) (*Document, bool) {
		next.Change = cloneChange(prevChange(prev))
		next.Epoch = docEpoch(prev)
		if prev == nil || prev.Leader != next.Leader {
			next.Epoch++
		}
		return next, !next.sameRouting(prev)
	})
}

func prevChange(d *Document) *topology.Change {
	if d == nil {
		return nil
	}
	return d.Change
}

// update writes the document mutate returns (when it says so), in a
// transaction that succeeds only while this proxy's election key exists.
func (a *Arbiter) update(ctx context.Context, mutate func(prev *Document) (*Document, bool)) error {
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	a.mu.Lock()
	e, prev := a.election, a.written.clone()
	a.mu.Unlock()
	if e == nil || !a.Deciding() {
		return fmt.Errorf("writing the topology: %w", ErrNotDecider)
	}
	next, write := mutate(prev)
	if !write {
		return nil
	}
	next.Decider = a.opts.ProxyID
	next.UpdatedAt = a.opts.Now().UTC()
	b, err := json.Marshal(next)
	if err != nil {
		return fmt.Errorf("encoding the topology: %w", err)
	}
	cctx, cancel := a.opCtx(ctx)
	defer cancel()
	resp, err := a.cli.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev())).
		Then(clientv3.OpPut(a.key(keyTopology), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("writing the topology (epoch %d, leader %s): %w", next.Epoch, next.Leader, err)
	}
	if !resp.Succeeded {
		a.stepDown("etcd says this proxy's election key is gone")
		return fmt.Errorf("writing the topology: %w: its election key is gone", ErrNotDecider)
	}
	a.mu.Lock()
	a.written = next.clone()
	if rev := resp.Header.Revision; rev >= a.docRev {
		a.doc, a.docRev = next.clone(), rev
	}
	a.mu.Unlock()
	if prev == nil || !prev.sameRouting(next) {
		a.log.Info("topology written", "epoch", next.Epoch, "leader", next.Leader, "hold", next.Hold)
	}
	return nil
}

// Status is this proxy's view of the arbiter, for status and /readyz.
type Status struct {
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix"`
	ProxyID   string   `json:"proxy_id"`
	// Connected: the lease is provably alive.
	Connected bool `json:"connected"`
	// Deciding: this proxy decides; Decider names the one that does.
	Deciding bool   `json:"deciding"`
	Decider  string `json:"decider,omitempty"`
	// Epoch and Leader are the document's, as this proxy last read it.
	Epoch  uint64 `json:"epoch"`
	Leader string `json:"leader,omitempty"`
	// LeaseValidFor is how long the lease lasts at least, without another
	// keepalive (negative: it may have expired).
	LeaseValidFor time.Duration `json:"lease_valid_for"`
	// Fenced: writes are held because the leader cannot be confirmed;
	// FencedSince since when, FenceReason why.
	Fenced      bool      `json:"fenced"`
	FencedSince time.Time `json:"fenced_since,omitzero"`
	FenceReason string    `json:"fence_reason,omitempty"`
	// LastError is the last failed etcd call ("" after a success).
	LastError string `json:"last_error,omitempty"`
	// Change is the record of the latest leader change in the document.
	Change *topology.Change `json:"change,omitempty"`
	// Proxies are every running proxy's records.
	Proxies []ProxyRecord `json:"proxies"`
}

// Status returns the arbiter's state. It never blocks on the network.
func (a *Arbiter) Status() Status {
	now := a.opts.Now()
	vu := a.validUntil.Load()
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{
		Endpoints: a.opts.Endpoints, Prefix: a.opts.Prefix, ProxyID: a.opts.ProxyID,
		Deciding: a.deciding.Load(), Decider: a.decider,
		Fenced: a.fenceReason != "", FencedSince: a.lostSince, FenceReason: a.fenceReason,
		LastError: a.lastErr,
		Proxies:   append([]ProxyRecord(nil), a.proxies...),
	}
	if vu != 0 {
		st.LeaseValidFor = time.Unix(0, vu).Sub(now)
		st.Connected = st.LeaseValidFor > 0
	}
	if a.doc != nil {
		st.Epoch, st.Leader, st.Change = a.doc.Epoch, a.doc.Leader, cloneChange(a.doc.Change)
	}
	return st
}
