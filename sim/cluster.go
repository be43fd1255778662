package sim

import (
	"container/heap"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Options configures a simulated cluster.
type Options struct {
	ClusterID         string            // required; pchannels are "<ClusterID>-rootcoord-dml_<i>"
	Listen            string            // default "127.0.0.1:0"
	PChannels         int               // default 2
	TimeTickInterval  time.Duration     // default 50ms: how often each pchannel's WAL gets a time tick
	ReplicationDelay  time.Duration     // delay applied to this cluster's incoming replication
	GuaranteeTimeout  time.Duration     // how long Search/Query wait for the guarantee ts; default 5s
	Users             map[string]string // user -> password; empty means auth off
	SearchConcurrency int               // capacity: at most N searches/queries at once (0 = unlimited)
	SearchMinLatency  time.Duration     // capacity: each search/query takes at least this long
	DataDir           string            // optional: persist the WAL here and replay it on Start
	// ForcePromoteShape is the force_promote request this cluster accepts,
	// as Milvus versions differ: ForcePromoteSingle (default; the 2.6
	// documentation: a configuration holding only the cluster itself, no
	// topology) or ForcePromoteEmpty (later sources: clusters and topology
	// empty; the standalone configuration is built from the cluster's own
	// entry).
	ForcePromoteShape string
	Logger            *slog.Logger

	// beforeDDL, when set (package tests only), runs just before a DDL
	// takes effect, while ddlApplyMu is held.
	beforeDDL func(e *entry)
}

func (o *Options) setDefaults() error {
	if o.ClusterID == "" {
		return errors.New("sim: Options.ClusterID is required")
	}
	if strings.ContainsAny(o.ClusterID, " /\t\n") {
		return fmt.Errorf("sim: cluster id %q must not contain spaces or slashes", o.ClusterID)
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.PChannels == 0 {
		o.PChannels = 2
	}
	if o.PChannels < 1 || o.PChannels > 256 {
		return fmt.Errorf("sim: PChannels must be in [1, 256], got %d", o.PChannels)
	}
	if o.TimeTickInterval <= 0 {
		o.TimeTickInterval = 50 * time.Millisecond
	}
	if o.GuaranteeTimeout <= 0 {
		o.GuaranteeTimeout = 5 * time.Second
	}
	if o.ReplicationDelay < 0 {
		return fmt.Errorf("sim: ReplicationDelay must not be negative")
	}
	if o.SearchConcurrency < 0 || o.SearchMinLatency < 0 {
		return fmt.Errorf("sim: search capacity options must not be negative")
	}
	switch o.ForcePromoteShape {
	case "":
		o.ForcePromoteShape = ForcePromoteSingle
	case ForcePromoteSingle, ForcePromoteEmpty:
	default:
		return fmt.Errorf("sim: ForcePromoteShape %q: want %q or %q", o.ForcePromoteShape, ForcePromoteSingle, ForcePromoteEmpty)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// The force_promote request shapes of Milvus versions (Options.ForcePromoteShape).
const (
	ForcePromoteSingle = "single" // one cluster, itself; no topology
	ForcePromoteEmpty  = "empty"  // no clusters, no topology
)

// PChannelName is the name Milvus gives a cluster's i-th physical channel.
func PChannelName(clusterID string, i int) string {
	return fmt.Sprintf("%s-rootcoord-dml_%d", clusterID, i)
}

// Cluster is one running simulated Milvus cluster.
type Cluster struct {
	opts      Options
	id        string
	log       *slog.Logger
	pchannels []string
	wals      []*wal
	tso       tso
	cat       *catalog

	// ddlMu orders writes against DDL and role changes: DDL, replication
	// configuration changes and force promotion hold it exclusively, every
	// write holds it shared. A write that passed the role check therefore
	// lands in the WAL before any configuration message that demotes the
	// cluster.
	ddlMu sync.RWMutex

	bcMu   sync.Mutex
	bcSeen map[uint64]*bcState

	// ddlApplyMu is held from the moment a copy of a broadcast DDL is
	// counted until the DDL has taken effect. The copies of one DDL arrive
	// on independent pchannels: without it a later copy would be counted
	// (and its pchannel marked served, and the next DDL on that pchannel
	// applied) while the first copy is still being applied.
	ddlApplyMu sync.Mutex

	role atomic.Int32
	repl replState
	// inboundStreams counts accepted incoming replicate streams (tests use it
	// to see that a source reconnected).
	inboundStreams atomic.Int64
	// forcePromotions counts force promotions this process carried out
	// (not the "same configuration" no-op), for tests that count them.
	forcePromotions atomic.Int64
	// configWaits counts calls waiting for a first replicate configuration
	// (awaitConfigured; tests watch it).
	configWaits atomic.Int64

	faults faults

	searchSem chan struct{}
	connID    atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup

	lis      net.Listener
	srv      *grpc.Server
	stopOnce sync.Once
}

// Start starts a cluster and returns once it serves gRPC on Addr().
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	c := &Cluster{
		opts:   opts,
		id:     opts.ClusterID,
		log:    opts.Logger.With("cluster", opts.ClusterID),
		cat:    newCatalog(),
		bcSeen: make(map[uint64]*bcState),
	}
	c.repl.init()
	c.faults.init(opts.ReplicationDelay)
	if opts.SearchConcurrency > 0 {
		c.searchSem = make(chan struct{}, opts.SearchConcurrency)
	}
	c.connID.Store(time.Now().UnixNano() & 0xffffffffff)
	for i := 0; i < opts.PChannels; i++ {
		name := PChannelName(c.id, i)
		c.pchannels = append(c.pchannels, name)
		c.wals = append(c.wals, newWAL(i, name))
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if opts.DataDir != "" {
		if err := c.recover(); err != nil {
			c.closeFiles()
			return nil, err
		}
	}
	lc := net.ListenConfig{}
	lis, err := lc.Listen(ctx, "tcp", opts.Listen)
	if err != nil {
		c.closeFiles()
		return nil, fmt.Errorf("sim %s: listen on %s: %w", c.id, opts.Listen, err)
	}
	c.lis = lis
	c.srv = grpc.NewServer(
		grpc.MaxRecvMsgSize(256<<20),
		grpc.MaxSendMsgSize(256<<20),
		grpc.ChainUnaryInterceptor(c.unaryAuth),
		grpc.ChainStreamInterceptor(c.streamAuth),
	)
	milvuspb.RegisterMilvusServiceServer(c.srv, &service{c: c})
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		if err := c.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			c.log.Warn("grpc serve ended", "err", err)
		}
	}()
	c.bg.Add(1)
	go c.tickLoop()
	c.startReplicatorsAfterRecovery()
	c.log.Info("simulated milvus cluster started", "addr", c.Addr(), "pchannels", len(c.pchannels), "role", c.Role())
	return c, nil
}

// ID is the cluster id.
func (c *Cluster) ID() string { return c.id }

// Addr is the host:port the gRPC server is bound to.
func (c *Cluster) Addr() string { return c.lis.Addr().String() }

// PChannels are the cluster's physical channel names.
func (c *Cluster) PChannels() []string { return append([]string(nil), c.pchannels...) }

// Role is "primary" (a replication source, or standalone) or "secondary".
func (c *Cluster) Role() string {
	if role(c.role.Load()) == roleSecondary {
		return "secondary"
	}
	return "primary"
}

// Stop shuts the cluster down gracefully: replication streams end, in-flight
// unary calls finish.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		c.cancel()
		c.replBarrier()
		done := make(chan struct{})
		go func() { c.srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			c.srv.Stop()
		}
		c.bg.Wait()
		c.closeFiles()
		c.log.Info("simulated milvus cluster stopped")
	})
}

// Crash stops the cluster abruptly, the in-process stand-in for kill -9: the
// listener and every connection drop at once, CDC stops, nothing more is
// answered or persisted.
func (c *Cluster) Crash() {
	c.stopOnce.Do(func() {
		c.closeFiles()
		c.srv.Stop()
		c.cancel()
		c.replBarrier()
		c.bg.Wait()
		c.log.Info("simulated milvus cluster crashed")
	})
}

// replBarrier waits out a concurrent ensureReplicator: after it, no
// goroutine joins c.bg any more (ensureReplicator checks stopped() under
// repl.mu before bg.Add).
func (c *Cluster) replBarrier() {
	c.repl.mu.Lock()
	//lint:ignore SA2001 the empty critical section is the barrier
	c.repl.mu.Unlock()
}

func (c *Cluster) closeFiles() {
	for _, w := range c.wals {
		if w.file != nil {
			w.file.close()
		}
	}
}

func (c *Cluster) stopped() bool { return c.ctx.Err() != nil }

// PauseReplication freezes this cluster's incoming replication: received
// messages are not applied, checkpoints stop advancing.
func (c *Cluster) PauseReplication() { c.faults.setPaused(true) }

// ResumeReplication lets incoming replication continue.
func (c *Cluster) ResumeReplication() { c.faults.setPaused(false) }

// SetReplicationDelay sets the delay applied to incoming replication.
func (c *Cluster) SetReplicationDelay(d time.Duration) { c.faults.setDelay(d) }

// DropStream breaks every incoming replicate stream; the source's CDC must
// reconnect and resume from the checkpoint.
func (c *Cluster) DropStream() { c.faults.drop() }

// faults are the fault-injection knobs of incoming replication.
type faults struct {
	mu     sync.Mutex
	paused bool
	delay  time.Duration
	wake   chan struct{} // closed on every change
	dropCh chan struct{} // closed by DropStream
}

func (f *faults) init(delay time.Duration) {
	f.delay = delay
	f.wake = make(chan struct{})
	f.dropCh = make(chan struct{})
}

func (f *faults) get() (paused bool, delay time.Duration, wake, drop <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.paused, f.delay, f.wake, f.dropCh
}

func (f *faults) changed() {
	close(f.wake)
	f.wake = make(chan struct{})
}

func (f *faults) setPaused(p bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = p
	f.changed()
}

func (f *faults) setDelay(d time.Duration) {
	if d < 0 {
		d = 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
	f.changed()
}

func (f *faults) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.dropCh)
	f.dropCh = make(chan struct{})
	f.changed()
}

// authentication, as Milvus's proxy: the `authorization` metadata carries
// base64("user:password"), optionally prefixed with "Bearer ".

func (c *Cluster) authenticate(ctx context.Context) error {
	if len(c.opts.Users) == 0 {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 || vals[0] == "" {
		return status.Error(codes.Unauthenticated, "missing authorization in header")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(vals[0], "Bearer "))
	if err != nil {
		return status.Error(codes.Unauthenticated, "invalid token format")
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return status.Error(codes.Unauthenticated, "auth check failure, please check api key is correct")
	}
	if want, known := c.opts.Users[user]; !known || want != pass {
		return status.Error(codes.Unauthenticated, "auth check failure, please check username and password are correct")
	}
	return nil
}

func (c *Cluster) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := c.authenticate(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (c *Cluster) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := c.authenticate(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}

// tokenFor is the token another cluster (or JoinReplication) uses to reach c.
func (c *Cluster) tokenFor() string {
	if len(c.opts.Users) == 0 {
		return ""
	}
	best := ""
	for u := range c.opts.Users {
		if best == "" || u < best {
			best = u
		}
	}
	return best + ":" + c.opts.Users[best]
}

// tickLoop appends a time tick to every pchannel of a primary each interval,
// as Milvus's WAL does: a tick promises that every message with a smaller
// timestamp is already in the WAL.
func (c *Cluster) tickLoop() {
	defer c.bg.Done()
	t := time.NewTicker(c.opts.TimeTickInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		for _, w := range c.wals {
			w.mu.Lock()
			if role(c.role.Load()) != roleSecondary && !c.stopped() {
				e := &entry{ts: c.tso.alloc(), kind: kindTimeTick}
				if err := w.appendLocked(e); err != nil {
					if !errors.Is(err, errStoreClosed) {
						c.log.Warn("time tick append failed", "pchannel", w.name, "err", err)
					}
				} else {
					w.advance(e.ts)
				}
			}
			w.mu.Unlock()
		}
	}
}

// servedTS is the timestamp up to which the given pchannels are applied.
func (c *Cluster) servedTS(pch []int) uint64 {
	var min uint64
	for i, p := range pch {
		s := c.wals[p].served.Load()
		if i == 0 || s < min {
			min = s
		}
	}
	return min
}

// waitServed blocks until every pchannel in pch is applied up to ts.
func (c *Cluster) waitServed(ctx context.Context, pch []int, ts uint64) error {
	if ts <= 1 {
		return nil
	}
	var timer *time.Timer
	for {
		lagging := -1
		for _, p := range pch {
			if c.wals[p].served.Load() < ts {
				lagging = p
				break
			}
		}
		if lagging < 0 {
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(c.opts.GuaranteeTimeout)
			defer timer.Stop()
		}
		select {
		case <-c.wals[lagging].changed():
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return newErr(codeServiceUnavailable, "cluster %s is shutting down", c.id)
		case <-timer.C:
			served := c.wals[lagging].served.Load()
			return newErr(codeTimeout, "guarantee timestamp %d not reached within %v: channel %s is served up to %d (lag %v)",
				ts, c.opts.GuaranteeTimeout, c.pchannels[lagging], served, PhysicalTime(ts).Sub(PhysicalTime(served)).Round(time.Millisecond))
		}
	}
}

// persistence

type diskMeta struct {
	ClusterID string `json:"cluster_id"`
	PChannels int    `json:"pchannels"`
}

// recover opens the WAL files in DataDir and replays them: every message is
// applied again, in timestamp order across pchannels, so the catalog, the
// data, the replication configuration and the checkpoints come back as they
// were.
func (c *Cluster) recover() error {
	dir := c.opts.DataDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sim %s: data dir: %w", c.id, err)
	}
	metaPath := filepath.Join(dir, "meta.json")
	want := diskMeta{ClusterID: c.id, PChannels: len(c.pchannels)}
	if b, err := os.ReadFile(metaPath); err == nil {
		var got diskMeta
		if err := json.Unmarshal(b, &got); err != nil {
			return fmt.Errorf("sim %s: read %s: %w", c.id, metaPath, err)
		}
		if got != want {
			return fmt.Errorf("sim %s: data dir %s belongs to cluster %q with %d pchannels", c.id, dir, got.ClusterID, got.PChannels)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		b, _ := json.Marshal(want)
		if err := os.WriteFile(metaPath, b, 0o644); err != nil {
			return fmt.Errorf("sim %s: write %s: %w", c.id, metaPath, err)
		}
	} else {
		return fmt.Errorf("sim %s: read %s: %w", c.id, metaPath, err)
	}
	loaded := make([][]*entry, len(c.wals))
	total := 0
	for i, w := range c.wals {
		f, entries, err := openWALFile(filepath.Join(dir, fmt.Sprintf("wal_%d.log", i)))
		if err != nil {
			return fmt.Errorf("sim %s: open wal %d: %w", c.id, i, err)
		}
		w.file = f
		for _, e := range entries {
			w.publish(e)
		}
		loaded[i] = entries
		total += len(entries)
	}
	h := &mergeHeap{}
	for p, es := range loaded {
		if len(es) > 0 {
			heap.Push(h, mergeItem{p: p, es: es})
		}
	}
	var pendingCfg []*pendingConfig
	for h.Len() > 0 {
		it := heap.Pop(h).(mergeItem)
		e := it.es[0]
		if pc := c.apply(it.p, e); pc != nil {
			pendingCfg = append(pendingCfg, pc)
		}
		c.wals[it.p].advance(e.ts)
		for _, pc := range pendingCfg {
			c.applyConfig(pc, false)
		}
		pendingCfg = pendingCfg[:0]
		if len(it.es) > 1 {
			heap.Push(h, mergeItem{p: it.p, es: it.es[1:]})
		}
	}
	if total > 0 {
		c.log.Info("replayed wal", "messages", total, "role", c.Role())
	}
	return nil
}

type mergeItem struct {
	p  int
	es []*entry
}

type mergeHeap []mergeItem

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if h[i].es[0].ts != h[j].es[0].ts {
		return h[i].es[0].ts < h[j].es[0].ts
	}
	return h[i].p < h[j].p
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(mergeItem)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
