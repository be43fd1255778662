package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// nearestRank is the textbook definition the histogram must match:
// the value at 1-based rank ceil(q*n) of the sorted sample.
func nearestRank(sorted []int64, q float64) int64 {
	if q <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(q*float64(len(sorted)) - 1e-9))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

func TestHistogramExactSmallValues(t *testing.T) {
	seq := func(lo, hi int64) []int64 {
		var out []int64
		for v := lo; v <= hi; v++ {
			out = append(out, v)
		}
		return out
	}
	tests := []struct {
		name   string
		values []int64
		q      []float64
		want   []int64
	}{
		{"1..100", seq(1, 100), []float64{0.5, 0.9, 0.99, 0.999, 1}, []int64{50, 90, 99, 100, 100}},
		{"1..1000", seq(1, 1000), []float64{0.5, 0.9, 0.99, 0.999, 1}, []int64{500, 900, 990, 999, 1000}},
		{"single", []int64{7}, []float64{0, 0.5, 0.99, 1}, []int64{7, 7, 7, 7}},
		{"skewed", []int64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1000}, []float64{0.5, 0.9, 0.91, 1}, []int64{1, 1, 1000, 1000}},
		{"rounding 0.07*100", seq(1, 100), []float64{0.07, 0.29, 0.57}, []int64{7, 29, 57}},
		{"unsorted", []int64{5, 3, 9, 1, 7}, []float64{0.2, 0.4, 0.6, 0.8, 1}, []int64{1, 3, 5, 7, 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram(precisionTotal)
			for _, v := range tt.values {
				h.Record(v)
			}
			for i, q := range tt.q {
				if got := h.Quantile(q); got != tt.want[i] {
					t.Errorf("Quantile(%v) = %d, want %d", q, got, tt.want[i])
				}
			}
			if got, want := h.Count(), uint64(len(tt.values)); got != want {
				t.Errorf("Count = %d, want %d", got, want)
			}
			if got, want := h.Max(), slices.Max(tt.values); got != want {
				t.Errorf("Max = %d, want %d", got, want)
			}
			if got, want := h.Min(), slices.Min(tt.values); got != want {
				t.Errorf("Min = %d, want %d", got, want)
			}
			var sum int64
			for _, v := range tt.values {
				sum += v
			}
			if got, want := h.Mean(), float64(sum)/float64(len(tt.values)); math.Abs(got-want) > 1e-9 {
				t.Errorf("Mean = %v, want %v", got, want)
			}
		})
	}
}

func TestHistogramEmpty(t *testing.T) {
	h := NewHistogram(precisionTotal)
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 || h.Count() != 0 {
		t.Fatalf("empty histogram reports non-zero: p50=%d max=%d min=%d mean=%v n=%d",
			h.Quantile(0.5), h.Max(), h.Min(), h.Mean(), h.Count())
	}
}

// Large values (latencies in ns) must be within the promised relative error
// of the true nearest-rank value, and never below it.
func TestHistogramRelativeError(t *testing.T) {
	for _, prec := range []uint{precisionTimeline, precisionTotal} {
		r := rand.New(rand.NewPCG(1, uint64(prec)))
		h := NewHistogram(prec)
		vals := make([]int64, 20000)
		for i := range vals {
			// Log-uniform from 1µs to 10s: the range a benchmark sees.
			vals[i] = int64(math.Exp(math.Log(1e3) + r.Float64()*(math.Log(1e10)-math.Log(1e3))))
			h.Record(vals[i])
		}
		slices.Sort(vals)
		tol := math.Ldexp(1, -int(prec))
		for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999} {
			want := nearestRank(vals, q)
			got := h.Quantile(q)
			if got < want || float64(got-want) > tol*float64(want) {
				t.Errorf("precision %d: Quantile(%v) = %d, true %d (tolerance %.4f)", prec, q, got, want, tol)
			}
		}
		if h.Max() != vals[len(vals)-1] {
			t.Errorf("precision %d: Max = %d, want %d", prec, h.Max(), vals[len(vals)-1])
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	h := NewHistogram(precisionTimeline)
	prev := -1
	for _, v := range []int64{0, 1, 31, 32, 33, 63, 64, 65, 1000, 1 << 20, 1<<20 + 12345, 1<<39 + 1, 1<<40 - 1} {
		i := h.index(v)
		if i < prev {
			t.Errorf("index(%d) = %d, below the previous value's %d", v, i, prev)
		}
		prev = i
		low, width := h.bounds(i)
		if uint64(v) < low || uint64(v) >= low+width {
			t.Errorf("value %d outside its bucket [%d, %d)", v, low, low+width)
		}
		if limit := max(uint64(1), uint64(v)>>precisionTimeline); width > limit {
			t.Errorf("value %d: bucket width %d exceeds %d", v, width, limit)
		}
	}
	// Values beyond the range clamp into the last bucket but Max stays exact.
	h.Record(1 << 50)
	if h.Max() != 1<<50 || h.Quantile(0.99) != 1<<50 {
		t.Errorf("huge value: Max=%d p99=%d, want %d", h.Max(), h.Quantile(0.99), int64(1<<50))
	}
	h.Record(-5) // negative durations (clock steps) count as 0
	if h.Min() != 0 {
		t.Errorf("Min after a negative = %d, want 0", h.Min())
	}
}

func TestHistogramMergeAndConcurrency(t *testing.T) {
	a, b := NewHistogram(precisionTotal), NewHistogram(precisionTotal)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := int64(1); v <= 250; v++ {
				if w%2 == 0 {
					a.Record(v + int64(w)*250)
				} else {
					b.Record(v + int64(w)*250)
				}
			}
		}()
	}
	wg.Wait()
	a.Merge(b)
	if a.Count() != 1000 || a.Min() != 1 || a.Max() != 1000 || a.Quantile(0.5) != 500 || a.Quantile(0.99) != 990 {
		t.Fatalf("merged: n=%d min=%d max=%d p50=%d p99=%d; want 1000 1 1000 500 990",
			a.Count(), a.Min(), a.Max(), a.Quantile(0.5), a.Quantile(0.99))
	}
}
