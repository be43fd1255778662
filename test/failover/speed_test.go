package failover_test

import (
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// The speed measurements of failover and switchover. `make test` runs one failover and
// three switchovers; for the report:
//
//	MHP_FAILOVER_ROUNDS=20 MHP_SWITCHOVER_ROUNDS=20 go test -count=1 -run 'Speed' -v ./test/failover/
//
// Goals: failover time p99 < 2s with detect_after 1s; switchover write
// pause p99 < 500ms.

func rounds(t *testing.T, env string, def int) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", env, v)
	}
	return n
}

// percentile is the nearest-rank percentile of d (p in 0..100).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func dist(d []time.Duration) string {
	return fmt.Sprintf("p50 %s, p99 %s, max %s (n=%d)", percentile(d, 50).Round(time.Millisecond),
		percentile(d, 99).Round(time.Millisecond), percentile(d, 100).Round(time.Millisecond), len(d))
}

// TestFailoverSpeed kills the leader under load, each round on fresh
// clusters, and measures the failover time a client sees (last write the
// old leader acknowledged to first write the new one acknowledged), and
// where it goes: detection, promotion, the first write after it.
func TestFailoverSpeed(t *testing.T) {
	n := rounds(t, "MHP_FAILOVER_ROUNDS", 1)
	var total, detect, change, first []time.Duration
	for i := range n {
		t.Run(fmt.Sprintf("round%d", i), func(t *testing.T) {
			r := newRig(t, rigOptions{})
			l := startLoad(r, loadOptions{workers: 3})
			time.Sleep(700 * time.Millisecond)
			killAt := time.Now()
			r.sims["a"].kill()
			s := r.waitTopology("a new leader", 20*time.Second, func(s *topology.Snapshot) bool { return s.Leader != nil && s.Leader.ID != "a" })
			ch := r.lastChange(s.Leader.ID)
			installed := ch.At.Add(ch.Took)
			testutil.Eventually(t, 15*time.Second, "a write on the new leader", func() bool {
				for _, o := range l.snapshot() {
					if o.kind.write() && o.out == acked && o.cluster == s.Leader.ID && o.start.After(killAt) {
						return true
					}
				}
				return false
			})
			ops := l.stop()
			lastGood, firstGood := writeGap(ops, "a", s.Leader.ID, killAt)
			if lastGood.IsZero() || firstGood.IsZero() {
				t.Fatalf("no write around the kill: %s", summary(ops))
			}
			total = append(total, firstGood.Sub(lastGood))
			detect = append(detect, ch.At.Sub(lastGood))
			change = append(change, ch.Took)
			first = append(first, firstGood.Sub(installed))
			t.Logf("failover time %s = detection %s + promotion %s + first write %s",
				firstGood.Sub(lastGood).Round(time.Millisecond), ch.At.Sub(lastGood).Round(time.Millisecond),
				ch.Took.Round(time.Microsecond), firstGood.Sub(installed).Round(time.Millisecond))
		})
	}
	t.Logf("failover time (last good write to first good write), detect_after 1s: %s", dist(total))
	t.Logf("  detection (last good write to loss declared): %s", dist(detect))
	t.Logf("  promotion (loss declared to new leader installed): %s", dist(change))
	t.Logf("  first write (installed to first acknowledged write): %s", dist(first))
}

// TestSwitchoverSpeed runs switchovers a -> b -> c -> a ... under load on
// one set of clusters: no client error, and the write pause measured from
// holding writes to releasing them (and as the longest gap between
// acknowledged writes a client saw).
func TestSwitchoverSpeed(t *testing.T) {
	n := rounds(t, "MHP_SWITCHOVER_ROUNDS", 3)
	r := newRig(t, rigOptions{})
	l := startLoad(r, loadOptions{workers: 4, registers: 8})
	time.Sleep(500 * time.Millisecond)
	order := []string{"b", "c", "a"}
	var held, gaps []time.Duration
	var windows [][2]time.Time
	for i := range n {
		to := order[i%len(order)]
		code, _, eb := r.adminPost("/api/v1/switchover", to)
		if code != http.StatusOK {
			t.Fatalf("switchover %d to %s: %d %+v\nsimulator status:\n%s", i, to, code, eb, r.simStatus())
		}
		ch := r.app.Arbiter().Status().LastChange
		held = append(held, ch.Held)
		windows = append(windows, [2]time.Time{ch.At, ch.At.Add(ch.Took)})
		time.Sleep(300 * time.Millisecond)
	}
	ops := l.stop()
	for _, w := range windows {
		gaps = append(gaps, maxWriteGap(ops, w[0].Add(-100*time.Millisecond), w[1].Add(200*time.Millisecond)))
	}
	t.Logf("history: %s", summary(ops))
	if n, msgs := errorsOf(ops, 10); n > 0 {
		t.Errorf("%d calls failed during switchovers:\n%s", n, msgs)
	}
	checkReads(t, ops, nil)
	checkLinearizable(t, ops)
	t.Logf("switchover write pause (writes held to released): %s", dist(held))
	t.Logf("  longest gap between acknowledged writes around each switchover: %s", dist(gaps))
}
