package perf

import (
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want time.Duration
	}{
		{"1234 (milvus-ha-proxy) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0 0", 3250 * time.Millisecond},
		{"99 (a b) c)) R 1 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 0 0", 30 * time.Millisecond},
		{"garbage", 0},
		{"1 (x) S 1", 0},
	} {
		if got := parseStatCPU(tc.stat); got != tc.want {
			t.Errorf("parseStatCPU(%q) = %v, want %v", tc.stat, got, tc.want)
		}
	}
}

func TestParseMallocs(t *testing.T) {
	got, err := parseMallocs([]byte("# HELP go_memstats_mallocs_total x\n# TYPE go_memstats_mallocs_total counter\ngo_memstats_mallocs_total 1.234567e+06\ngo_memstats_frees_total 5\n"))
	if err != nil || got != 1234567 {
		t.Errorf("parseMallocs = %v, %v; want 1234567", got, err)
	}
	if _, err := parseMallocs([]byte("go_memstats_frees_total 5\n")); err == nil {
		t.Error("parseMallocs without the metric: no error")
	}
}

func TestMedianAndSpread(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
	if got, want := spreadString(map[string]int64{"b": 1, "a": 2, "": 1}), "? 25% a 50% b 25%"; got != want {
		t.Errorf("spreadString = %q, want %q", got, want)
	}
}
