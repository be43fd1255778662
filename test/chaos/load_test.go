package chaos_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
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

const collName = "chaos"

type opKind int

const (
	opInsert     opKind = iota // a new key, written once
	opUpsert                   // a shared register
	opSession                  // Session read of the worker's own last insert
	opStrong                   // Strong read of a shared register
	opEventually               // Eventually read of one of the worker's earlier inserts
)

func (k opKind) String() string {
	return [...]string{"insert", "upsert", "session-read", "strong-read", "eventually-read"}[k]
}

type outcome int

const (
	acked  outcome = iota // the call succeeded
	failed                // it failed
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
	err     error
	ts      uint64 // MutationResult.timestamp of a write
	cluster string // x-milvus-ha-cluster
	start   time.Time
	end     time.Time
}

// client is the suites' raw Milvus client (test/testproc) on collName.
type client = testproc.Client

func dial(t testing.TB, addr string) *client { return testproc.Dial(t, addr, collName) }

// load is the steady mixed load through the proxy and its history.
type load struct {
	registers int
	pace      time.Duration
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu  sync.Mutex
	ops []op
}

func startLoad(t testing.TB, addr string, workers, registers int, seed uint64) *load {
	l := &load{registers: registers, pace: 5 * time.Millisecond}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	for w := range workers {
		c := dial(t, addr)
		l.wg.Go(func() { l.worker(w, c, rand.New(rand.NewPCG(seed, uint64(w)))) })
	}
	return l
}

// stop ends the load after the calls in flight and returns the history.
func (l *load) stop() []op {
	l.cancel()
	l.wg.Wait()
	return l.snapshot()
}

func (l *load) snapshot() []op {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ops)
}

func (l *load) record(o op) {
	l.mu.Lock()
	l.ops = append(l.ops, o)
	l.mu.Unlock()
}

func (l *load) worker(w int, c *client, rng *rand.Rand) {
	var seq int64
	for l.ctx.Err() == nil {
		seq++
		if l.registers > 0 && rng.IntN(3) == 0 {
			k := int64(rng.IntN(l.registers)) + 1
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
				// Served by an alternative while one is eligible, during
				// leader changes too.
				earlier := int64(w+1)*1_000_000_000 + 1 + rng.Int64N(seq)
				l.record(l.read(c, w, opEventually, earlier, 0))
			}
		}
		time.Sleep(l.pace)
	}
}

// callCtx is independent of the load's context: calls in flight when the
// load stops finish normally. Its bound is above write_hold.
func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 20*time.Second)
}

func (l *load) write(c *client, w int, kind opKind, pk, val int64) op {
	o := op{worker: w, kind: kind, pk: pk, val: val, start: time.Now()}
	ctx, cancel := callCtx()
	defer cancel()
	res, cluster, err := c.Write(ctx, kind != opInsert, pk, val)
	o.end = time.Now()
	o.cluster = cluster
	o.ts = res.GetTimestamp()
	if o.err = testproc.StatusErr(res.GetStatus(), err); o.err != nil {
		o.out = failed
	}
	return o
}

func (l *load) read(c *client, w int, kind opKind, pk int64, guarantee uint64) op {
	o := op{worker: w, kind: kind, pk: pk, start: time.Now()}
	ctx, cancel := callCtx()
	defer cancel()
	level := commonpb.ConsistencyLevel_Session
	switch kind {
	case opStrong:
		level = commonpb.ConsistencyLevel_Strong
	case opEventually:
		level = commonpb.ConsistencyLevel_Eventually
	}
	var hdr metadata.MD
	rows, err := c.Query(ctx, level, guarantee, []grpc.CallOption{grpc.Header(&hdr)}, pk)
	o.end = time.Now()
	o.cluster = testproc.First(hdr.Get(testproc.ClusterHeader))
	if err != nil {
		o.out, o.err = failed, err
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

var (
	digits  = regexp.MustCompile(`[0-9]+(\.[0-9]+)?`)
	addrish = regexp.MustCompile(`N(\.N)*:N`)
)

// errorKind groups an error by its gRPC code and its message with numbers
// and addresses blanked out.
func errorKind(err error) string {
	s, _ := status.FromError(err)
	msg := s.Message()
	if s.Code() == codes.OK || s.Code() == codes.Unknown {
		msg = err.Error()
	}
	msg = addrish.ReplaceAllString(digits.ReplaceAllString(msg, "N"), "ADDR")
	if len(msg) > 110 {
		msg = msg[:110] + "…"
	}
	return s.Code().String() + ": " + msg
}

// errorTable counts the failed calls by operation and error kind.
func errorTable(ops []op) (int, string) {
	n := map[string]int{}
	total := 0
	for _, o := range ops {
		if o.out == failed {
			n[o.kind.String()+" "+errorKind(o.err)]++
			total++
		}
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return n[keys[i]] > n[keys[j]] || n[keys[i]] == n[keys[j]] && keys[i] < keys[j] })
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %6d  %s\n", n[k], k)
	}
	return total, b.String()
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
	for k := opInsert; k <= opEventually; k++ {
		parts = append(parts, fmt.Sprintf("%s %d ok/%d failed", k, n[key{k, acked}], n[key{k, failed}]))
	}
	return strings.Join(parts, ", ")
}

// window is a stretch of time in which a lossy change took place: from
// just before its first step to the moment exactly one writable leader was
// confirmed again.
type window struct{ from, to time.Time }

// checkSession: a Session read sees the worker's own acknowledged insert,
// unless that insert was put at risk by a lossy change; no read returns a
// value nobody wrote or a key twice.
func checkSession(t testing.TB, ops []op, atRisk map[int64]bool) int {
	t.Helper()
	bad := 0
	for _, o := range ops {
		if o.kind == opEventually && o.out == acked {
			if o.found && o.val != o.pk {
				t.Errorf("Eventually read of %d returned value %d, never written", o.pk, o.val)
			}
			if o.rows > 1 {
				t.Errorf("Eventually read of %d returned %d rows: a write applied twice", o.pk, o.rows)
			}
		}
		if o.kind != opSession || o.out != acked {
			continue
		}
		if !o.found && !atRisk[o.pk] {
			bad++
			if bad <= 5 {
				t.Errorf("Session read of the worker's own acknowledged insert %d missed it (served by %s at %s)",
					o.pk, o.cluster, o.start.Format("15:04:05.000"))
			}
		}
		if o.found && o.val != o.pk {
			t.Errorf("Session read of %d returned value %d, never written", o.pk, o.val)
		}
		if o.rows > 1 {
			t.Errorf("Session read of %d returned %d rows: a write applied twice", o.pk, o.rows)
		}
	}
	return bad
}

// checkLinearizable checks the shared registers' upserts and Strong reads
// with porcupine, one segment between lossy windows at a time: a forced
// promotion may drop acknowledged writes, so a segment after one starts
// from an unknown value. Calls overlapping a lossy window count as
// possibly applied (writes) or say nothing (reads).
func checkLinearizable(t testing.TB, ops []op, lossy []window) (checked int, inconclusive bool) {
	t.Helper()
	if len(ops) == 0 {
		return 0, false
	}
	type seg struct{ from, to time.Time }
	segs := []seg{{from: ops[0].start}}
	for _, o := range ops {
		if o.start.Before(segs[0].from) {
			segs[0].from = o.start
		}
	}
	for _, w := range lossy {
		segs[len(segs)-1].to = w.from
		segs = append(segs, seg{from: w.to})
	}
	segs[len(segs)-1].to = time.Now().Add(time.Hour)
	for i, s := range segs {
		var hist []porcupine.Operation
		t0 := s.from
		for _, o := range ops {
			if o.kind != opUpsert && o.kind != opStrong {
				continue
			}
			if !o.end.After(s.from) || !o.start.Before(s.to) {
				continue // entirely outside the segment
			}
			inside := !o.start.Before(s.from) && !o.end.After(s.to)
			call := max(o.start.Sub(t0).Nanoseconds(), 0)
			ret := o.end.Sub(t0).Nanoseconds()
			switch {
			case o.kind == opUpsert && (o.out != acked || !inside):
				// May or may not have taken effect, any time after its call.
				ret = 1 << 62
			case o.kind == opStrong && (o.out != acked || !inside):
				continue
			}
			hist = append(hist, porcupine.Operation{ClientId: o.worker,
				Input:  testproc.RegisterInput{Write: o.kind == opUpsert, Key: o.pk, Val: o.val},
				Call:   call,
				Output: o.val, Return: ret})
		}
		init := int64(0)
		if i > 0 {
			init = testproc.UnknownValue
		}
		model := testproc.RegisterModel(init)
		checked += len(hist)
		switch porcupine.CheckOperationsTimeout(model, hist, 30*time.Second) {
		case porcupine.Ok:
		case porcupine.Unknown:
			inconclusive = true
		default:
			t.Errorf("the shared registers' Strong history is not linearizable in segment %d (%s to %s, %d operations)",
				i, s.from.Format("15:04:05.000"), s.to.Format("15:04:05.000"), len(hist))
		}
	}
	return checked, inconclusive
}
