package consistency

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
)

func TestLevelString(t *testing.T) {
	if Customized.String() != "Customized" || Level(9).String() != "Level(9)" {
		t.Fatalf("String: %q %q", Customized, Level(9))
	}
}

func TestResolve(t *testing.T) {
	const w = uint64(1)<<40 | 5 // a real write timestamp
	tests := []struct {
		name string
		f    ReadFields
		coll Level
		want Demand
	}{
		// pymilvus
		{"py none, no write", ReadFields{Level: 0, Guarantee: 1, UseDefault: true}, Bounded, Demand{Level: Bounded}},
		{"py none, write, coll Session", ReadFields{Guarantee: w, UseDefault: true}, Session, Demand{Level: Session, Guarantee: w}},
		{"py none, no write, coll Session", ReadFields{Guarantee: 1, UseDefault: true}, Session, Demand{Level: Session}},
		{"py none, coll Strong", ReadFields{Guarantee: w, UseDefault: true}, Strong, Demand{Level: Strong}},
		{"py Strong", ReadFields{Level: Strong}, Bounded, Demand{Level: Strong}},
		{"py Session no write", ReadFields{Level: Session, Guarantee: 1}, Bounded, Demand{Level: Session}},
		{"py Session write", ReadFields{Level: Session, Guarantee: w}, Bounded, Demand{Level: Session, Guarantee: w}},
		{"py Bounded", ReadFields{Level: Bounded, Guarantee: 2}, Strong, Demand{Level: Bounded}},
		{"py Eventually", ReadFields{Level: Eventually, Guarantee: 1}, Strong, Demand{Level: Eventually}},
		{"py Customized default", ReadFields{Level: Customized, Guarantee: 1}, Strong, Demand{Level: Customized}},
		{"py Customized ts", ReadFields{Level: Customized, Guarantee: w}, Strong, Demand{Level: Customized, Guarantee: w}},
		{"py iterator page", ReadFields{Guarantee: w, UseDefault: true, Iterator: true}, Bounded, Demand{Level: Customized, Guarantee: w, Pinned: true}},
		{"py iterator first page", ReadFields{Guarantee: 1, UseDefault: true, Iterator: true}, Bounded, Demand{Level: Bounded}},
		// Go client/v2
		{"go none", ReadFields{Level: Bounded, UseDefault: true}, Eventually, Demand{Level: Eventually}},
		{"go Session", ReadFields{Level: Session}, Strong, Demand{Level: Session}},
		{"go Bounded", ReadFields{Level: Bounded}, Strong, Demand{Level: Bounded}},
		{"go Eventually", ReadFields{Level: Eventually}, Strong, Demand{Level: Eventually}},
		{"go Customized (GT 0 waits for nothing)", ReadFields{Level: Customized}, Strong, Demand{Level: Customized}},
		// Milvus's compatibility path: Strong level carrying a guarantee.
		{"compat Strong+2 = Bounded", ReadFields{Level: Strong, Guarantee: 2}, Session, Demand{Level: Bounded}},
		{"compat Strong+1 = Eventually", ReadFields{Level: Strong, Guarantee: 1}, Session, Demand{Level: Eventually}},
		{"compat Strong+ts = Customized", ReadFields{Level: Strong, Guarantee: w}, Session, Demand{Level: Customized, Guarantee: w}},
		{"compat ignored under UDC", ReadFields{Level: Strong, Guarantee: 2, UseDefault: true}, Session, Demand{Level: Session}},
		{"unknown level behaves as Customized", ReadFields{Level: 42, Guarantee: w}, Strong, Demand{Level: Customized, Guarantee: w}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Resolve(tc.f, tc.coll); got != tc.want {
				t.Fatalf("Resolve(%+v, %v) = %+v, want %+v", tc.f, tc.coll, got, tc.want)
			}
		})
	}
}

func TestRequired(t *testing.T) {
	now := hybridts.Compose(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), 3)
	const w = uint64(1)<<40 | 5
	r := Rules{BoundedStaleness: 5 * time.Second}
	tests := []struct {
		name    string
		d       Demand
		session uint64
		want    uint64
	}{
		{"session none", Demand{Level: Session}, 0, 0},
		{"session tracked", Demand{Level: Session}, w, w},
		{"session client newer", Demand{Level: Session, Guarantee: w + 10}, w, w + 10},
		{"session tracked newer", Demand{Level: Session, Guarantee: w}, w + 10, w + 10},
		{"bounded", Demand{Level: Bounded}, w + 10, hybridts.SubDuration(now, 5*time.Second)},
		{"eventually ignores session", Demand{Level: Eventually}, w, 0},
		{"customized ignores session", Demand{Level: Customized, Guarantee: w}, w + 10, w},
		{"customized sentinel", Demand{Level: Customized}, w, 0},
		{"pinned iterator", Demand{Level: Customized, Guarantee: w, Pinned: true}, w + 10, w},
		{"strong is the caller's", Demand{Level: Strong}, w, 0},
	}
	for _, tc := range tests {
		if got := r.Required(tc.d, tc.session, now); got != tc.want {
			t.Errorf("%s: Required = %d, want %d", tc.name, got, tc.want)
		}
	}
	// Unknown leader clock: the local clock stands in.
	before := hybridts.SubDuration(hybridts.FromTime(time.Now()), 5*time.Second)
	got := r.Required(Demand{Level: Bounded}, 0, 0)
	after := hybridts.SubDuration(hybridts.FromTime(time.Now()), 5*time.Second)
	if got < before || got > after {
		t.Fatalf("Bounded with unknown leader clock = %d, want in [%d, %d]", got, before, after)
	}
	// A staleness larger than the clock never yields a sentinel.
	if got := (Rules{BoundedStaleness: time.Hour}).Required(Demand{Level: Bounded}, 0, hybridts.Compose(1000, 0)); !IsTimestamp(got) {
		t.Fatalf("Bounded produced sentinel %d", got)
	}
}

func TestForwardNeverCustomizedSentinel(t *testing.T) {
	for r := uint64(0); r < 10; r++ {
		level, g := Forward(r)
		if level == Customized && !IsTimestamp(g) {
			t.Fatalf("Forward(%d) = Customized %d", r, g)
		}
		if r <= 2 && (level != Eventually || g != GuaranteeEventually) {
			t.Fatalf("Forward(%d) = %v %d, want Eventually 1", r, level, g)
		}
		if r > 2 && (level != Customized || g != r) {
			t.Fatalf("Forward(%d) = %v %d, want Customized %d", r, level, g, r)
		}
	}
}

func TestTrackerRecordAndLookup(t *testing.T) {
	tr := NewTracker(0)
	if got := tr.LastWrite("s1", "", "c"); got != 0 {
		t.Fatalf("empty tracker LastWrite = %d", got)
	}
	tr.RecordWrite("s1", "", "c", 100)
	tr.RecordWrite("s1", "default", "c", 90) // older: ignored; "" == default
	tr.RecordWrite("s1", "db2", "c", 300)
	tr.RecordWrite("s2", "", "c", 500)
	tr.RecordWrite("s1", "", "", 999) // no collection: ignored
	tr.RecordDDL("s1", "", 200)
	tr.RecordDDL("s1", "", 0) // zero: ignored
	tests := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"write", tr.LastWrite("s1", "default", "c"), 100},
		{"write other db", tr.LastWrite("s1", "db2", "c"), 300},
		{"other session", tr.LastWrite("s2", "default", "c"), 500},
		{"unknown collection", tr.LastWrite("s1", "", "d"), 0},
		{"ddl", tr.LastDDL("s1", ""), 200},
		{"ddl other db", tr.LastDDL("s1", "db2"), 0},
		{"session = max(write, ddl)", tr.Session("s1", "", "c"), 200},
		{"session ddl only", tr.Session("s1", "", ""), 200},
		{"session other db", tr.Session("s1", "db2", "c"), 300},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	if tr.Len() != 4 {
		t.Fatalf("Len = %d, want 4", tr.Len())
	}
}

// TestTrackerEvictionIsConservative fills one shard past its capacity and
// checks that memory stays bounded and that every write ever recorded is
// still covered by what lookups return.
func TestTrackerEvictionIsConservative(t *testing.T) {
	tr := NewTracker(trackerShards * 4) // 4 entries per shard
	const n = 1000
	for i := 0; i < n; i++ {
		tr.RecordWrite("session", "", fmt.Sprintf("c%d", i), uint64(1000+i))
	}
	if l := tr.Len(); l > 4 {
		t.Fatalf("Len = %d after %d writes to one shard, want <= 4", l, n)
	}
	for i := 0; i < n; i++ {
		if got := tr.LastWrite("session", "", fmt.Sprintf("c%d", i)); got < uint64(1000+i) {
			t.Fatalf("c%d: LastWrite = %d, below the recorded %d", i, got, 1000+i)
		}
	}
	// The most recent entries survive exactly.
	if got := tr.LastWrite("session", "", fmt.Sprintf("c%d", n-1)); got != uint64(1000+n-1) {
		t.Fatalf("newest entry = %d", got)
	}
}

func TestTrackerLRUKeepsRecentlyUsed(t *testing.T) {
	tr := NewTracker(trackerShards * 2) // 2 entries per shard
	tr.RecordWrite("s", "", "a", 10)
	tr.RecordWrite("s", "", "b", 20)
	tr.LastWrite("s", "", "a")       // a is now the most recent
	tr.RecordWrite("s", "", "c", 30) // evicts b (floor 20)
	if got := tr.LastWrite("s", "", "a"); got != 20 {
		// a itself is 10 but the floor from evicting b is 20.
		t.Fatalf("a = %d, want max(10, floor 20) = 20", got)
	}
	if got := tr.LastWrite("s", "", "c"); got != 30 {
		t.Fatalf("c = %d, want 30", got)
	}
	if got := tr.LastWrite("s", "", "b"); got != 20 {
		t.Fatalf("evicted b = %d, want floor 20", got)
	}
}

func TestTrackerConcurrent(t *testing.T) {
	tr := NewTracker(1000)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			s := fmt.Sprintf("s%d", g)
			for i := 1; i <= 2000; i++ {
				tr.RecordWrite(s, "", "c", uint64(i))
				if got := tr.LastWrite(s, "", "c"); got < uint64(i) {
					t.Errorf("%s: read %d after writing %d", s, got, i)
					return
				}
				tr.RecordDDL(s, "db", uint64(i))
				_ = tr.Session(s, "db", "c")
			}
		}(g)
	}
	wg.Wait()
}

func BenchmarkTrackerSession(b *testing.B) {
	tr := NewTracker(0)
	for i := 0; i < 1000; i++ {
		tr.RecordWrite(fmt.Sprintf("s%d", i), "", "coll", uint64(i))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			_ = tr.Session("s42", "", "coll")
		}
	})
}
