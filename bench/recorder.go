package bench

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"google.golang.org/grpc/codes"
)

// opKind is what one operation was.
type opKind int

const (
	opSearch opKind = iota
	opQuery
	opInsert
	opUpsert
	opVerify // the read-your-writes read after an insert
	numOpKinds
)

var opNames = [numOpKinds]string{"search", "query", "insert", "upsert", "verify"}

func (k opKind) String() string { return opNames[k] }

func (k opKind) isWrite() bool { return k == opInsert || k == opUpsert }

// outcome is what the recorder needs to know about one finished call.
type outcome struct {
	kind    opKind
	start   time.Time
	latency time.Duration
	code    codes.Code       // gRPC code; OK when the call completed
	status  *commonpb.Status // Milvus status in the response, when it completed
	cluster string           // x-milvus-ha-cluster response header
	ts      uint64           // MutationResult.timestamp of a write
}

// errKey names an outcome's error for "errors by code", or "" when it
// succeeded: "grpc:Unavailable" for a failed call, "milvus:<code>" (the
// merr code, or the legacy error_code's name when code is 0) for an error
// status inside a completed call.
func (o *outcome) errKey() string {
	if o.code != codes.OK {
		return "grpc:" + o.code.String()
	}
	return milvusErrKey(o.status)
}

func milvusErrKey(st *commonpb.Status) string {
	if st == nil || (st.GetCode() == 0 && st.GetErrorCode() == commonpb.ErrorCode_Success) {
		return ""
	}
	if st.GetCode() != 0 {
		return "milvus:" + strconv.Itoa(int(st.GetCode()))
	}
	return "milvus:" + st.GetErrorCode().String()
}

// counterMap is a string-keyed set of counters that is lock-free once a key
// exists (the common case: a handful of cluster ids and error codes).
type counterMap struct{ m sync.Map }

func (c *counterMap) add(key string, n uint64) {
	if v, ok := c.m.Load(key); ok {
		v.(*atomic.Uint64).Add(n)
		return
	}
	v, _ := c.m.LoadOrStore(key, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(n)
}

func (c *counterMap) snapshot() map[string]uint64 {
	out := map[string]uint64{}
	c.m.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

// second holds what happened in one second of the run (by completion time).
type second struct {
	ok, errs atomic.Uint64
	lat      *Histogram // successful calls only
}

// timeline is the per-second record behind the plot. Workers cache the
// bucket of the current second, so the mutex is taken about once per
// worker per second.
type timeline struct {
	mu   sync.Mutex
	secs []*second
}

func (t *timeline) at(i int) *second {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.secs) <= i {
		t.secs = append(t.secs, nil)
	}
	if t.secs[i] == nil {
		t.secs[i] = &second{lat: NewHistogram(precisionTimeline)}
	}
	return t.secs[i]
}

// gapTracker finds the longest interval without a successful completion of
// some class of operations (writes, reads): the outage a failover causes.
type gapTracker struct {
	last   atomic.Int64 // ns since run start of the last success
	max    atomic.Int64
	maxEnd atomic.Int64 // when the longest gap ended
}

func (g *gapTracker) reset(now int64) { g.last.Store(now) }

func (g *gapTracker) success(now int64) {
	prev := g.last.Swap(now)
	g.observe(prev, now)
}

// observe records a gap [from, to]; also used at a phase's end, where a
// still-open gap ends.
func (g *gapTracker) observe(from, to int64) {
	d := to - from
	for {
		cur := g.max.Load()
		if d <= cur {
			return
		}
		if g.max.CompareAndSwap(cur, d) {
			g.maxEnd.Store(to)
			return
		}
	}
}

// LeaderChange is one observed change of the cluster taking writes.
type LeaderChange struct {
	At     float64 `json:"at_s"` // seconds since measurement start
	From   string  `json:"from"`
	To     string  `json:"to"`
	Source string  `json:"source"` // "header" (writes' x-milvus-ha-cluster) or "admin" (topology epoch)
}

// recorder collects one target's results. Every method is safe for
// concurrent use by the target's workers.
type recorder struct {
	t0 time.Time // measurement start, shared by all targets

	hist   [numOpKinds]*Histogram
	errs   [numOpKinds]atomic.Uint64
	codes  counterMap
	reads  counterMap // by serving cluster
	writes counterMap

	// Sample error messages, one per code, to make the table actionable.
	sampleMu sync.Mutex
	samples  map[string]string

	verifyChecks, verifyMisses, verifySkipped atomic.Uint64

	tl timeline

	writeGap, readGap gapTracker

	leaderMu sync.Mutex
	leader   string
	// leaderLastEnd is when the latest call served by the current leader
	// ended (UnixNano); read without the mutex on the fast path.
	leaderLastEnd atomic.Int64
	leaderEvents  []LeaderChange
	leaderFast    atomic.Pointer[string] // == leader; read without the mutex

	active atomic.Int64 // measured ns, summed over this target's phases
	ops    atomic.Uint64

	// The target's phases, in seconds since t0, so a second it was only
	// partly measured (a round's first and last) reports its rate over the
	// part measured, instead of a dip.
	phaseMu sync.Mutex
	phases  [][2]float64
}

func (r *recorder) addPhase(from, to time.Duration) {
	r.phaseMu.Lock()
	r.phases = append(r.phases, [2]float64{from.Seconds(), to.Seconds()})
	r.phaseMu.Unlock()
}

// activeIn is how much of [from, to) the target was measured.
func (r *recorder) activeIn(from, to float64) float64 {
	r.phaseMu.Lock()
	defer r.phaseMu.Unlock()
	var s float64
	for _, p := range r.phases {
		if lo, hi := max(from, p[0]), min(to, p[1]); hi > lo {
			s += hi - lo
		}
	}
	return s
}

func newRecorder(t0 time.Time) *recorder {
	r := &recorder{t0: t0, samples: map[string]string{}}
	for i := range r.hist {
		r.hist[i] = NewHistogram(precisionTotal)
	}
	return r
}

// workerCursor is a worker's cached timeline bucket.
type workerCursor struct {
	idx int
	sec *second
}

func (r *recorder) record(o *outcome, cur *workerCursor, errMsg string) {
	end := o.start.Add(o.latency)
	since := end.Sub(r.t0)
	idx := int(since / time.Second)
	if idx < 0 {
		idx = 0
	}
	if cur.sec == nil || cur.idx != idx {
		cur.idx, cur.sec = idx, r.tl.at(idx)
	}
	r.ops.Add(1)
	if key := o.errKey(); key != "" {
		r.errs[o.kind].Add(1)
		r.codes.add(key, 1)
		cur.sec.errs.Add(1)
		r.sample(key, errMsg, o.status)
		return
	}
	r.hist[o.kind].RecordDuration(o.latency)
	cur.sec.ok.Add(1)
	cur.sec.lat.RecordDuration(o.latency)
	if o.kind.isWrite() {
		r.writeGap.success(int64(since))
		if o.cluster != "" {
			r.writes.add(o.cluster, 1)
			r.observeLeader(o.cluster, o.start, o.start.Add(o.latency), since, "header")
		}
	} else {
		r.readGap.success(int64(since))
		if o.cluster != "" {
			r.reads.add(o.cluster, 1)
		}
	}
}

func (r *recorder) sample(key, msg string, st *commonpb.Status) {
	if msg == "" && st != nil {
		msg = st.GetReason()
	}
	r.sampleMu.Lock()
	if _, ok := r.samples[key]; !ok {
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		r.samples[key] = msg
	}
	r.sampleMu.Unlock()
}

// observeLeader notes the cluster a write went to (or the admin API's
// leader). Concurrent writes complete out of order, and a write that
// started before a switch may be served by either side of it, so a call
// proves a change only when it started after every call the current leader
// served had ended: then no reordering can explain it.
func (r *recorder) observeLeader(id string, start, ended time.Time, since time.Duration, source string) {
	end := ended.UnixNano()
	if p := r.leaderFast.Load(); p != nil && *p == id {
		for {
			last := r.leaderLastEnd.Load()
			if end <= last || r.leaderLastEnd.CompareAndSwap(last, end) {
				return
			}
		}
	}
	r.leaderMu.Lock()
	defer r.leaderMu.Unlock()
	if id == r.leader {
		if end > r.leaderLastEnd.Load() {
			r.leaderLastEnd.Store(end)
		}
		return
	}
	if r.leader != "" && start.UnixNano() < r.leaderLastEnd.Load() {
		return // overlaps a call the current leader served: no proof yet
	}
	if r.leader != "" {
		r.leaderEvents = append(r.leaderEvents, LeaderChange{
			At: since.Seconds(), From: r.leader, To: id, Source: source,
		})
	}
	r.leader = id
	r.leaderLastEnd.Store(end)
	r.leaderFast.Store(&id)
}

func (r *recorder) verified(found bool) {
	r.verifyChecks.Add(1)
	if !found {
		r.verifyMisses.Add(1)
	}
}
