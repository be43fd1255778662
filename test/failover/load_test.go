package failover_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
)

type opKind int

const (
	opInsert        opKind = iota // a new key, written once
	opUpsert                      // a shared register
	opSession                     // Session read of the worker's own last insert
	opEventually                  // Eventually read of any acknowledged insert
	opStrong                      // Strong read of a shared register
	opSessionLatest               // Session read of the latest acknowledged insert, bound to its timestamp
	opStrongLatest                // Strong read of the latest acknowledged insert
)

func (k opKind) String() string {
	return [...]string{"insert", "upsert", "session-read", "eventually-read", "strong-read", "session-reader", "strong-reader"}[k]
}

func (k opKind) write() bool { return k == opInsert || k == opUpsert }

type outcome int

const (
	acked   outcome = iota // the call succeeded
	failed                 // it failed and was not applied (never sent, or refused)
	unknown                // it may or may not have been applied
)

// op is one call in the history.
type op struct {
	worker  int
	kind    opKind
	pk      int64
	val     int64 // written value, or the value read (0: no row)
	found   bool
	rows    int
	out     outcome
	err     string
	ts      uint64 // MutationResult.timestamp of a write; a read's guarantee
	cluster string // x-milvus-ha-cluster
	start   time.Time
	end     time.Time
}

// loadOptions shape the load.
type loadOptions struct {
	workers int
	// registers > 0 adds shared registers (pk 1..registers) that workers
	// upsert and read with Strong consistency, for a linearizability check.
	registers int
	// readers > 0 adds goroutines that only read the latest acknowledged
	// insert, alternating Session (bound to its timestamp, so only the
	// leader has it for the first moments) and Strong: reads that only
	// the leader can serve, running beside the writers.
	readers int
	pace    time.Duration
}

// load runs a steady mixed load through the proxy and records a history.
type load struct {
	r      *rig
	opts   loadOptions
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	ops    []op
	acked  []int64 // acknowledged inserts, for Eventually reads
	latest op      // the latest acknowledged insert, for the readers
}

func startLoad(r *rig, o loadOptions) *load {
	if o.workers == 0 {
		o.workers = 4
	}
	if o.pace == 0 {
		o.pace = 2 * time.Millisecond
	}
	l := &load{r: r, opts: o}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	for w := range o.workers {
		c := dialProxy(r.t, r.addr)
		l.wg.Go(func() { l.worker(w, c) })
	}
	for i := range o.readers {
		c := dialProxy(r.t, r.addr)
		l.wg.Go(func() { l.reader(o.workers+i, c) })
	}
	return l
}

// stop ends the load after the calls in flight and returns the history.
func (l *load) stop() []op {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ops)
}

// snapshot returns the history so far.
func (l *load) snapshot() []op {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ops)
}

func (l *load) record(o op) {
	l.mu.Lock()
	l.ops = append(l.ops, o)
	if o.kind == opInsert && o.out == acked {
		l.acked = append(l.acked, o.pk)
		if o.ts > l.latest.ts {
			l.latest = o
		}
	}
	l.mu.Unlock()
}

func (l *load) randomAcked(rng *rand.Rand) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.acked) == 0 {
		return 0, false
	}
	return l.acked[rng.IntN(len(l.acked))], true
}

func (l *load) worker(w int, c *client) {
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	var seq int64
	for l.ctx.Err() == nil {
		seq++
		if l.opts.registers > 0 && rng.IntN(2) == 0 {
			k := int64(rng.IntN(l.opts.registers)) + 1
			if rng.IntN(2) == 0 {
				l.record(l.write(c, w, opUpsert, k, int64(w+1)<<32|seq))
			} else {
				l.record(l.read(c, w, opStrong, k, 0))
			}
		} else {
			pk := int64(w+1)*1_000_000_000 + seq
			ins := l.write(c, w, opInsert, pk, pk)
			l.record(ins)
			if ins.out == acked {
				l.record(l.read(c, w, opSession, pk, ins.ts))
			}
			if seq%3 == 0 {
				if k, ok := l.randomAcked(rng); ok {
					l.record(l.read(c, w, opEventually, k, 0))
				}
			}
		}
		time.Sleep(l.opts.pace)
	}
}

// reader reads the latest acknowledged insert, Session and Strong in turn.
func (l *load) reader(w int, c *client) {
	strong := w%2 == 0
	for l.ctx.Err() == nil {
		l.mu.Lock()
		latest := l.latest
		l.mu.Unlock()
		if latest.ts != 0 {
			if strong {
				l.record(l.read(c, w, opStrongLatest, latest.pk, 0))
			} else {
				l.record(l.read(c, w, opSessionLatest, latest.pk, latest.ts))
			}
			strong = !strong
		}
		time.Sleep(l.opts.pace)
	}
}

// callCtx is independent of the load's own context: calls in flight when
// the load stops finish normally.
func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 15*time.Second)
}

func (l *load) write(c *client, w int, kind opKind, pk, val int64) op {
	o := op{worker: w, kind: kind, pk: pk, val: val, start: time.Now()}
	ctx, cancel := callCtx()
	defer cancel()
	res, cluster, err := c.Write(ctx, kind != opInsert, pk, val)
	o.end = time.Now()
	o.cluster = cluster
	o.out, o.err = classify(res.GetStatus(), err)
	o.ts = res.GetTimestamp()
	return o
}

func (l *load) read(c *client, w int, kind opKind, pk int64, guarantee uint64) op {
	o := op{worker: w, kind: kind, pk: pk, start: time.Now()}
	ctx, cancel := callCtx()
	defer cancel()
	o.ts = guarantee
	level := map[opKind]commonpb.ConsistencyLevel{
		opSession: commonpb.ConsistencyLevel_Session, opEventually: commonpb.ConsistencyLevel_Eventually,
		opStrong: commonpb.ConsistencyLevel_Strong, opSessionLatest: commonpb.ConsistencyLevel_Session,
		opStrongLatest: commonpb.ConsistencyLevel_Strong,
	}[kind]
	var hdr metadata.MD
	rows, err := c.Query(ctx, level, guarantee, []grpc.CallOption{grpc.Header(&hdr)}, pk)
	o.end = time.Now()
	o.cluster = testproc.First(hdr.Get(testproc.ClusterHeader))
	if err != nil {
		o.out, o.err = failed, err.Error()
		return o
	}
	o.rows = len(rows)
	for _, r := range rows {
		if r.PK == pk {
			o.found, o.val = true, r.Val
		}
	}
	return o
}

// classify says what a write's answer means for whether it was applied.
func classify(st *commonpb.Status, err error) (outcome, string) {
	if err != nil {
		s, _ := status.FromError(err)
		switch {
		case strings.Contains(s.Message(), "outcome unknown"),
			s.Code() == codes.DeadlineExceeded, s.Code() == codes.Canceled:
			return unknown, err.Error()
		}
		// The proxy answers with a gRPC error only for calls it never
		// sent (no leader within write_hold, breaker open, no
		// connection).
		return failed, err.Error()
	}
	if st.GetCode() != 0 || st.GetErrorCode() != commonpb.ErrorCode_Success {
		msg := fmt.Sprintf("milvus error %d: %s", st.GetCode(), st.GetReason())
		if strings.Contains(st.GetReason(), "outcome unknown") {
			return unknown, msg
		}
		return failed, msg
	}
	return acked, ""
}

// summary counts a history by kind and outcome.
func summary(ops []op) string {
	type key struct {
		k opKind
		o outcome
	}
	n := map[key]int{}
	for _, o := range ops {
		n[key{o.kind, o.out}]++
	}
	var parts []string
	for k := opInsert; k <= opStrongLatest; k++ {
		a, f, u := n[key{k, acked}], n[key{k, failed}], n[key{k, unknown}]
		if a+f+u > 0 {
			parts = append(parts, fmt.Sprintf("%s %d ok/%d failed/%d unknown", k, a, f, u))
		}
	}
	return strings.Join(parts, ", ")
}

// errorsOf lists the failed or unknown calls (at most n, with a count).
func errorsOf(ops []op, n int) (int, string) {
	var msgs []string
	count := 0
	for _, o := range ops {
		if o.out != acked {
			count++
			if len(msgs) < n {
				msgs = append(msgs, fmt.Sprintf("%s pk %d at %s: %s", o.kind, o.pk, o.start.Format("15:04:05.000"), o.err))
			}
		}
	}
	return count, strings.Join(msgs, "\n")
}

// writeGap is the failover time as a client sees it: from the last write
// the old leader acknowledged to the first the new leader acknowledged
// after at.
func writeGap(ops []op, oldLeader, newLeader string, at time.Time) (lastGood, firstGood time.Time) {
	for _, o := range ops {
		if !o.kind.write() || o.out != acked {
			continue
		}
		if o.cluster == oldLeader && o.end.After(lastGood) {
			lastGood = o.end
		}
		if o.cluster == newLeader && o.end.After(at) && (firstGood.IsZero() || o.end.Before(firstGood)) {
			firstGood = o.end
		}
	}
	return lastGood, firstGood
}

// maxWriteGap is the longest time between two consecutive acknowledged
// writes within [from, to].
func maxWriteGap(ops []op, from, to time.Time) time.Duration {
	var ends []time.Time
	for _, o := range ops {
		if o.kind.write() && o.out == acked && !o.end.Before(from) && !o.end.After(to) {
			ends = append(ends, o.end)
		}
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
	var gap time.Duration
	for i := 1; i < len(ends); i++ {
		gap = max(gap, ends[i].Sub(ends[i-1]))
	}
	return gap
}

// checkReads verifies that no read violated its consistency level: a
// Session read sees the worker's own acknowledged insert (unless that
// write was lost in a forced failover), and any row read is a row that
// was written.
func checkReads(t testing.TB, ops []op, lost map[int64]bool) {
	t.Helper()
	bad := 0
	for _, o := range ops {
		if o.out != acked {
			continue
		}
		switch o.kind {
		case opSession:
			if !o.found && !lost[o.pk] {
				bad++
				if bad <= 5 {
					t.Errorf("Session read of the worker's own acknowledged write %d missed it (served by %s at %s)",
						o.pk, o.cluster, o.start.Format("15:04:05.000"))
				}
			}
			if o.found && o.val != o.pk {
				t.Errorf("Session read of %d returned value %d", o.pk, o.val)
			}
		case opEventually:
			if o.found && o.val != o.pk {
				t.Errorf("Eventually read of %d returned value %d, never written", o.pk, o.val)
			}
		case opSessionLatest, opStrongLatest:
			// The insert was acknowledged before the read began.
			if !o.found && !lost[o.pk] {
				bad++
				if bad <= 5 {
					t.Errorf("%s of acknowledged write %d missed it (served by %s at %s)",
						o.kind, o.pk, o.cluster, o.start.Format("15:04:05.000"))
				}
			}
			if o.found && o.val != o.pk {
				t.Errorf("%s of %d returned value %d", o.kind, o.pk, o.val)
			}
		}
		if o.kind != opStrong && o.rows > 1 {
			t.Errorf("%s of %d returned %d rows: a write applied twice", o.kind, o.pk, o.rows)
		}
	}
	if bad > 0 {
		t.Errorf("%d Session or Strong reads missed an acknowledged write", bad)
	}
}

// checkLinearizable checks the shared registers' upserts and Strong reads
// with porcupine: every Strong read returns the latest acknowledged write
// in some order consistent with real time, across leader changes.
func checkLinearizable(t testing.TB, ops []op) {
	t.Helper()
	var hist []porcupine.Operation
	var t0 time.Time
	for _, o := range ops {
		if t0.IsZero() || o.start.Before(t0) {
			t0 = o.start
		}
	}
	for _, o := range ops {
		if o.kind != opUpsert && o.kind != opStrong {
			continue
		}
		ret := o.end.Sub(t0).Nanoseconds()
		switch {
		case o.out == acked:
		case o.kind == opUpsert:
			// May or may not have happened: it may take effect any time
			// after its call.
			ret = 1 << 62
		default:
			continue // a failed read says nothing
		}
		hist = append(hist, porcupine.Operation{ClientId: o.worker,
			Input:  testproc.RegisterInput{Write: o.kind == opUpsert, Key: o.pk, Val: o.val},
			Call:   o.start.Sub(t0).Nanoseconds(),
			Output: o.val, Return: ret})
	}
	res := porcupine.CheckOperationsTimeout(testproc.RegisterModel(0), hist, 30*time.Second)
	switch res {
	case porcupine.Ok:
		t.Logf("linearizability: %d register operations check out", len(hist))
	case porcupine.Unknown:
		t.Logf("linearizability: porcupine timed out on %d operations (inconclusive)", len(hist))
	default:
		t.Errorf("the shared registers' history (%d operations) is not linearizable", len(hist))
		explainStaleReads(t, ops)
	}
}

// explainStaleReads lists Strong reads that returned a value some
// acknowledged write had already replaced before the read began.
func explainStaleReads(t testing.TB, ops []op) {
	writes := map[int64][]op{} // by key
	byVal := map[int64]op{}
	for _, o := range ops {
		if o.kind == opUpsert {
			writes[o.pk] = append(writes[o.pk], o)
			byVal[o.val] = o
		}
	}
	shown := 0
	for _, r := range ops {
		if r.kind != opStrong || r.out != acked {
			continue
		}
		w, ok := byVal[r.val]
		if r.val != 0 && !ok {
			t.Errorf("Strong read of %d returned %d, never written", r.pk, r.val)
			continue
		}
		for _, w2 := range writes[r.pk] {
			if w2.out != acked || !w2.end.Before(r.start) || w2.val == r.val {
				continue
			}
			if r.val == 0 || w.end.Before(w2.start) {
				if shown < 8 {
					t.Errorf("stale Strong read of %d at %s-%s on %s returned %d (written %s-%s on %s) though %d was acknowledged at %s on %s (ts %d)",
						r.pk, r.start.Format("05.000000"), r.end.Format("05.000000"), r.cluster, r.val,
						w.start.Format("05.000000"), w.end.Format("05.000000"), w.cluster,
						w2.val, w2.end.Format("05.000000"), w2.cluster, w2.ts)
				}
				shown++
				break
			}
		}
	}
	if shown > 8 {
		t.Errorf("... %d stale reads in all", shown)
	}
}
