package multiproxy_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// write is one insert through a proxy.
type write struct {
	proxy      string
	pk         int64
	ts         uint64
	cluster    string
	err        error
	start, end time.Time
}

// writers insert new rows through every proxy, one writer per proxy, each
// call bounded, until stopped.
type writers struct {
	mu   sync.Mutex
	ops  []write
	stop chan struct{}
	wg   sync.WaitGroup
}

func startWriters(r *rig, skip ...string) *writers {
	w := &writers{stop: make(chan struct{})}
	for i, n := range r.nodes {
		if contains(skip, n.name) {
			continue
		}
		w.wg.Go(func() {
			pk := int64(i+1) * 1_000_000_000
			for {
				select {
				case <-w.stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if !n.p.Running() {
					continue
				}
				pk++
				ctx, cancel := context.WithTimeout(context.Background(), writeHold+2*time.Second)
				op := write{proxy: n.name, pk: pk, start: time.Now()}
				op.ts, op.cluster, op.err = n.cl.Insert(ctx, pk, pk)
				op.end = time.Now()
				cancel()
				w.mu.Lock()
				w.ops = append(w.ops, op)
				w.mu.Unlock()
			}
		})
	}
	return w
}

func (w *writers) finish() []write {
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ops)
}

// summary counts acknowledged and failed writes per proxy and cluster.
func summary(ops []write) string {
	acked, failed := map[string]int{}, map[string]int{}
	for _, o := range ops {
		if o.err == nil {
			acked[o.proxy+"->"+o.cluster]++
		} else {
			failed[o.proxy]++
		}
	}
	return fmt.Sprintf("acknowledged %v, failed %v%s", acked, failed, errorKinds(ops))
}

// checkHistory: no write was acknowledged by a cluster other than the new
// leader once any proxy had a write acknowledged by the new leader (two
// clusters never took writes in the same epoch), and every acknowledged
// write the new leader took, or had replicated before the old one died,
// is on the new leader.
func checkHistory(t *testing.T, r *rig, ops []write, old, leader string, killedAt time.Time) {
	t.Helper()
	var firstNew time.Time
	for _, o := range ops {
		if o.err == nil && o.cluster == leader && (firstNew.IsZero() || o.end.Before(firstNew)) {
			firstNew = o.end
		}
	}
	var mustHave []int64
	for _, o := range ops {
		if o.err != nil {
			continue
		}
		switch {
		case o.cluster != leader && o.cluster != old:
			t.Errorf("%s: write %d acknowledged by %s, neither the old leader %s nor the new %s", o.proxy, o.pk, o.cluster, old, leader)
		case o.cluster == old && !firstNew.IsZero() && o.start.After(firstNew):
			t.Errorf("%s: write %d acknowledged by the old leader %s after the new leader %s took a write (%s): two clusters took writes in one epoch",
				o.proxy, o.pk, old, leader, firstNew.Format(time.RFC3339Nano))
		case o.cluster == leader:
			mustHave = append(mustHave, o.pk)
		case o.end.Before(killedAt.Add(-time.Second)):
			// Acknowledged well before the kill: replicated by then (the
			// simulator replicates within tens of milliseconds).
			mustHave = append(mustHave, o.pk)
		}
	}
	for i := 0; i < len(mustHave); i += 500 {
		chunk := mustHave[i:min(i+500, len(mustHave))]
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		got, err := holds(ctx, r.direct[leader], commonpb.ConsistencyLevel_Strong, 0, chunk...)
		cancel()
		if err != nil {
			t.Fatalf("reading the acknowledged writes on %s: %v", leader, err)
		}
		for _, pk := range chunk {
			if !got[pk] {
				t.Errorf("acknowledged write %d is not on the new leader %s", pk, leader)
			}
		}
	}
	t.Logf("history: %d acknowledged writes checked on %s", len(mustHave), leader)
}

// TestSessionAcrossProxies: a write through one proxy and a Session read
// through another that carries the write's timestamp as its guarantee
// (pymilvus sends its last write timestamp) always see the write.
func TestSessionAcrossProxies(t *testing.T) {
	r := newRig(t)
	for i := range 30 {
		w, rd := r.nodes[i%3], r.nodes[(i+1)%3]
		pk := int64(5_000_000_000 + i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ts, _, err := w.cl.Insert(ctx, pk, pk)
		if err != nil {
			cancel()
			t.Fatalf("insert through %s: %v", w.name, err)
		}
		got, err := holds(ctx, rd.cl, commonpb.ConsistencyLevel_Session, ts, pk)
		cancel()
		if err != nil {
			t.Fatalf("Session read through %s: %v", rd.name, err)
		}
		if !got[pk] {
			t.Fatalf("Session read through %s with guarantee %d missed the write through %s", rd.name, ts, w.name)
		}
	}

	// An operator's switchover sent to a proxy that does not decide is
	// forwarded to the one that does; every proxy follows.
	d, err := r.decider()
	if err != nil {
		t.Fatal(err)
	}
	var f *node
	for _, n := range r.nodes {
		if n != d {
			f = n
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := f.adm.Switchover(ctx, "c")
	if err != nil {
		t.Fatalf("switchover through %s (the decider is %s): %v\n%s", f.name, d.name, err, r.diagnostics())
	}
	if !strings.Contains(res.Message, "run by proxy "+d.name) {
		t.Errorf("switchover answer %+v does not say the decider %s ran it", res, d.name)
	}
	if _, err := r.agree(10*time.Second, "c"); err != nil {
		t.Fatalf("after the forwarded switchover: %v\n%s", err, r.diagnostics())
	}
	if n, by := r.promotions(); n != 0 {
		t.Errorf("%d force promotions (%s) for a switchover", n, by)
	}
}

// TestKillLeaderOneForcePromotion: the leading cluster dies under writes
// through all three proxies: exactly one force promotion, every proxy on
// the same new leader within detect_after + 2s, and the history holds.
func TestKillLeaderOneForcePromotion(t *testing.T) {
	r := newRig(t)
	w := startWriters(r)
	time.Sleep(time.Second)
	killedAt := time.Now()
	r.sims["a"].Signal(syscall.SIGKILL)
	leader, err := r.agree(detectAfter+2*time.Second, "!a")
	took := time.Since(killedAt)
	if err != nil {
		w.finish()
		t.Fatalf("the proxies do not agree on a new leader within detect_after + 2s: %v\n%s", err, r.diagnostics())
	}
	t.Logf("all three proxies route writes to %s %s after the kill", leader, took.Round(time.Millisecond))
	time.Sleep(time.Second)
	ops := w.finish()
	n, by := r.promotions()
	t.Logf("force promotions: %d (%s); writes: %s", n, by, summary(ops))
	if n != 1 {
		t.Fatalf("%d force promotions (%s), want exactly 1\n%s", n, by, r.diagnostics())
	}
	if ok := r.writable(8_000_000_000); len(ok) != 1 || ok[0] != leader {
		t.Fatalf("clusters taking writes: %v, want only %s", ok, leader)
	}
	checkHistory(t, r, ops, "a", leader, killedAt)
}

// TestCutOffProxyNeverPromotes: one proxy loses etcd (its relay closes),
// then the leader dies. The other two fail over; the cut-off one never
// promotes, holds its writes once its lease may have expired and refuses
// them after write_hold; back on etcd it routes to the new leader.
func TestCutOffProxyNeverPromotes(t *testing.T) {
	r := newRig(t)
	d, err := r.decider()
	if err != nil {
		t.Fatal(err)
	}
	// Cut off a proxy that does not decide, and one that does, in turn
	// would double the time; the one that decides is the harder case: it
	// must stop deciding and another must take over.
	cut := d
	w := startWriters(r)
	time.Sleep(500 * time.Millisecond)
	cutAt := time.Now()
	cut.relay.Cut()
	// Wait for the fence, then kill the leader.
	fencedAfter := time.Duration(0)
	for deadline := time.Now().Add(leaseTTL + 5*time.Second); ; {
		v, err := cut.topology()
		if err == nil && v.Arbiter != nil && v.Arbiter.Fenced {
			fencedAfter = time.Since(cutAt)
			if v.Arbiter.Deciding {
				t.Fatalf("%s still decides while fenced", cut.name)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not fenced %s after the cut: %v\n%s", cut.name, leaseTTL+5*time.Second, err, r.diagnostics())
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, body := readyz(r, cut)
	if code != 503 || !strings.Contains(body, "etcd") {
		t.Errorf("/readyz of the cut-off proxy: %d %q, want 503 naming etcd", code, body)
	}
	killedAt := time.Now()
	r.sims["a"].Signal(syscall.SIGKILL)
	leader, err := r.agree(detectAfter+leaseTTL+3*time.Second, "!a", cut.name)
	if err != nil {
		w.finish()
		t.Fatalf("the connected proxies do not agree on a new leader: %v\n%s", err, r.diagnostics())
	}
	t.Logf("cut-off proxy fenced %s after the cut; the other two route to %s %s after the kill",
		fencedAfter.Round(time.Millisecond), leader, time.Since(killedAt).Round(time.Millisecond))

	// A write through the cut-off proxy is held for write_hold, then
	// refused with the reason.
	ctx, cancel := context.WithTimeout(context.Background(), writeHold+5*time.Second)
	w0 := time.Now()
	_, cl, err := cut.cl.Insert(ctx, 9_000_000_000, 1)
	cancel()
	held := time.Since(w0)
	if err == nil || status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "etcd") {
		t.Errorf("write through the cut-off proxy: cluster %q err %v, want Unavailable naming etcd", cl, err)
	}
	if held < writeHold/2 {
		t.Errorf("write refused after %s, want it held about write_hold (%s)", held, writeHold)
	}
	n, by := r.promotions()
	if n != 1 {
		t.Fatalf("%d force promotions (%s), want exactly 1 (the cut-off proxy must never promote)\n%s", n, by, r.diagnostics())
	}

	cut.relay.Restore()
	if _, err := r.agree(leaseTTL+10*time.Second, leader); err != nil {
		t.Fatalf("the proxy back on etcd does not follow %s: %v\n%s", leader, err, r.diagnostics())
	}
	time.Sleep(500 * time.Millisecond)
	ops := w.finish()
	var cutAcked, cutRefused, cutAfterFence int
	for _, o := range ops {
		if o.proxy != cut.name {
			continue
		}
		switch {
		case o.err == nil && o.start.After(cutAt.Add(fencedAfter)) && o.end.Before(killedAt.Add(detectAfter)):
			cutAfterFence++
		case o.err == nil:
			cutAcked++
		default:
			cutRefused++
		}
	}
	t.Logf("writes through the cut-off proxy: %d refused (held %s each at most), %d acknowledged outside the fence; all: %s; force promotions %s",
		cutRefused, writeHold, cutAcked, summary(ops), by)
	if cutAfterFence > 0 {
		t.Errorf("%d writes through the fenced proxy were acknowledged while it was fenced", cutAfterFence)
	}
	checkHistory(t, r, ops, "a", leader, killedAt)
}

// TestKillDecidingProxyMidFailover: the leader dies and the deciding
// proxy is killed while the failover runs (once it holds writes; once a
// cluster was force-promoted, before the others are attached and the new
// leader installed); another proxy takes over and finishes it: one
// leader, taken by every proxy left, one force promotion. Behind
// MHP_MULTIPROXY_LONG=1.
func TestKillDecidingProxyMidFailover(t *testing.T) {
	if os.Getenv("MHP_MULTIPROXY_LONG") == "" {
		t.Skip("set MHP_MULTIPROXY_LONG=1 to run the slower multi-proxy scenarios")
	}
	for _, at := range []string{"holding", "promoted"} {
		t.Run(at, func(t *testing.T) { killDeciderMidFailover(t, at) })
	}
}

func killDeciderMidFailover(t *testing.T, at string) {
	r := newRig(t)
	d, err := r.decider()
	if err != nil {
		t.Fatal(err)
	}
	w := startWriters(r, d.name)
	time.Sleep(500 * time.Millisecond)
	killedAt := time.Now()
	r.sims["a"].Signal(syscall.SIGKILL)
	var phase string
	for deadline := time.Now().Add(detectAfter + 5*time.Second); time.Now().Before(deadline) && phase == ""; {
		switch at {
		case "holding":
			if v, err := d.topology(); err == nil && (v.FailingOver || v.Leader != "a") {
				phase = fmt.Sprintf("failing over %v, leader %q", v.FailingOver, v.Leader)
			}
		case "promoted":
			if n, by := r.promotions(); n > 0 {
				phase = "force promoted: " + by
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	d.p.Signal(syscall.SIGKILL)
	n0, by0 := r.promotions()
	t.Logf("decider %s killed %s after the leader (%s); force promotions then: %d (%s)",
		d.name, time.Since(killedAt).Round(time.Millisecond), phase, n0, by0)
	if phase == "" {
		t.Fatalf("the decider never reached %q\n%s", at, r.diagnostics())
	}
	leader, err := r.agree(detectAfter+leaseTTL+10*time.Second, "!a")
	if err != nil {
		w.finish()
		t.Fatalf("the remaining proxies do not agree on a new leader: %v\n%s", err, r.diagnostics())
	}
	t.Logf("remaining proxies route to %s %s after the leader died", leader, time.Since(killedAt).Round(time.Millisecond))
	time.Sleep(time.Second)
	ops := w.finish()
	n, by := r.promotions()
	if n != 1 {
		t.Fatalf("%d force promotions (%s), want exactly 1\n%s", n, by, r.diagnostics())
	}
	if ok := r.writable(8_100_000_000); len(ok) != 1 || ok[0] != leader {
		t.Fatalf("clusters taking writes: %v, want only %s", ok, leader)
	}
	t.Logf("writes: %s", summary(ops))
	checkHistory(t, r, ops, "a", leader, killedAt)
}

func readyz(r *rig, n *node) (int, string) {
	resp, err := r.hc.Get("http://" + n.p.Admin + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b := make([]byte, 4096)
	k, _ := resp.Body.Read(b)
	return resp.StatusCode, strings.TrimSpace(string(b[:k]))
}

// errorKinds lists the distinct errors of failed writes, shortened.
func errorKinds(ops []write) string {
	seen := map[string]int{}
	for _, o := range ops {
		if o.err != nil {
			m := o.err.Error()
			if len(m) > 140 {
				m = m[:140]
			}
			seen[o.proxy+": "+m]++
		}
	}
	if len(seen) == 0 {
		return ""
	}
	var b strings.Builder
	for k, n := range seen {
		fmt.Fprintf(&b, "\n  %dx %s", n, k)
	}
	return b.String()
}
