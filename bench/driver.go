package bench

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Run sets up the collection, warms up, measures every target in
// alternating rounds and returns the report. Setup is timed separately and
// never counted in the measurement. When ctx is cancelled it stops
// promptly and returns the report of what was measured so far together
// with ctx's error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	r := &runner{cfg: &c}
	return r.run(ctx)
}

type runner struct {
	cfg   *Config
	nonce uint64
	src   vectorSource

	queries     [][]byte // serialized placeholder groups
	writes      writePool
	searchParam []*commonpb.KeyValuePair
	outFields   []string

	targets []*targetState
	active  atomic.Pointer[targetState] // the target being measured, for admin events

	t0      time.Time
	faultMu sync.Mutex
	faults  []FaultEvent
}

type targetState struct {
	idx     int
	t       Target
	conns   []*grpc.ClientConn
	svcs    []milvuspb.MilvusServiceClient
	workers []*worker
	rec     *recorder
	setup   *SetupTimes
}

// worker is one closed-loop client: one Milvus session (its own Connect
// identifier and last write timestamp), one operation at a time.
type worker struct {
	r      *runner
	ts     *targetState
	idx    int
	svc    milvuspb.MilvusServiceClient
	ctx    context.Context // carries authorization and identifier metadata
	rng    *rand.Rand
	seq    uint32
	lastTS uint64 // highest write timestamp this session got back
	writes int    // successful inserts, for VerifyEvery
	cur    workerCursor
	rec    *recorder // nil during warm-up
}

// run measures every target: it dials them, sets them up (timed apart),
// warms them up, then runs the rounds with the fault and admin-poll
// helpers alongside, and reports.
func (r *runner) run(ctx context.Context) (rep *Report, err error) {
	cfg := r.cfg
	r.prepare()
	defer r.close()
	if err := r.dial(); err != nil {
		return nil, err
	}
	setups, err := r.setupTargets(authContext(ctx, cfg.Token))
	if err != nil {
		return nil, err
	}

	// Warm-up: connections, server caches, the Go runtime; not recorded.
	if cfg.Warmup > 0 {
		for _, ts := range r.targets {
			r.phase(ctx, ts, -1, cfg.Warmup, 0, nil)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}

	r.t0 = time.Now()
	for _, ts := range r.targets {
		ts.rec = newRecorder(r.t0)
	}
	helpers, stopHelpers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	r.startFaults(helpers, &wg)
	if cfg.AdminURL != "" {
		wg.Add(1)
		go func() { defer wg.Done(); r.pollAdmin(helpers) }()
	}
	if cfg.Progress != nil {
		wg.Add(1)
		go func() { defer wg.Done(); r.progress(helpers) }()
	}
	r.runRounds(ctx)
	end := time.Since(r.t0)
	r.active.Store(nil)
	stopHelpers()
	wg.Wait()
	if cfg.Progress != nil && cfg.ProgressTTY {
		fmt.Fprintln(cfg.Progress)
	}
	rep = r.report(setups, end)
	if err := ctx.Err(); err != nil {
		rep.Interrupted = true
		return rep, err
	}
	return rep, nil
}

// prepare builds what every worker shares: the vectors, the search
// parameters, and the nonce that keeps this run's primary keys apart from
// other runs'.
func (r *runner) prepare() {
	cfg := r.cfg
	var nb [8]byte
	_, _ = crand.Read(nb[:])
	r.nonce = binary.LittleEndian.Uint64(nb[:])
	r.src = vectorSource{seed: cfg.Seed, dim: cfg.Dim, file: cfg.Vectors}
	r.queries = queryPool(r.src, cfg.NQ)
	r.writes = newWritePool(r.src, cfg.Batch)
	r.searchParam = []*commonpb.KeyValuePair{
		{Key: "anns_field", Value: fieldVector},
		{Key: "topk", Value: strconv.Itoa(cfg.TopK)},
		{Key: "metric_type", Value: cfg.Metric},
		{Key: "params", Value: searchParamsJSON(cfg)},
		{Key: "offset", Value: "0"},
		{Key: "round_decimal", Value: "-1"},
		{Key: "ignore_growing", Value: "false"},
	}
	r.outFields = []string{fieldID}
}

// dial opens Conns connections to every target (r.close closes them).
func (r *runner) dial() error {
	for i, t := range r.cfg.Targets {
		ts := &targetState{idx: i, t: t}
		r.targets = append(r.targets, ts)
		for range r.cfg.Conns {
			cc, err := dial(t.Addr)
			if err != nil {
				return err
			}
			ts.conns = append(ts.conns, cc)
			ts.svcs = append(ts.svcs, milvuspb.NewMilvusServiceClient(cc))
		}
	}
	return nil
}

// setupTargets creates and loads the collection where Setup says to (each
// setup timed, never part of the measurement), checks it is loaded
// elsewhere, and connects every target's workers, each a Milvus session of
// its own.
func (r *runner) setupTargets(actx context.Context) ([]SetupTimes, error) {
	cfg := r.cfg
	var setups []SetupTimes
	for i, ts := range r.targets {
		switch {
		case cfg.Setup == SetupEach || (cfg.Setup == SetupFirst && i == 0):
			cfg.Logger.Info("setting up", "target", ts.t.Name, "collection", cfg.Collection, "rows", cfg.Preload)
			st, err := setup(actx, ts.svcs[0], cfg, ts.t.Name, r.src)
			if err != nil {
				return nil, fmt.Errorf("setup on %s: %w", ts.t.Name, err)
			}
			setups = append(setups, st)
			ts.setup = &setups[len(setups)-1]
		default:
			if err := checkLoaded(actx, ts.svcs[0], cfg.Collection); err != nil {
				return nil, fmt.Errorf("target %s: %w", ts.t.Name, err)
			}
		}
		for w := range cfg.Concurrency {
			svc := ts.svcs[w%len(ts.svcs)]
			id, err := connect(actx, svc)
			if err != nil {
				return nil, fmt.Errorf("target %s: worker %d: %w", ts.t.Name, w, err)
			}
			wctx := actx
			if id != "" {
				wctx = metadata.AppendToOutgoingContext(wctx, "identifier", id)
			}
			ts.workers = append(ts.workers, &worker{r: r, ts: ts, idx: w, svc: svc, ctx: wctx})
		}
	}
	return setups, nil
}

// runRounds runs the measured phases: Rounds rounds, each giving every target
// in turn its share of Duration (or Ops), so a slow drift of the machine
// falls on all targets alike.
func (r *runner) runRounds(ctx context.Context) {
	cfg := r.cfg
	rounds := cfg.Rounds
	for round := range rounds {
		for _, ts := range r.targets {
			if ctx.Err() != nil {
				break
			}
			var dur time.Duration
			var ops int64
			if cfg.Duration > 0 {
				// Spread the remainder so the rounds sum to Duration exactly.
				dur = cfg.Duration*time.Duration(round+1)/time.Duration(rounds) - cfg.Duration*time.Duration(round)/time.Duration(rounds)
			} else {
				ops = cfg.Ops*int64(round+1)/int64(rounds) - cfg.Ops*int64(round)/int64(rounds)
			}
			r.active.Store(ts)
			r.phase(ctx, ts, round, dur, ops, ts.rec)
		}
	}
}

func (r *runner) close() {
	for _, ts := range r.targets {
		for _, cc := range ts.conns {
			_ = cc.Close()
		}
	}
}

// phase runs every worker of one target for dur or until ops operations
// have started. Workers stop starting new operations at the deadline but
// let the ones in flight finish (each is bounded by OpTimeout), so the end
// of a phase never shows up as errors.
func (r *runner) phase(ctx context.Context, ts *targetState, round int, dur time.Duration, ops int64, rec *recorder) {
	var stop atomic.Bool
	var budget atomic.Int64
	budget.Store(ops)
	start := time.Now()
	if rec != nil {
		now := int64(start.Sub(r.t0))
		rec.writeGap.reset(now)
		rec.readGap.reset(now)
	}
	// An --ops phase is bounded in time too, so a stalled target cannot
	// keep the run going for ever.
	limit := dur
	if limit <= 0 {
		limit = MaxDuration
	}
	timer := time.AfterFunc(limit, func() { stop.Store(true) })
	// Cancellation stops new operations too; in-flight ones end with ctx.
	unhook := context.AfterFunc(ctx, func() { stop.Store(true) })

	var wg sync.WaitGroup
	for _, w := range ts.workers {
		// Same stream for every target in a round: the targets see the same
		// operations in the same order.
		w.rng = rand.New(rand.NewPCG(r.cfg.Seed^streamWorker, uint64(round+1)<<32|uint64(w.idx)))
		w.rec = rec
		w.cur = workerCursor{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if ops > 0 && budget.Add(-1) < 0 {
					return
				}
				w.step(ctx)
			}
		}()
	}
	wg.Wait()
	timer.Stop()
	unhook()
	elapsed := time.Since(start)
	if rec != nil {
		rec.active.Add(int64(elapsed))
		rec.addPhase(start.Sub(r.t0), start.Sub(r.t0)+elapsed)
		// A gap still open at the end of the phase (writes failing until the
		// end) counts up to the phase's end.
		endNs := int64(time.Since(r.t0))
		rec.writeGap.observe(rec.writeGap.last.Load(), endNs)
		rec.readGap.observe(rec.readGap.last.Load(), endNs)
	}
}

// level maps the configured consistency to the request's level and
// guarantee_timestamp, as pymilvus does: Strong 0, Bounded 2, Eventually 1,
// Session the session's last write timestamp (1 before any write),
// Customized the same timestamp given explicitly.
func (w *worker) level() (commonpb.ConsistencyLevel, uint64) {
	switch w.r.cfg.Consistency {
	case Strong:
		return commonpb.ConsistencyLevel_Strong, 0
	case Bounded:
		return commonpb.ConsistencyLevel_Bounded, 2
	case Eventually:
		return commonpb.ConsistencyLevel_Eventually, 1
	case Session:
		return commonpb.ConsistencyLevel_Session, max(w.lastTS, 1)
	default:
		return commonpb.ConsistencyLevel_Customized, max(w.lastTS, 1)
	}
}

// step picks and runs one operation.
func (w *worker) step(ctx context.Context) {
	cfg := w.r.cfg
	switch cfg.Workload {
	case WorkloadSearch:
		w.search(ctx)
	case WorkloadQuery:
		w.query(ctx)
	case WorkloadInsert:
		w.insert(ctx)
	case WorkloadUpsert:
		w.upsert(ctx)
	case WorkloadMixed:
		if w.rng.Float64() < cfg.ReadRatio {
			w.search(ctx)
		} else {
			w.insert(ctx)
		}
	}
}

// finish records an outcome, unless the run was cancelled under it (an
// interrupted call is not a server error).
func (w *worker) finish(ctx context.Context, o *outcome, err error, hdr metadata.MD) {
	if err != nil && ctx.Err() != nil {
		return
	}
	o.latency = time.Since(o.start)
	if err != nil {
		o.code = status.Code(err)
	}
	if v := hdr.Get(ClusterHeader); len(v) > 0 {
		o.cluster = v[0]
	} else if err == nil {
		o.cluster = w.ts.t.Name
	}
	if w.rec == nil {
		return
	}
	msg := ""
	if err != nil {
		msg = status.Convert(err).Message()
	}
	w.rec.record(o, &w.cur, msg)
}

// call bounds one call. w.ctx derives from the run's ctx (it carries the
// session's metadata), so cancelling the run cancels calls in flight.
func (w *worker) call(context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(w.ctx, w.r.cfg.OpTimeout)
}

func (w *worker) search(ctx context.Context) {
	cfg := w.r.cfg
	lvl, g := w.level()
	req := &milvuspb.SearchRequest{
		CollectionName:     cfg.Collection,
		Nq:                 int64(cfg.NQ),
		DslType:            commonpb.DslType_BoolExprV1,
		SearchInput:        &milvuspb.SearchRequest_PlaceholderGroup{PlaceholderGroup: w.r.queries[w.rng.IntN(len(w.r.queries))]},
		SearchParams:       w.r.searchParam,
		GuaranteeTimestamp: g,
		ConsistencyLevel:   lvl,
	}
	var hdr metadata.MD
	o := outcome{kind: opSearch, start: time.Now()}
	cctx, cancel := w.call(ctx)
	resp, err := w.svc.Search(cctx, req, grpc.Header(&hdr))
	cancel()
	o.status = resp.GetStatus()
	w.finish(ctx, &o, err, hdr)
}

func (w *worker) query(ctx context.Context) {
	key := int64(0)
	if n := w.r.cfg.Preload; n > 0 {
		key = int64(w.rng.IntN(n))
	}
	w.queryKey(ctx, opQuery, key)
}

// queryKey reads the row with primary key key at the configured level and
// reports whether it was found.
func (w *worker) queryKey(ctx context.Context, kind opKind, key int64) (found, ok bool) {
	cfg := w.r.cfg
	lvl, g := w.level()
	req := &milvuspb.QueryRequest{
		CollectionName:     cfg.Collection,
		Expr:               fieldID + " in [" + strconv.FormatInt(key, 10) + "]",
		OutputFields:       w.r.outFields,
		GuaranteeTimestamp: g,
		ConsistencyLevel:   lvl,
	}
	var hdr metadata.MD
	o := outcome{kind: kind, start: time.Now()}
	cctx, cancel := w.call(ctx)
	resp, err := w.svc.Query(cctx, req, grpc.Header(&hdr))
	cancel()
	o.status = resp.GetStatus()
	w.finish(ctx, &o, err, hdr)
	if err != nil || o.errKey() != "" {
		return false, false
	}
	for _, f := range resp.GetFieldsData() {
		if f.GetFieldName() == fieldID {
			for _, id := range f.GetScalars().GetLongData().GetData() {
				if id == key {
					return true, true
				}
			}
		}
	}
	return false, true
}

func (w *worker) insert(ctx context.Context) {
	cfg := w.r.cfg
	ids := make([]int64, cfg.Batch)
	for i := range ids {
		ids[i] = insertKey(w.r.nonce, w.ts.idx, w.idx, w.seq)
		w.seq++
	}
	ts, ok := w.write(ctx, opInsert, ids)
	if !ok {
		return
	}
	w.writes++
	// Read-your-writes check: at the levels that promise it, the row this
	// session just wrote must be visible to its next read.
	if cfg.VerifyEvery <= 0 || w.writes%cfg.VerifyEvery != 0 {
		return
	}
	switch cfg.Consistency {
	case Session, Customized:
		if ts == 0 {
			// No write timestamp (Milvus Lite sends none): the read could
			// only ask for Eventually, so a miss would prove nothing.
			if w.rec != nil {
				w.rec.verifySkipped.Add(1)
			}
			return
		}
	case Strong:
	default:
		return
	}
	if found, ok := w.queryKey(ctx, opVerify, ids[0]); ok && w.rec != nil {
		w.rec.verified(found)
	}
}

func (w *worker) upsert(ctx context.Context) {
	cfg := w.r.cfg
	// A run of consecutive preloaded keys: existing rows, no duplicates
	// within the batch.
	start := 0
	if n := cfg.Preload - cfg.Batch; n > 0 {
		start = w.rng.IntN(n + 1)
	}
	ids := make([]int64, cfg.Batch)
	for i := range ids {
		ids[i] = int64(start + i)
	}
	w.write(ctx, opUpsert, ids)
}

// write sends an insert or upsert of ids and returns the write timestamp.
func (w *worker) write(ctx context.Context, kind opKind, ids []int64) (uint64, bool) {
	cfg := w.r.cfg
	fields := rowFields(cfg.Dim, ids, w.r.writes.batch(w.rng, len(ids)))
	var hdr metadata.MD
	o := outcome{kind: kind, start: time.Now()}
	cctx, cancel := w.call(ctx)
	var resp *milvuspb.MutationResult
	var err error
	if kind == opInsert {
		resp, err = w.svc.Insert(cctx, &milvuspb.InsertRequest{
			CollectionName: cfg.Collection, FieldsData: fields, NumRows: uint32(len(ids)),
		}, grpc.Header(&hdr))
	} else {
		resp, err = w.svc.Upsert(cctx, &milvuspb.UpsertRequest{
			CollectionName: cfg.Collection, FieldsData: fields, NumRows: uint32(len(ids)),
		}, grpc.Header(&hdr))
	}
	cancel()
	o.status = resp.GetStatus()
	o.ts = resp.GetTimestamp()
	w.finish(ctx, &o, err, hdr)
	if err != nil || o.errKey() != "" {
		return 0, false
	}
	w.lastTS = max(w.lastTS, o.ts)
	return o.ts, true
}

// FaultEvent is a fault the harness injected, and how it went.
type FaultEvent struct {
	At    float64 `json:"at_s"`
	Name  string  `json:"name"`
	Error string  `json:"error,omitempty"`
}

func (r *runner) startFaults(ctx context.Context, wg *sync.WaitGroup) {
	for _, f := range r.cfg.Faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(time.Until(r.t0.Add(f.At)))
			defer t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			at := time.Since(r.t0).Seconds()
			ev := FaultEvent{At: at, Name: f.Name}
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := f.Do(fctx); err != nil {
				ev.Error = err.Error()
				r.cfg.Logger.Warn("fault failed", "fault", f.Name, "err", err)
			}
			cancel()
			r.faultMu.Lock()
			r.faults = append(r.faults, ev)
			r.faultMu.Unlock()
		}()
	}
}
