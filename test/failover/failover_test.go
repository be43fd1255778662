package failover_test

import (
	"bytes"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// TestKillLeader: under a steady mixed load, the leader is killed with
// SIGKILL. A new leader is promoted and writes resume on it; no read
// violates its level; every write acknowledged and replicated before the
// kill is on the new leader; writes whose outcome was unknown were not
// applied twice; Session and Strong readers running beside the writers,
// whose reads only the leader can serve, see no error during the
// detection window and the failover: their reads wait for the new leader,
// except a Session read carried across the failover whose required
// write never reached the new leader, which is refused as such. Then the old leader restarts with its data: it is demoted
// to a quarantined target, gets no request from the proxy, and what it held
// that never replicated is reported.
func TestKillLeader(t *testing.T) {
	// Replication trails by 150ms, so the kill leaves acknowledged writes
	// that never replicated: they are the ones that may be lost, and the
	// salvage report must account for them.
	r := newRig(t, rigOptions{extraSim: []string{"--replication-delay", "150ms"}})
	l := startLoad(r, loadOptions{workers: 4, readers: 4})
	time.Sleep(1500 * time.Millisecond)

	// How far each alternative replicated, read just before the kill:
	// whatever it had then must survive the failover.
	bars := map[string]uint64{}
	for _, id := range []string{"b", "c"} {
		ts, err := r.checkpoint(id, "a")
		if err != nil {
			t.Fatal(err)
		}
		bars[id] = ts
	}
	killAt := time.Now()
	r.sims["a"].kill()

	s := r.waitTopology("a new leader", 20*time.Second, func(s *topology.Snapshot) bool {
		return s.Leader != nil && s.Leader.ID != "a"
	})
	newLeader := s.Leader.ID
	ch := r.lastChange(newLeader)
	if ch == nil || ch.Kind != topology.KindFailover || !ch.Auto || ch.From != "a" || ch.To != newLeader || ch.Result != topology.ResultOK || ch.Epoch != 1 {
		t.Fatalf("last change %+v", ch)
	}
	installed := ch.At.Add(ch.Took)
	// From here on nothing may reach the old leader (calls in flight at
	// the kill were counted before).
	servedBefore := r.app.Topology().Snapshot().Cluster("a").Served.Load()
	testutil.Eventually(t, 15*time.Second, "writes resume on the new leader", func() bool {
		for _, o := range l.snapshot() {
			if o.kind.write() && o.out == acked && o.start.After(installed) && o.cluster == newLeader {
				return true
			}
		}
		return false
	})
	time.Sleep(time.Second)

	// The old leader comes back with its data.
	r.sims["a"].restart()
	testutil.Eventually(t, 20*time.Second, "the old leader is demoted and its salvage reported", func() bool {
		st := r.app.Arbiter().Status()
		return len(st.Salvage) == 1 && st.Salvage[0].OldLeaderReturned
	})
	time.Sleep(500 * time.Millisecond)
	ops := l.stop()
	t.Logf("history: %s", summary(ops))

	lastGood, firstGood := writeGap(ops, "a", newLeader, killAt)
	t.Logf("failover: last good write (old leader) at kill%+dms, first good write (new leader) at kill%+dms: failover time %s (promoted %s after the kill; writes held %s; steps %v)",
		lastGood.Sub(killAt).Milliseconds(), firstGood.Sub(killAt).Milliseconds(),
		firstGood.Sub(lastGood).Round(time.Millisecond), ch.At.Sub(killAt).Round(time.Millisecond), ch.Held.Round(time.Millisecond), ch.Steps)

	// Every acknowledged insert replicated before the kill is on the new
	// leader; only ones not yet replicated may be lost.
	var ackedPKs, unknownPKs, failedPKs []int64
	tsOf := map[int64]uint64{}
	for _, o := range ops {
		if o.kind != opInsert {
			continue
		}
		switch o.out {
		case acked:
			ackedPKs = append(ackedPKs, o.pk)
			tsOf[o.pk] = o.ts
		case unknown:
			unknownPKs = append(unknownPKs, o.pk)
		case failed:
			failedPKs = append(failedPKs, o.pk)
		}
	}
	all := append(append(append([]int64(nil), ackedPKs...), unknownPKs...), failedPKs...)
	have := r.presence(newLeader, all)
	lost := map[int64]bool{}
	for _, pk := range ackedPKs {
		if have[pk] == 0 {
			lost[pk] = true
			if tsOf[pk] <= bars[newLeader] {
				t.Errorf("insert %d (ts %d) was acknowledged and replicated to %s before the kill (checkpoint %d), yet it is lost", pk, tsOf[pk], newLeader, bars[newLeader])
			}
		}
	}
	t.Logf("acknowledged inserts: %d; lost in the failover: %d (all acknowledged after %s's last checkpoint before the kill)", len(ackedPKs), len(lost), newLeader)
	for pk, n := range have {
		if n > 1 {
			t.Errorf("key %d is on the new leader %d times: a write was applied twice", pk, n)
		}
	}
	appliedUnknown := 0
	for _, pk := range unknownPKs {
		if have[pk] > 0 {
			appliedUnknown++
		}
	}
	t.Logf("writes with an unknown outcome: %d (%d of them applied), none retried into a duplicate", len(unknownPKs), appliedUnknown)
	for _, pk := range failedPKs {
		if have[pk] > 0 {
			t.Errorf("insert %d failed (never sent, or refused) yet it is on the new leader", pk)
		}
	}
	checkReads(t, ops, lost)

	// Writes that never reached a backend waited for the new leader (the
	// detection window included): none failed. Eventually reads kept
	// being served by the alternatives.
	for _, o := range ops {
		if o.out == failed && (o.kind.write() || o.kind == opEventually) {
			t.Errorf("%s of %d at kill%+dms failed: %s", o.kind, o.pk, o.start.Sub(killAt).Milliseconds(), o.err)
		} else if o.out == failed {
			t.Logf("%s of %d at kill%+dms failed: %s", o.kind, o.pk, o.start.Sub(killAt).Milliseconds(), o.err)
		}
	}

	salvage := uint64(0)
	if len(ch.Salvage) > r.pch {
		salvage = ch.Salvage[r.pch]
	}
	checkReaders(t, ops, salvage, killAt, installed, newLeader)

	// The old leader gets nothing from the proxy once the new one is
	// installed (calls already on their way when it died are the unknown
	// outcomes above), and it acknowledged nothing after the kill.
	for _, o := range ops {
		if (o.start.After(installed) || (o.out == acked && o.end.After(killAt.Add(time.Second)))) && o.cluster == "a" {
			t.Errorf("%s of %d at %s was served by the old leader", o.kind, o.pk, o.start.Format("15:04:05.000"))
		}
	}
	if got := r.app.Topology().Snapshot().Cluster("a").Served.Load(); got != servedBefore {
		t.Errorf("the proxy sent %d requests to the old leader after the failover", got-servedBefore)
	}

	// Salvage: what the old leader held past the salvage checkpoint.
	rep := r.app.Arbiter().Status().Salvage[0]
	if rep.OldLeader != "a" || rep.NewLeader != newLeader || rep.Unreplicated == nil {
		t.Fatalf("salvage report %+v", rep)
	}
	if len(lost) == 0 {
		t.Errorf("no acknowledged write was lost although replication trailed by 150ms: the scenario did not exercise salvage")
	}
	if unreplicatedUnknown := len(unknownPKs) - appliedUnknown; rep.Unreplicated.Inserts > len(lost)+unreplicatedUnknown {
		t.Errorf("salvage reports %d unreplicated inserts, more than the %d lost and %d unknown-outcome ones", rep.Unreplicated.Inserts, len(lost), unreplicatedUnknown)
	}
	if rep.Unreplicated.Inserts < len(lost) {
		t.Errorf("salvage reports %d unreplicated inserts, but %d acknowledged inserts were lost", rep.Unreplicated.Inserts, len(lost))
	}
	t.Logf("salvage: %s", rep.Unreplicated)
	v := r.view()
	if v.Epoch != 1 || v.Leader != newLeader || len(v.Salvage) != 1 || !v.Salvage[0].OldLeaderReturned || v.Salvage[0].Unreplicated == "" ||
		v.LastChange == nil || v.LastChange.Kind != "failover" {
		t.Errorf("/api/v1/topology: %+v", v)
	}
	for _, c := range v.Clusters {
		if c.ID == "a" && (!c.Quarantined || c.Role == "leader") {
			t.Errorf("the old leader after its return: %+v", c)
		}
	}
	out, err := exec.Command(binary, "status", "--admin", "http://"+r.app.AdminAddr()).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("never replicated")) {
		t.Errorf("status: %v\n%s", err, out)
	}
	metrics := r.metrics()
	for _, want := range []string{`milvus_ha_proxy_failovers_total{[^}]*result="ok"[^}]*} 1`, `milvus_ha_proxy_leader_changes_total{[^}]*} 1`, `milvus_ha_proxy_epoch(\{[^}]*\})? 1`} {
		if !regexp.MustCompile(want).Match(metrics) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// checkReaders: a read the leader alone could serve when the leader died
// (the readers', and the writers' Session reads of their own insert)
// waited for the new leader. A Session read carried across the failover
// whose guarantee is past the new leader's salvage checkpoint asks for a
// write the new leader never got: it is refused with FailedPrecondition
// naming that, and nothing else fails.
func checkReaders(t *testing.T, ops []op, salvage uint64, killAt, installed time.Time, newLeader string) {
	t.Helper()
	readerOps := map[opKind]int{}
	refusedLost := 0
	for _, o := range ops {
		if o.kind != opSessionLatest && o.kind != opStrongLatest && o.kind != opSession {
			continue
		}
		readerOps[o.kind]++
		switch {
		case o.out == acked:
		case o.kind != opStrongLatest && strings.Contains(o.err, "FailedPrecondition") &&
			strings.Contains(o.err, "promoted by force") && salvage != 0 && o.ts > salvage && o.start.Before(installed):
			refusedLost++
		default:
			t.Errorf("%s of %d (guarantee %d) at kill%+dms failed: %s", o.kind, o.pk, o.ts, o.start.Sub(killAt).Milliseconds(), o.err)
		}
	}
	if readerOps[opSessionLatest] == 0 || readerOps[opStrongLatest] == 0 {
		t.Errorf("the readers made no reads: %v", readerOps)
	}
	t.Logf("readers: %d Session, %d Strong reads (writers: %d Session reads of their own insert); %d Session reads refused because the write they require (past %s's salvage checkpoint %d) was lost",
		readerOps[opSessionLatest], readerOps[opStrongLatest], readerOps[opSession], refusedLost, newLeader, salvage)
}

// TestKillLeaderBinary: TestKillLeader's fault against the built binary
// in its own process (`serve --config`), watched only through its gRPC
// and admin ports: under writers and Session and Strong readers the
// leader is killed with SIGKILL. No write that never reached a backend
// fails, no read fails (bar Session reads of a write the forced failover
// lost, refused as such), and no read violates its level.
func TestKillLeaderBinary(t *testing.T) {
	r := newRig(t, rigOptions{binary: true, extraSim: []string{"--replication-delay", "150ms"}})
	l := startLoad(r, loadOptions{workers: 4, readers: 4})
	time.Sleep(1500 * time.Millisecond)
	killAt := time.Now()
	r.sims["a"].kill()

	var v admin.View
	testutil.Eventually(t, 20*time.Second, "a new leader (admin API)", func() bool {
		v = r.view()
		return v.Leader != "" && v.Leader != "a" && len(v.Salvage) == 1 &&
			v.LastChange != nil && v.LastChange.To == v.Leader && v.LastChange.Result == "ok"
	})
	newLeader := v.Leader
	installed := v.LastChange.At.Add(time.Duration(v.LastChange.TookSeconds * float64(time.Second)))
	testutil.Eventually(t, 15*time.Second, "writes resume on the new leader", func() bool {
		for _, o := range l.snapshot() {
			if o.kind.write() && o.out == acked && o.start.After(installed) && o.cluster == newLeader {
				return true
			}
		}
		return false
	})
	time.Sleep(time.Second)
	ops := l.stop()
	t.Logf("history: %s", summary(ops))

	var ackedPKs []int64
	for _, o := range ops {
		if o.kind == opInsert && o.out == acked {
			ackedPKs = append(ackedPKs, o.pk)
		}
		if o.kind.write() && o.out == failed {
			t.Errorf("%s of %d at kill%+dms failed: %s", o.kind, o.pk, o.start.Sub(killAt).Milliseconds(), o.err)
		}
	}
	have := r.presence(newLeader, ackedPKs)
	lost := map[int64]bool{}
	for _, pk := range ackedPKs {
		if have[pk] == 0 {
			lost[pk] = true
		}
	}
	t.Logf("acknowledged inserts: %d; lost in the failover: %d", len(ackedPKs), len(lost))
	checkReads(t, ops, lost)
	salvage := uint64(0)
	if cps := v.Salvage[0].Checkpoints; len(cps) > r.pch {
		salvage = cps[r.pch]
	}
	checkReaders(t, ops, salvage, killAt, installed, newLeader)
}

// TestSwitchoverUnderLoad: planned switchovers a -> b -> c -> a under a
// mixed load: no client sees an error, every acknowledged write is on
// every new leader, the shared registers stay linearizable (porcupine),
// and the write pause is measured.
func TestSwitchoverUnderLoad(t *testing.T) {
	r := newRig(t, rigOptions{})
	l := startLoad(r, loadOptions{workers: 4, registers: 8})
	time.Sleep(time.Second)
	var held []time.Duration
	for i, to := range []string{"b", "c", "a"} {
		code, res, eb := r.adminPost("/api/v1/switchover", to)
		if code != http.StatusOK {
			t.Fatalf("switchover to %s: %d %+v", to, code, eb)
		}
		ch := r.app.Arbiter().Status().LastChange
		if res.To != to || res.Epoch != uint64(i+1) || ch.Held <= 0 {
			t.Fatalf("switchover result %+v, change %+v", res, ch)
		}
		held = append(held, ch.Held)
		t.Logf("switchover to %s: writes held %s (steps %v); %d writes waited", to, ch.Held.Round(time.Microsecond), ch.Steps, res.WritesHeld)
		time.Sleep(700 * time.Millisecond)
		// Every write acknowledged so far is on the new leader.
		var pks []int64
		for _, o := range l.snapshot() {
			if o.kind == opInsert && o.out == acked {
				pks = append(pks, o.pk)
			}
		}
		have := r.presence(to, pks)
		missing := 0
		for _, pk := range pks {
			if have[pk] != 1 {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("after the switchover to %s, %d of %d acknowledged inserts are not on it exactly once", to, missing, len(pks))
		}
	}
	ops := l.stop()
	t.Logf("history: %s", summary(ops))
	if n, msgs := errorsOf(ops, 10); n > 0 {
		t.Errorf("%d calls failed during switchovers:\n%s", n, msgs)
	}
	checkReads(t, ops, nil)
	checkLinearizable(t, ops)
	first, last := ops[0].start, ops[len(ops)-1].end
	t.Logf("longest gap between acknowledged writes: %s; holds %v", maxWriteGap(ops, first, last).Round(time.Millisecond), held)
	if v := r.view(); v.Epoch != 3 || v.Leader != "a" {
		t.Errorf("view after three switchovers: epoch %d leader %s", v.Epoch, v.Leader)
	}
	if !regexp.MustCompile(`milvus_ha_proxy_switchovers_total{[^}]*result="ok"[^}]*} 3`).Match(r.metrics()) {
		t.Error("metrics do not count three switchovers")
	}
}

// TestFlappingAlternative: an alternative killed and restarted twice is
// taken out by its breaker (no reads, no client errors) and readmitted.
func TestFlappingAlternative(t *testing.T) {
	r := newRig(t, rigOptions{})
	l := startLoad(r, loadOptions{workers: 3})
	served := func() int64 { return r.app.Topology().Snapshot().Cluster("c").Served.Load() }
	for round := range 2 {
		time.Sleep(500 * time.Millisecond)
		r.sims["c"].kill()
		r.waitTopology("c's breaker open", 15*time.Second, func(s *topology.Snapshot) bool {
			c := s.Cluster("c")
			return !c.Healthy && c.Breaker == topology.BreakerOpen
		})
		before := served()
		time.Sleep(300 * time.Millisecond)
		if got := served(); got != before {
			t.Errorf("round %d: %d requests sent to c while its breaker was open", round, got-before)
		}
		r.sims["c"].restart()
		r.waitTopology("c readmitted", 20*time.Second, func(s *topology.Snapshot) bool {
			c := s.Cluster("c")
			return c.Healthy && c.Breaker == topology.BreakerClosed && c.CheckpointsKnown
		})
		n := served()
		testutil.Eventually(t, 10*time.Second, "c serves reads again", func() bool { return served() > n })
	}
	ops := l.stop()
	t.Logf("history: %s", summary(ops))
	if s := r.app.Topology().Snapshot(); s.Leader.ID != "a" || s.Epoch != 0 {
		t.Errorf("an alternative's flapping changed the leader: %+v", r.app.Topology().View())
	}
	// Reads in flight to c when it died move to another cluster; writes
	// never touched it.
	if n, msgs := errorsOf(ops, 10); n > 0 {
		t.Errorf("%d calls failed while c flapped:\n%s", n, msgs)
	}
	checkReads(t, ops, nil)
}

// TestManualFailover: with failover.mode manual the loss is reported and
// nothing moves until `failover --to` over the admin API.
func TestManualFailover(t *testing.T) {
	r := newRig(t, rigOptions{mode: "manual"})
	c := dialProxy(t, r.app.Addr())
	l := &load{r: r}
	if o := l.write(c, 0, opInsert, 7, 7); o.out != acked {
		t.Fatalf("write: %s", o.err)
	}
	// Replicated before the kill, so a forced failover must keep it.
	for _, id := range []string{"b", "c"} {
		dc := r.direct(id)
		testutil.Eventually(t, 10*time.Second, "7 on "+id, func() bool {
			rows, err := dc.Keys(commonpb.ConsistencyLevel_Eventually, 7)
			return err == nil && len(rows) == 1
		})
	}
	r.sims["a"].kill()
	r.waitTopology("loss detected", 15*time.Second, func(s *topology.Snapshot) bool { return !s.LeaderLostAt.IsZero() })
	time.Sleep(1500 * time.Millisecond)
	v := r.view()
	if v.Leader != "a" || v.Epoch != 0 || v.LeaderLostAt == nil || v.FailoverMode != "manual" || v.Ready {
		t.Fatalf("manual mode after the loss: %+v", v)
	}
	if r.app.Arbiter().Status().Phase != topology.PhaseLost {
		t.Fatalf("phase %q", r.app.Arbiter().Status().Phase)
	}
	if !regexp.MustCompile(`milvus_ha_proxy_failover_in_progress(\{[^}]*\})? 1`).Match(r.metrics()) {
		t.Error("metrics do not show the leader loss")
	}
	if code, _, eb := r.adminPost("/api/v1/failover", "zz"); code != http.StatusNotFound {
		t.Errorf("failover to an unknown cluster: %d %+v", code, eb)
	}
	if code, _, eb := r.adminPost("/api/v1/switchover", "b"); code != http.StatusConflict || !strings.Contains(eb.Error, "lost") {
		t.Errorf("switchover from a lost leader: %d %+v", code, eb)
	}
	code, res, eb := r.adminPost("/api/v1/failover", "c")
	if code != http.StatusOK || res.To != "c" || res.From != "a" || res.Epoch != 1 {
		t.Fatalf("failover --to c: %d %+v %+v", code, res, eb)
	}
	if o := l.write(c, 0, opInsert, 8, 8); o.out != acked || o.cluster != "c" {
		t.Fatalf("write after the failover: %+v", o)
	}
	if rows, err := c.Keys(commonpb.ConsistencyLevel_Strong, 7, 8); err != nil || len(rows) != 2 {
		t.Fatalf("Strong read after the failover: %v %v", rows, err)
	}
}

func (r *rig) metrics() []byte {
	r.t.Helper()
	code, b := r.adminGet("/metrics")
	if code != http.StatusOK {
		r.t.Fatalf("/metrics: %d", code)
	}
	return b
}
