package etcdarbiter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/etcdarbiter/etcdtest"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

const testTTL = 2 * time.Second

// node is one proxy of a test: a topology manager (static discovery,
// never started: no cluster is dialled) and its arbiter.
type node struct {
	id    string
	m     *topology.Manager
	a     *Arbiter
	relay *etcdtest.Relay

	mu        sync.Mutex
	takeovers []*topology.Change
}

func newNode(t *testing.T, endpoint, id string, relayed bool, writeHold time.Duration) *node {
	t.Helper()
	m, err := topology.New(topology.Options{
		Discovery: topology.DiscoveryStatic,
		WriteHold: writeHold,
		Clusters: []topology.ClusterOptions{
			{ID: "a", URI: "127.0.0.1:1", Role: topology.RoleLeader},
			{ID: "b", URI: "127.0.0.1:2", Role: topology.RoleAlternative},
			{ID: "c", URI: "127.0.0.1:3", Role: topology.RoleAlternative},
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	n := &node{id: id, m: m}
	ep := endpoint
	if relayed {
		n.relay = etcdtest.NewRelay(t, endpoint)
		ep = n.relay.Addr()
	}
	n.a, err = New(Options{
		Endpoints: []string{ep},
		Prefix:    "/test/" + t.Name(),
		LeaseTTL:  testTTL,
		ProxyID:   id,
		Address:   "127.0.0.1:9" + id,
		Local:     m,
		Takeover: func(c *topology.Change) {
			n.mu.Lock()
			n.takeovers = append(n.takeovers, c)
			n.mu.Unlock()
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.a.Close() })
	n.a.Start()
	return n
}

func leaderOf(m *topology.Manager) string {
	s := m.Snapshot()
	if s.Leader == nil {
		return ""
	}
	return s.Leader.ID
}

func deciders(ns []*node) []string {
	var ids []string
	for _, n := range ns {
		if n.a.Deciding() {
			ids = append(ids, n.id)
		}
	}
	return ids
}

func threeNodes(t *testing.T, relayed bool) (*etcdtest.Server, []*node) {
	srv := etcdtest.Start(t)
	var ns []*node
	for _, id := range []string{"p1", "p2", "p3"} {
		ns = append(ns, newNode(t, srv.Endpoint, id, relayed, 3*time.Second))
	}
	testutil.Eventually(t, 10*time.Second, "exactly one proxy decides and every proxy reads the document", func() bool {
		if len(deciders(ns)) != 1 {
			return false
		}
		for _, n := range ns {
			if st := n.a.Status(); st.Epoch == 0 || st.Fenced || len(st.Proxies) != 3 || st.Decider == "" {
				return false
			}
		}
		return true
	})
	return srv, ns
}

func decider(t *testing.T, ns []*node) (*node, []*node) {
	t.Helper()
	var d *node
	var rest []*node
	for _, n := range ns {
		if n.a.Deciding() {
			d = n
		} else {
			rest = append(rest, n)
		}
	}
	if d == nil {
		t.Fatal("no proxy decides")
	}
	return d, rest
}

func TestOneDeciderFollowersRouteByItsDocument(t *testing.T) {
	_, ns := threeNodes(t, false)
	d, rest := decider(t, ns)
	st := d.a.Status()
	if st.Leader != "a" || st.Epoch != 1 || st.Decider != d.id {
		t.Fatalf("decider status %+v: want leader a, epoch 1, decider %s", st, d.id)
	}
	for _, n := range rest {
		if id, addr := n.a.DeciderAddress(); id != d.id || addr != "127.0.0.1:9"+d.id {
			t.Errorf("%s: decider address = %s %s, want %s 127.0.0.1:9%s", n.id, id, addr, d.id, d.id)
		}
	}

	// A switchover on the decider: writes held, then c installed.
	if err := d.m.HoldWrites("switching over to c"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "followers hold writes as the decider does", func() bool {
		for _, n := range rest {
			s := n.m.Snapshot()
			if !s.FailingOver || !strings.Contains(s.HoldReason, "switching over to c") || !strings.Contains(s.HoldReason, d.id) {
				return false
			}
		}
		return true
	})
	if err := d.m.InstallLeader(topology.Promotion{Leader: "c", Demoted: true}); err != nil {
		t.Fatal(err)
	}
	took := testutil.Eventually(t, 5*time.Second, "followers route writes to c, writes released", func() bool {
		for _, n := range rest {
			if s := n.m.Snapshot(); leaderOf(n.m) != "c" || s.FailingOver {
				return false
			}
		}
		return true
	})
	t.Logf("followers on the new leader %s after it was installed on the decider", took)
	for _, n := range ns {
		if st := n.a.Status(); st.Epoch != 2 || st.Leader != "c" {
			t.Errorf("%s: document epoch %d leader %s, want 2 and c", n.id, st.Epoch, st.Leader)
		}
		if s := n.m.Snapshot(); s.Cluster("a").Role != topology.RoleAlternative {
			t.Errorf("%s: a is %s, want alternative (demoted by the switchover)", n.id, s.Cluster("a").Role)
		}
	}

	// A quarantine travels too.
	if err := d.m.SetQuarantine("b", "ran ahead of the salvage checkpoint"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "followers quarantine b", func() bool {
		for _, n := range rest {
			if c := n.m.Snapshot().Cluster("b"); !c.Quarantined || c.QuarantineReason != "ran ahead of the salvage checkpoint" {
				return false
			}
		}
		return true
	})
}

func TestFollowerNeverTakesLeaderFromItsOwnView(t *testing.T) {
	_, ns := threeNodes(t, false)
	_, rest := decider(t, ns)
	f := rest[0]
	// Something local (discovery, an operator on the wrong proxy) moves
	// the follower's leader: the next document puts it back; and the
	// follower never writes the document.
	if err := f.m.InstallLeader(topology.Promotion{Leader: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := f.a.ChangeStore().Save(context.Background(), &topology.Change{Kind: topology.KindFailover, To: "b"}); !errors.Is(err, ErrNotDecider) {
		t.Fatalf("a follower's Save = %v, want ErrNotDecider", err)
	}
	if st := f.a.Status(); st.Leader != "a" || st.Epoch != 1 {
		t.Fatalf("document changed by a follower: %+v", st)
	}
	testutil.Eventually(t, 5*time.Second, "the follower routes to a again", func() bool { return leaderOf(f.m) == "a" })
}

func TestDeciderClosesAnotherTakesOverWithTheRecord(t *testing.T) {
	_, ns := threeNodes(t, false)
	d, rest := decider(t, ns)
	ch := &topology.Change{Kind: topology.KindFailover, From: "a", To: "b", Epoch: 1, At: time.Now()}
	if err := d.a.ChangeStore().Save(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if err := d.m.HoldWrites("failing over to b"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "followers hold", func() bool {
		for _, n := range rest {
			if !n.m.Snapshot().FailingOver {
				return false
			}
		}
		return true
	})
	start := time.Now()
	_ = d.a.Close()
	testutil.Eventually(t, 5*time.Second, "another proxy decides", func() bool { return len(deciders(rest)) == 1 })
	t.Logf("a new decider %s after the old one resigned", time.Since(start))
	nd, _ := decider(t, rest)
	nd.mu.Lock()
	tk := nd.takeovers
	nd.mu.Unlock()
	if len(tk) != 1 || tk[0] == nil || tk[0].Result != "" || tk[0].To != "b" {
		t.Fatalf("takeover got %+v, want the unfinished failover to b", tk)
	}
	loaded, err := nd.a.ChangeStore().Load(context.Background())
	if err != nil || loaded == nil || loaded.To != "b" {
		t.Fatalf("Load = %+v, %v", loaded, err)
	}
	// The new decider released the hold it copied (its own arbiter
	// settles the change): every proxy routes to a again, writes flow.
	testutil.Eventually(t, 5*time.Second, "the hold of the dead decider is lifted everywhere", func() bool {
		for _, n := range rest {
			if n.m.Snapshot().FailingOver || leaderOf(n.m) != "a" {
				return false
			}
		}
		return true
	})
}

func TestCutOffProxyFencesWritesAndNeverDecides(t *testing.T) {
	_, ns := threeNodes(t, true)
	d, rest := decider(t, ns)
	cut := rest[0]
	other := rest[1]
	cut.relay.Cut()
	cutAt := time.Now()
	took := testutil.Eventually(t, testTTL+3*time.Second, "the cut-off proxy fences writes", func() bool {
		st := cut.a.Status()
		s := cut.m.Snapshot()
		return st.Fenced && s.FailingOver && strings.Contains(s.HoldReason, "etcd")
	})
	t.Logf("fenced %s after the cut (lease %s)", took, testTTL)
	if took < testTTL/2 {
		t.Errorf("fenced after %s: before the lease (%s) could have expired", took, testTTL)
	}
	if cut.a.Deciding() {
		t.Fatal("the cut-off proxy decides")
	}
	// Writes wait up to write_hold, then fail with the reason.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w0 := time.Now()
	_, err := cut.m.WaitLeader(ctx)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "etcd") {
		t.Fatalf("write on the cut-off proxy: %v, want Unavailable naming etcd", err)
	}
	if held := time.Since(w0); held < 2*time.Second {
		t.Errorf("write refused after %s, want it held for write_hold (3s)", held)
	}

	// Meanwhile the decider moves the leader; the others follow.
	if err := d.m.InstallLeader(topology.Promotion{Leader: "b"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the connected follower routes to b", func() bool { return leaderOf(other.m) == "b" })
	if s := cut.m.Snapshot(); s.LostLeader != "a" {
		t.Errorf("cut-off proxy's held leader = %q, want a (the last it read)", s.LostLeader)
	}

	cut.relay.Restore()
	testutil.Eventually(t, 15*time.Second, "the proxy back on etcd routes to b, unfenced", func() bool {
		st := cut.a.Status()
		s := cut.m.Snapshot()
		return !st.Fenced && !s.FailingOver && leaderOf(cut.m) == "b" && st.Epoch == 2
	})
	t.Logf("cut off for %s in all", time.Since(cutAt))
}

func TestCutOffDeciderStepsDownBeforeAnotherIsElected(t *testing.T) {
	_, ns := threeNodes(t, true)
	d, rest := decider(t, ns)
	var mu sync.Mutex
	var overlap []string
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if ds := deciders(ns); len(ds) > 1 {
				mu.Lock()
				overlap = append(overlap, fmt.Sprint(ds))
				mu.Unlock()
			}
		}
	}()
	d.relay.Cut()
	cutAt := time.Now()
	stepped := testutil.Eventually(t, testTTL+2*time.Second, "the cut-off decider stops deciding", func() bool { return !d.a.Deciding() })
	elected := testutil.Eventually(t, 3*testTTL+5*time.Second, "another proxy decides", func() bool { return len(deciders(rest)) == 1 })
	close(stop)
	<-done
	t.Logf("old decider stopped after %s; a new one decides %s after the cut", stepped, time.Since(cutAt))
	if len(overlap) > 0 {
		t.Fatalf("two proxies decided at once: %v", overlap)
	}
	if err := d.a.ChangeStore().Save(context.Background(), &topology.Change{Kind: topology.KindFailover}); !errors.Is(err, ErrNotDecider) {
		t.Fatalf("the old decider's Save = %v, want ErrNotDecider", err)
	}
	_ = elected
	nd, _ := decider(t, rest)
	if err := nd.m.InstallLeader(topology.Promotion{Leader: "c"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the new decider's document reaches the other follower", func() bool {
		for _, n := range rest {
			if leaderOf(n.m) != "c" {
				return false
			}
		}
		return true
	})
	d.relay.Restore()
	testutil.Eventually(t, 15*time.Second, "the old decider follows the new one", func() bool {
		return !d.a.Status().Fenced && leaderOf(d.m) == "c" && !d.a.Deciding()
	})
}

func TestDuplicateProxyIDIsRefused(t *testing.T) {
	srv := etcdtest.Start(t)
	first := newNode(t, srv.Endpoint, "p1", false, time.Second)
	testutil.Eventually(t, 10*time.Second, "the first p1 decides", first.a.Deciding)
	second := newNode(t, srv.Endpoint, "p1", false, time.Second)
	testutil.Eventually(t, 10*time.Second, "the second p1 says why it cannot join", func() bool {
		return strings.Contains(second.a.Status().LastError, `proxy id "p1" is registered`)
	})
	if second.a.Deciding() || !second.a.Status().Fenced {
		t.Fatalf("the duplicate decides or routes writes: %+v", second.a.Status())
	}
}

func TestOptionsErrors(t *testing.T) {
	m, err := topology.New(topology.Options{Discovery: topology.DiscoveryStatic,
		Clusters: []topology.ClusterOptions{{ID: "a", URI: "127.0.0.1:1", Role: topology.RoleLeader}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tt := range []struct {
		name string
		o    Options
		want string
	}{
		{"no endpoints", Options{Prefix: "/p", ProxyID: "x", Local: m}, "no etcd endpoints"},
		{"relative prefix", Options{Endpoints: []string{"e:1"}, Prefix: "p", ProxyID: "x", Local: m}, `prefix "p"`},
		{"no id", Options{Endpoints: []string{"e:1"}, Prefix: "/p", Local: m}, "no proxy id"},
		{"no local", Options{Endpoints: []string{"e:1"}, Prefix: "/p", ProxyID: "x"}, "no local topology"},
		{"short lease", Options{Endpoints: []string{"e:1"}, Prefix: "/p", ProxyID: "x", Local: m, LeaseTTL: time.Second}, "lease TTL 1s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
