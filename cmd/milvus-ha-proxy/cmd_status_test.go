package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
)

// fakeController stands in for the proxy behind the admin API.
type fakeController struct {
	mu     sync.Mutex
	view   admin.View
	ready  bool
	reason string
	calls  []string
	result admin.Result
	err    error
}

func (f *fakeController) Topology(context.Context) admin.View {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.view
}

func (f *fakeController) Ready() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready, f.reason
}

func (f *fakeController) act(kind, to string) (admin.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, kind+" "+to)
	return f.result, f.err
}

func (f *fakeController) Switchover(_ context.Context, to string) (admin.Result, error) {
	return f.act("switchover", to)
}

func (f *fakeController) Failover(_ context.Context, to string) (admin.Result, error) {
	return f.act("failover", to)
}

func (f *fakeController) Attach(_ context.Context, id string) (admin.Result, error) {
	return f.act("attach", id)
}

// startAdmin serves the real admin server over a fake controller.
func startAdmin(t *testing.T, f *fakeController) string {
	t.Helper()
	s := admin.New(admin.Options{Controller: f, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

// deadAddr returns an address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func runCmd(fn func(context.Context, []string, io.Writer, io.Writer) int, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := fn(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func sampleView() admin.View {
	lost := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	return admin.View{
		Epoch: 2, Leader: "b", Discovery: "static", FailoverMode: "auto",
		Clusters: []admin.ClusterView{
			{ID: "a", Role: "alternative", Healthy: false, HealthReason: "connection refused", Breaker: "open", LagReason: "GetReplicateInfo: unavailable", Served: 1200, Outstanding: 0},
			{ID: "b", Role: "leader", Healthy: true, Breaker: "closed", Served: 877, Outstanding: 3},
			{ID: "c", Role: "alternative", Healthy: true, Breaker: "half-open", LagSeconds: 0.125, LagKnown: true, Served: 40, Outstanding: 1},
			{ID: "d", Role: "alternative", Healthy: true, Breaker: "closed", LagSeconds: 0, LagKnown: true, Quarantined: true,
				QuarantineReason: "checkpoint on pchannel 1 runs ahead of the salvage checkpoint"},
		},
		LastChange: &admin.Change{Kind: "failover", From: "a", To: "b", Epoch: 2, At: lost.Add(2 * time.Second), TookSeconds: 1.5, Result: "ok"},
		Salvage:    []admin.Salvage{{Epoch: 2, OldLeader: "a", NewLeader: "b", At: lost, Checkpoints: []uint64{100, 200}}},
	}
}

func TestStatusTable(t *testing.T) {
	f := &fakeController{ready: true, view: sampleView()}
	url := startAdmin(t, f)
	code, out, errOut := runCmd(runStatus, "--admin", url)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	lines := strings.Split(out, "\n")
	if lines[0] != "leader b | epoch 2 | discovery static | failover auto | ready" {
		t.Errorf("headline = %q", lines[0])
	}
	// One row per cluster with every column, in config order.
	rows := map[string][]string{}
	var order []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 7 && f[0] != "CLUSTER" {
			rows[f[0]] = f
			order = append(order, f[0])
		}
	}
	want := map[string][]string{
		"a": {"a", "alternative", "DOWN", "open", "unknown", "1200", "0"},
		"b": {"b", "leader", "healthy", "closed", "-", "877", "3"},
		"c": {"c", "alternative", "healthy", "half-open", "125ms", "40", "1"},
		"d": {"d", "alternative", "quarantined", "closed", "0s", "0", "0"},
	}
	if strings.Join(order, ",") != "a,b,c,d" {
		t.Errorf("rows in order %v\n%s", order, out)
	}
	for id, w := range want {
		if strings.Join(rows[id], " ") != strings.Join(w, " ") {
			t.Errorf("row %s = %v, want %v", id, rows[id], w)
		}
	}
	if !strings.Contains(out, "CLUSTER  ROLE") || !strings.Contains(out, "LAG") || !strings.Contains(out, "SERVED") {
		t.Errorf("no header:\n%s", out)
	}
	for _, note := range []string{
		"a is down: connection refused",
		"a lag unknown (counts as stale, no reads that need fresh data): GetReplicateInfo: unavailable",
		"d is QUARANTINED (gets no reads): checkpoint on pchannel 1 runs ahead of the salvage checkpoint",
		"salvage (epoch 2): b was promoted by force from a at 2025-06-01T12:00:00Z; salvage checkpoint [100 200]; the old leader has not come back",
		"last change: failover a -> b at 2025-06-01T12:00:02Z (epoch 2, ok, took 1.5s)",
	} {
		if !strings.Contains(out, note) {
			t.Errorf("missing %q in\n%s", note, out)
		}
	}
}

func TestStatusNoLeader(t *testing.T) {
	lost := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f := &fakeController{ready: false, reason: "no leader: failover under way", view: admin.View{
		Epoch: 1, FailingOver: true, LeaderLostAt: &lost,
		Clusters: []admin.ClusterView{{ID: "a", Role: "leader", Breaker: "open", HealthReason: "deadline exceeded"}},
	}}
	url := startAdmin(t, f)
	code, out, _ := runCmd(runStatus, "--admin", strings.TrimPrefix(url, "http://")) // scheme optional
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"leader none | epoch 1 | NOT READY: no leader: failover under way",
		"LEADER CHANGE UNDER WAY; writes are held",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}

// TestStatusBanner: the banner names the real state (a change under way
// with its step, a stuck switchover, a lost leader) and a split-brain
// risk; an unknown lag prints as unknown.
func TestStatusBanner(t *testing.T) {
	lost := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		v    admin.View
		want []string
	}{
		{"change under way", admin.View{FailingOver: true, ChangeUnderWay: &admin.Change{Kind: "switchover", From: "a", To: "b",
			Steps: []admin.Step{{Name: "hold", Cluster: "a", Done: true}, {Name: "demote", Cluster: "a", Sent: "UpdateReplicateConfiguration(clusters [a b])"}}}},
			[]string{"CHANGE UNDER WAY: switchover a -> b, step demote on a (sent UpdateReplicateConfiguration(clusters [a b])); writes are held"}},
		{"stuck", admin.View{FailingOver: true, Phase: "stuck", LastChange: &admin.Change{Kind: "switchover", From: "a", To: "b", Epoch: 2,
			Result: "failed", Message: "stuck after the old leader demoted itself: timeout",
			Steps: []admin.Step{{Name: "demote", Cluster: "a", Done: true, TookSeconds: 0.002}, {Name: "promote", Cluster: "b", Done: true, Error: "timeout"}}}},
			[]string{"SWITCHOVER STUCK; writes are held: stuck after the old leader demoted itself: timeout", "(epoch 2, failed", "steps demote@a 2ms, promote@b 0s FAILED"}},
		{"lost manual", admin.View{LeaderLostAt: &lost, FailoverMode: "manual", Leader: "a"},
			[]string{"LEADER LOST since 2025-06-01T12:00:00Z; writes wait for a new leader (failover.mode is manual"}},
		{"split brain", admin.View{Leader: "c", SplitBrainRisk: []string{"a was reachable but could not be demoted"}},
			[]string{"SPLIT-BRAIN RISK: a was reachable but could not be demoted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			printStatus(&b, tt.v)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("missing %q in\n%s", w, b.String())
				}
			}
			if strings.Contains(b.String(), "FAILOVER UNDER WAY") {
				t.Errorf("old banner in\n%s", b.String())
			}
		})
	}
}

func TestStatusJSON(t *testing.T) {
	f := &fakeController{ready: true, view: sampleView()}
	url := startAdmin(t, f)
	code, out, _ := runCmd(runStatus, "--admin", url, "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var v admin.View
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if v.Leader != "b" || len(v.Clusters) != 4 || !v.Ready {
		t.Errorf("view = %+v", v)
	}
}

func TestStatusUnreachable(t *testing.T) {
	addr := deadAddr(t)
	code, out, errOut := runCmd(runStatus, "--admin", "http://"+addr)
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	for _, want := range []string{"cannot reach the admin API at http://" + addr, "connection refused", "is the proxy running", "--admin URL"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q: %s", want, errOut)
		}
	}
}

func TestStatusUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
		{[]string{"--admin", "ftp://x"}, 2, "want http://host:port"},
		{[]string{"-h"}, 0, "usage: milvus-ha-proxy status"},
	}
	for _, tt := range tests {
		code, _, errOut := runCmd(runStatus, tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.msg) {
			t.Errorf("status %v = %d %q, want %d and %q", tt.args, code, errOut, tt.code, tt.msg)
		}
	}
}

// TestStatusServerError: a non-JSON error answer (a proxy in front of the
// admin port, say) is still reported with exit 1.
func TestStatusServerError(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(502)
		fmt.Fprint(w, "bad gateway")
	}))
	defer ts.Close()
	code, _, errOut := runCmd(runStatus, "--admin", ts.URL)
	if code != 1 || !strings.Contains(errOut, "HTTP 502: bad gateway") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// TestAdminURLFromEnv: without --admin, status and switchover use
// $MILVUS_HA_PROXY_ADMIN; --admin wins over it.
func TestAdminURLFromEnv(t *testing.T) {
	f := &fakeController{ready: true, view: sampleView(), result: admin.Result{From: "b", To: "c", Epoch: 3}}
	url := startAdmin(t, f)
	t.Setenv(envAdmin, url)
	if code, out, errOut := runCmd(runStatus); code != 0 || !strings.HasPrefix(out, "leader b |") {
		t.Errorf("status with $%s: exit %d\n%s%s", envAdmin, code, out, errOut)
	}
	if code, out, errOut := runCmd(runSwitchover, "--to", "c"); code != 0 || !strings.Contains(out, "switchover done: leader is now c") {
		t.Errorf("switchover with $%s: exit %d\n%s%s", envAdmin, code, out, errOut)
	}
	dead := "http://" + deadAddr(t)
	if code, _, errOut := runCmd(runStatus, "--admin", dead); code != 1 || !strings.Contains(errOut, strings.TrimPrefix(dead, "http://")) {
		t.Errorf("--admin %s did not win over $%s: exit %d\n%s", dead, envAdmin, code, errOut)
	}
}

// TestStatusArbiter: with the etcd arbiter, status names the decider,
// lists every proxy from etcd and says when this one is fenced.
func TestStatusArbiter(t *testing.T) {
	hb := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	v := admin.View{Leader: "a", Epoch: 2, Ready: false, NotReadyReason: "cannot confirm the leader with the etcd arbiter",
		Arbiter: &admin.ArbiterView{
			Endpoints: []string{"etcd:2379"}, Prefix: "/milvus-ha-proxy/a+b", ProxyID: "p2", Decider: "p1",
			Epoch: 3, Leader: "b", Fenced: true, FenceReason: "cannot confirm the leader with the etcd arbiter: etcd has not confirmed",
			ChangeRunning: true,
			Proxies: []admin.ProxyEntry{
				{ID: "p1", Address: "10.0.0.1:9091", Epoch: 3, Leader: "b", Deciding: true, LastHeartbeat: hb},
				{ID: "p2", Address: "10.0.0.2:9091", Epoch: 2, Leader: "a", LastHeartbeat: hb},
			},
		}}
	var b strings.Builder
	printStatus(&b, v)
	out := b.String()
	for _, want := range []string{
		"arbiter: etcd etcd:2379 /milvus-ha-proxy/a+b | NOT CONNECTED | this proxy p2, follows p1 | topology epoch 3, leader b",
		"WRITES FENCED: cannot confirm the leader with the etcd arbiter",
		"a leader change recorded in etcd has not finished",
		"PROXY", "LAST HEARTBEAT",
		"p1     10.0.0.1:9091  3      b       03:04:05.600    yes",
		"p2     10.0.0.2:9091  2      a       03:04:05.600",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	v.Arbiter = nil
	b.Reset()
	printStatus(&b, v)
	if strings.Contains(b.String(), "PROXY") || strings.Contains(b.String(), "arbiter: etcd") {
		t.Errorf("status without an arbiter mentions one:\n%s", b.String())
	}
}
