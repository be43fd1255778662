package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram is an HDR-style latency histogram: log-linear buckets whose
// width is at most 2^-precision of the values they hold, so every reported
// percentile is within that relative error of the true nearest-rank value
// (and exact for values below 2^precision). Recording is lock-free (one
// atomic add per counter), so all workers of a target share one histogram
// and the cost per recorded value stays in the nanoseconds, far below the
// cost of the gRPC call being measured.
//
// Values are non-negative int64 (the harness records nanoseconds). Values
// at or above 2^maxExp (about 18 minutes in nanoseconds) land in the last
// bucket; Max still reports them exactly.
type Histogram struct {
	precision uint // sub-bucket bits
	counts    []atomic.Uint64
	total     atomic.Uint64
	sum       atomic.Uint64 // saturates only after 584 years of ns
	min       atomic.Int64  // valid when total > 0; math.MaxInt64 initially
	max       atomic.Int64
}

// maxExp bounds the histogram's range: values >= 2^maxExp are clamped into
// the last bucket (Max stays exact). 2^40 ns is about 18 minutes, far above
// any latency a bounded benchmark can observe.
const maxExp = 40

// Precisions used by the harness: totals to 0.1%, per-second buckets (which
// only feed the plot) to about 3%, which keeps a 10-minute timeline small.
const (
	precisionTotal    = 10
	precisionTimeline = 5
)

// NewHistogram returns an empty histogram whose buckets are at most
// 2^-precision wide relative to their values; precision must be in [1, 20].
func NewHistogram(precision uint) *Histogram {
	if precision < 1 || precision > 20 {
		panic("bench: histogram precision out of range")
	}
	h := &Histogram{precision: precision}
	// Linear region [0, 2^p) plus one block of 2^p buckets per octave
	// [2^e, 2^(e+1)) for e in [p, maxExp).
	h.counts = make([]atomic.Uint64, (maxExp-precision+1)<<precision)
	h.min.Store(math.MaxInt64)
	return h
}

// index maps a value to its bucket.
func (h *Histogram) index(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	p := h.precision
	if u < 1<<p {
		return int(u)
	}
	e := uint(bits.Len64(u) - 1) // floor(log2 u) >= p
	if e >= maxExp {
		return len(h.counts) - 1
	}
	sub := (u >> (e - p)) - 1<<p
	return int((uint64(e-p+1) << p) + sub)
}

// bounds returns the smallest value of bucket i and its width.
func (h *Histogram) bounds(i int) (low, width uint64) {
	p := h.precision
	if i < 1<<p {
		return uint64(i), 1
	}
	k := uint(i) >> p
	sub := uint64(i) & (1<<p - 1)
	shift := k - 1 // e - p
	return (1<<p + sub) << shift, 1 << shift
}

// Record adds one value.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[h.index(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(uint64(v))
	for {
		cur := h.min.Load()
		if v >= cur || h.min.CompareAndSwap(cur, v) {
			break
		}
	}
	for {
		cur := h.max.Load()
		if v <= cur || h.max.CompareAndSwap(cur, v) {
			break
		}
	}
}

// RecordDuration adds one duration in nanoseconds.
func (h *Histogram) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Merge adds every value of o into h. Both must have the same precision.
func (h *Histogram) Merge(o *Histogram) {
	if h.precision != o.precision {
		panic("bench: merging histograms of different precision")
	}
	n := o.total.Load()
	if n == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.total.Add(n)
	h.sum.Add(o.sum.Load())
	if m := o.min.Load(); m < h.min.Load() {
		h.min.Store(m)
	}
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Max is the largest recorded value, exactly; 0 when empty.
func (h *Histogram) Max() int64 {
	if h.total.Load() == 0 {
		return 0
	}
	return h.max.Load()
}

// Min is the smallest recorded value, exactly; 0 when empty.
func (h *Histogram) Min() int64 {
	if h.total.Load() == 0 {
		return 0
	}
	return h.min.Load()
}

// Mean is the exact arithmetic mean; 0 when empty.
func (h *Histogram) Mean() float64 {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Quantile returns the nearest-rank q-quantile (q in [0, 1]): the smallest
// recorded value v such that at least ceil(q*n) values are <= v, reported as
// the highest value of its bucket and clamped to [Min, Max]. So it is exact
// for values below 2^precision and otherwise at most 2^-precision above the
// true value — never below it, which is the safe side for latencies.
// It returns 0 when the histogram is empty.
func (h *Histogram) Quantile(q float64) int64 {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	if q <= 0 {
		return h.Min()
	}
	if q >= 1 {
		return h.Max()
	}
	rank := uint64(math.Ceil(q * float64(n)))
	// Guard against float rounding pushing q*n a hair above an integer
	// (0.07*100 is 7.000000000000001 in float64): a fractional part below
	// the product's rounding error is not real.
	if r := q * float64(n); rank > 1 && float64(rank-1) >= r-(r*1e-15+1e-12) {
		rank--
	}
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			low, width := h.bounds(i)
			v := int64(low + width - 1)
			if i == len(h.counts)-1 || v > h.Max() {
				v = h.Max()
			}
			if v < h.Min() {
				v = h.Min()
			}
			return v
		}
	}
	return h.Max()
}
