package hybridts

import (
	"testing"
	"time"
)

func TestHybridTimestamps(t *testing.T) {
	ms := time.Date(2025, 11, 25, 12, 0, 0, 0, time.UTC).UnixMilli()
	ts := Compose(ms, 7)
	if got := Physical(ts); got != ms {
		t.Fatalf("Physical = %d, want %d", got, ms)
	}
	if got := Logical(ts); got != 7 {
		t.Fatalf("Logical = %d, want 7", got)
	}
	if got := Compose(ms, 1<<LogicalBits+3); got != Compose(ms, 3) {
		t.Fatalf("Compose keeps only 18 logical bits: got %d", got)
	}
	if got := Time(ts); !got.Equal(time.UnixMilli(ms)) {
		t.Fatalf("Time = %v", got)
	}
	if got := FromTime(time.UnixMilli(ms)); got != Compose(ms, 0) {
		t.Fatalf("FromTime = %d", got)
	}
	if got := ts; got != uint64(ms)<<18|7 {
		t.Fatalf("layout: got %d, want physical<<18|logical", got)
	}
	before := FromTime(time.Now())
	now := Now()
	if now < before || Logical(now) != 0 {
		t.Fatalf("Now = %d, before it %d", now, before)
	}
	tests := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"add 5s", AddDuration(ts, 5*time.Second), Compose(ms+5000, 7)},
		{"add -5s", AddDuration(ts, -5*time.Second), Compose(ms-5000, 7)},
		{"sub 5s", SubDuration(ts, 5*time.Second), Compose(ms-5000, 7)},
		{"sub -1ms", SubDuration(ts, -time.Millisecond), Compose(ms+1, 7)},
		{"sub below epoch", SubDuration(Compose(10, 1), time.Second), 0},
		{"sub sub-ms truncates", SubDuration(ts, 999*time.Microsecond), ts},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	durs := []struct {
		a, b uint64
		want time.Duration
	}{
		{Compose(ms+1500, 0), Compose(ms, 9), 1500 * time.Millisecond},
		{Compose(ms, 0), Compose(ms+2, 0), -2 * time.Millisecond},
		{Compose(ms, 5), Compose(ms, 1), 0},
	}
	for _, tc := range durs {
		if got := Sub(tc.a, tc.b); got != tc.want {
			t.Errorf("Sub(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
