package failover_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// The leader-change sequences an operator can type back to back. After
// each sequence, within detect_after and a few seconds: exactly one
// cluster is a primary in its own replicate configuration (asked of each
// cluster directly), the proxy routes writes to it, and /readyz is 200.

// primaries asks every cluster for its own replicate configuration and
// returns those that name themselves the source, and a summary.
func (r *rig) primaries() ([]string, string) {
	var out []string
	var b strings.Builder
	for _, id := range r.ids {
		c := r.direct(id)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := c.RPC.GetReplicateConfiguration(ctx, &milvuspb.GetReplicateConfigurationRequest{})
		cancel()
		if err != nil {
			fmt.Fprintf(&b, "%s: %v; ", id, err)
			continue
		}
		cfg := resp.GetConfiguration()
		var edges []string
		src := ""
		for _, e := range cfg.GetCrossClusterTopology() {
			edges = append(edges, e.GetSourceClusterId()+">"+e.GetTargetClusterId())
			src = e.GetSourceClusterId()
		}
		if len(edges) == 0 && len(cfg.GetClusters()) == 1 {
			src = cfg.GetClusters()[0].GetClusterId()
		}
		fmt.Fprintf(&b, "%s: %v; ", id, edges)
		if src == id {
			out = append(out, id)
		}
	}
	return out, b.String()
}

// writeThrough inserts one row through the proxy and returns the cluster
// that took it.
func (r *rig) writeThrough(pk int64) (string, error) {
	c := dialProxy(r.t, r.app.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, cluster, err := c.Insert(ctx, pk, pk)
	return cluster, err
}

// settled waits until exactly one cluster is primary, the proxy routes
// writes to it and is ready; it returns the primary and how long it took.
func (r *rig) settled(what string, bound time.Duration) (string, time.Duration) {
	r.t.Helper()
	start := time.Now()
	var last string
	pk := time.Now().UnixNano() % 1_000_000_000
	for time.Since(start) < bound {
		prim, cfgs := r.primaries()
		code, body := r.adminGet("/readyz")
		s := r.app.Topology().Snapshot()
		last = fmt.Sprintf("primaries %v (%s); /readyz %d %s; proxy leader %v failing over %v", prim, cfgs, code, strings.TrimSpace(string(body)),
			func() string {
				if s.Leader == nil {
					return "none"
				}
				return s.Leader.ID
			}(), s.FailingOver)
		if len(prim) == 1 && code == http.StatusOK && s.Leader != nil && s.Leader.ID == prim[0] {
			pk++
			got, err := r.writeThrough(pk)
			if err == nil && got == prim[0] {
				return prim[0], time.Since(start)
			}
			last += fmt.Sprintf("; write: %s %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	v := r.view()
	r.t.Fatalf("%s: not settled within %s: %s\nphase %q, change under way %+v, last change %+v\nsimulators:\n%s", what, bound, last,
		v.Phase, v.ChangeUnderWay, v.LastChange, r.simStatus())
	return "", 0
}

// act posts an action and reports its outcome in one line.
func (r *rig) act(kind, to string) string {
	code, res, eb := r.adminPost("/api/v1/"+kind, to)
	if code == http.StatusOK {
		return fmt.Sprintf("%s --to %s: ok epoch %d (%s)", kind, to, res.Epoch, res.Message)
	}
	return fmt.Sprintf("%s --to %s: %d %s", kind, to, code, eb.Error)
}

// TestBackToBackChanges: switchover to b, failover to c, switchover to a,
// with no pause between them, end with one primary the proxy writes to.
func TestBackToBackChanges(t *testing.T) {
	r := newRig(t, rigOptions{})
	for _, step := range [][2]string{{"switchover", "b"}, {"failover", "c"}, {"switchover", "a"}} {
		t.Log(r.act(step[0], step[1]))
	}
	leader, took := r.settled("after switchover b, failover c, switchover a", 15*time.Second)
	t.Logf("settled on %s in %s", leader, took)
	for _, c := range r.view().Clusters {
		if c.ID == leader && c.Role != "leader" {
			t.Errorf("%s is primary but the proxy shows it as %s", c.ID, c.Role)
		}
	}
}

// TestForcedFailoverDemotesReachableLeader: failover --to c while the
// leader a is healthy leaves a no longer a primary: a direct write to it
// is refused, and the command says what it did to a.
func TestForcedFailoverDemotesReachableLeader(t *testing.T) {
	for _, shape := range []string{"single", "empty"} {
		t.Run("force-promote-shape "+shape, func(t *testing.T) { forcedFailoverDemotes(t, shape) })
	}
}

func forcedFailoverDemotes(t *testing.T, shape string) {
	r := newRig(t, rigOptions{extraSim: []string{"--force-promote-shape", shape}})
	code, res, eb := r.adminPost("/api/v1/failover", "c")
	if code != http.StatusOK || res.To != "c" {
		t.Fatalf("failover --to c: %d %+v %+v", code, res, eb)
	}
	leader, took := r.settled("after failover --to c with a healthy", 10*time.Second)
	if leader != "c" {
		t.Fatalf("primary %s, want c", leader)
	}
	t.Logf("settled in %s; result %+v", took, res)
	ch := r.app.Arbiter().Status().LastChange
	var names []string
	for _, st := range ch.Steps {
		names = append(names, st.String())
	}
	// The old leader answered: it was demoted first (no force needed).
	if !strings.Contains(strings.Join(names, ","), topology.StepDemote+"@a") || ch.SplitBrainRisk != "" || ch.Result != topology.ResultOK {
		t.Fatalf("change %+v steps %v", ch, names)
	}
	c := r.direct("a")
	fields, n := testproc.RowsRequest([]int64{42}, []int64{42})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ins, err := c.RPC.Insert(ctx, &milvuspb.InsertRequest{CollectionName: collName, FieldsData: fields, NumRows: n})
	if err == nil && ins.GetStatus().GetCode() == 0 {
		t.Fatalf("the old leader a took a direct write after the forced failover")
	}
	if v := r.view(); len(v.SplitBrainRisk) != 0 {
		t.Fatalf("split-brain risk %v", v.SplitBrainRisk)
	}
}

// TestChangeRightAfterChange: failover --to c and, as soon as it answers,
// switchover --to b: the second waits for whatever the first left running
// (the old leader's demotion) instead of being refused, and both succeed.
func TestChangeRightAfterChange(t *testing.T) {
	r := newRig(t, rigOptions{})
	if code, res, eb := r.adminPost("/api/v1/failover", "c"); code != http.StatusOK {
		t.Fatalf("failover --to c: %d %+v %+v", code, res, eb)
	}
	// b was attached to c behind or level with its salvage checkpoint;
	// quarantined behind it, b cannot be switched to: wait until c has
	// polled it.
	code, res, eb := r.adminPost("/api/v1/switchover", "b")
	if code != http.StatusOK {
		if !strings.Contains(eb.Error, "quarantined") {
			t.Fatalf("switchover --to b right after the failover: %d %+v", code, eb)
		}
		t.Logf("switchover --to b refused with a reason: %s", eb.Error)
	} else if res.To != "b" {
		t.Fatalf("switchover result %+v", res)
	}
	leader, took := r.settled("after failover c then switchover b", 15*time.Second)
	t.Logf("settled on %s in %s", leader, took)
}

// TestConcurrentChangesQueue: two changes sent at the same moment: the
// second waits for the first (status says a change is under way) and
// then runs or is refused with the reason; the proxy ends on one leader.
func TestConcurrentChangesQueue(t *testing.T) {
	r := newRig(t, rigOptions{})
	var wg sync.WaitGroup
	out := make([]string, 2)
	wg.Go(func() { out[0] = r.act("switchover", "b") })
	wg.Go(func() { out[1] = r.act("switchover", "c") })
	wg.Wait()
	t.Logf("%s | %s", out[0], out[1])
	for _, o := range out {
		if strings.Contains(o, "another leader change is under way") && !strings.Contains(o, "step") {
			t.Errorf("refusal without saying what runs: %s", o)
		}
	}
	leader, took := r.settled("after two concurrent switchovers", 15*time.Second)
	t.Logf("settled on %s in %s", leader, took)
}
