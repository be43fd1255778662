package multiproxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/etcdarbiter/etcdtest"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
)

const (
	collName    = "multi"
	pchannels   = 2
	detectAfter = time.Second
	writeHold   = 6 * time.Second
	leaseTTL    = 2 * time.Second
)

// node is one proxy process, its relay to etcd and its admin client.
type node struct {
	name  string
	p     *proxyProc
	relay *etcdtest.Relay
	adm   *admin.Client
	cl    *client
}

// rig is three simulated clusters a -> b, c, one etcd and three proxies.
type rig struct {
	t     testing.TB
	root  string
	ids   []string
	sims  map[string]*simProc
	etcd  *etcdtest.Server
	nodes []*node
	hc    *http.Client

	direct map[string]*client
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, root: t.TempDir(), ids: []string{"a", "b", "c"}, sims: map[string]*simProc{},
		direct: map[string]*client{}, hc: &http.Client{Timeout: 5 * time.Second}}
	if bin := os.Getenv("MHP_ETCD_BIN"); bin != "" {
		r.etcd = etcdtest.StartBinary(t, bin)
	} else {
		r.etcd = etcdtest.Start(t)
	}
	r.sims = testproc.StartSims(t, binary, r.root, r.ids)
	for _, id := range r.ids {
		r.direct[id] = dial(t, r.sims[id].Addr)
	}
	r.join("a", "b", "c")

	for i := range 3 {
		name := fmt.Sprintf("p%d", i+1)
		n := &node{name: name, relay: etcdtest.NewRelay(t, r.etcd.Endpoint)}
		var y strings.Builder
		fmt.Fprintf(&y, "discovery: replicate\nclusters:\n")
		for _, id := range r.ids {
			fmt.Fprintf(&y, "  - id: %s\n    uri: %s\n", id, r.sims[id].Addr)
		}
		fmt.Fprintf(&y, "failover:\n  mode: auto\n  detect_after: %s\n  write_hold: %s\ndrain:\n  grace_period: 1s\n", detectAfter, writeHold)
		fmt.Fprintf(&y, "arbiter:\n  proxy_id: %s\n  etcd:\n    endpoints: [%s]\n    prefix: /mhp-test/%s\n    lease_ttl: %s\n",
			name, n.relay.Addr(), strings.ReplaceAll(t.Name(), "/", "_"), leaseTTL)
		path := filepath.Join(r.root, name+".yaml")
		if err := os.WriteFile(path, []byte(y.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := startProxy(t, r.root, name, path)
		if err != nil {
			t.Fatal(err)
		}
		n.p = p
		if n.adm, err = admin.NewClient("http://"+p.Admin, &http.Client{}); err != nil {
			t.Fatal(err)
		}
		n.cl = dial(t, p.Addr)
		r.nodes = append(r.nodes, n)
	}
	if _, err := r.agree(30*time.Second, "a"); err != nil {
		t.Fatalf("the proxies did not agree on leader a: %v\n%s", err, r.diagnostics())
	}
	r.setup()
	return r
}

// join sends the same replicate configuration (source -> targets) to every
// cluster, as a deployment does.
func (r *rig) join(source string, targets ...string) {
	r.t.Helper()
	testproc.Join(r.t, func(id string) string { return r.sims[id].Addr }, pchannels, source, targets...)
}

// setup creates, indexes and loads the collection through the first proxy
// and waits until every alternative serves it.
func (r *rig) setup() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.nodes[0].cl.CreateCollection(ctx); err != nil {
		r.t.Fatal(err)
	}
	for _, id := range []string{"b", "c"} {
		if err := r.direct[id].WaitServes(20 * time.Second); err != nil {
			r.t.Fatalf("%s does not serve the collection after 20s: %v", id, err)
		}
	}
}

func (n *node) topology() (admin.View, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return n.adm.Topology(ctx)
}

// agree waits until every running proxy routes writes to the same leader
// (want, or any when want is "", or any other than X when want is "!X"),
// with the same etcd topology epoch, and none holds writes. It returns
// the leader.
func (r *rig) agree(bound time.Duration, want string, skip ...string) (string, error) {
	deadline := time.Now().Add(bound)
	var last string
	for {
		leader, why := r.agreedOnce(want, skip)
		if why == "" {
			return leader, nil
		}
		last = why
		if time.Now().After(deadline) {
			return "", fmt.Errorf("after %s: %s", bound, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) agreedOnce(want string, skip []string) (string, string) {
	leader, epoch := "", uint64(0)
	for _, n := range r.nodes {
		if !n.p.Running() || contains(skip, n.name) {
			continue
		}
		v, err := n.topology()
		switch {
		case err != nil:
			return "", fmt.Sprintf("%s: %v", n.name, err)
		case v.Arbiter == nil:
			return "", n.name + " shows no arbiter"
		case v.Leader == "" || v.FailingOver || v.Arbiter.Fenced:
			return "", fmt.Sprintf("%s: leader %q failing over %v fenced %v", n.name, v.Leader, v.FailingOver, v.Arbiter.Fenced)
		case strings.HasPrefix(want, "!") && v.Leader == want[1:]:
			return "", fmt.Sprintf("%s still routes to %s", n.name, v.Leader)
		case want != "" && !strings.HasPrefix(want, "!") && v.Leader != want:
			return "", fmt.Sprintf("%s routes to %s, want %s", n.name, v.Leader, want)
		case leader != "" && (v.Leader != leader || v.Arbiter.Epoch != epoch):
			return "", fmt.Sprintf("%s routes to %s (epoch %d), another to %s (epoch %d)", n.name, v.Leader, v.Arbiter.Epoch, leader, epoch)
		}
		leader, epoch = v.Leader, v.Arbiter.Epoch
	}
	return leader, ""
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// decider returns the proxy that decides, as the proxies' records say.
func (r *rig) decider() (*node, error) {
	for _, n := range r.nodes {
		if !n.p.Running() {
			continue
		}
		v, err := n.topology()
		if err != nil || v.Arbiter == nil {
			continue
		}
		if v.Arbiter.Deciding {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no proxy decides")
}

// simStatus reads one simulator's status.
func (r *rig) simStatus(id string) (sim.ClusterStatus, error) {
	var st sim.ClusterStatus
	resp, err := r.hc.Get("http://" + r.sims[id].Ctl + "/sim/" + id + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return st, json.Unmarshal(b, &st)
}

// promotions sums the force promotions the running clusters carried out.
func (r *rig) promotions() (total int64, by string) {
	var parts []string
	for _, id := range r.ids {
		if !r.sims[id].Running() {
			continue
		}
		st, err := r.simStatus(id)
		if err != nil {
			r.t.Errorf("status of %s: %v", id, err)
			continue
		}
		total += st.ForcePromotions
		parts = append(parts, id+"="+strconv.FormatInt(st.ForcePromotions, 10))
	}
	return total, strings.Join(parts, " ")
}

// writable asks every running cluster directly whether it takes a write.
func (r *rig) writable(pk int64) []string {
	var ok []string
	for _, id := range r.ids {
		if !r.sims[id].Running() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _, err := r.direct[id].Insert(ctx, pk, pk)
		cancel()
		if err == nil {
			ok = append(ok, id)
		}
		pk++
	}
	return ok
}

func (r *rig) diagnostics() string {
	var b strings.Builder
	for _, n := range r.nodes {
		if !n.p.Running() {
			fmt.Fprintf(&b, "%s: down\n", n.name)
			continue
		}
		v, err := n.topology()
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", n.name, err)
			continue
		}
		j, _ := json.Marshal(v.Arbiter)
		fmt.Fprintf(&b, "%s: leader %s failing_over %v ready %v (%s) arbiter %s\n", n.name, v.Leader, v.FailingOver, v.Ready, v.NotReadyReason, j)
	}
	for _, id := range r.ids {
		if !r.sims[id].Running() {
			fmt.Fprintf(&b, "sim %s: down\n", id)
			continue
		}
		st, err := r.simStatus(id)
		fmt.Fprintf(&b, "sim %s: role %s source %s targets %v promotions %d %v\n", id, st.Role, st.Source, st.Targets, st.ForcePromotions, err)
	}
	return b.String()
}

// client is the suites' raw Milvus client (test/testproc) on collName.
type client = testproc.Client

func dial(t testing.TB, addr string) *client { return testproc.Dial(t, addr, collName) }

// holds says which of pks the cluster behind c holds, at a level and
// guarantee timestamp.
func holds(ctx context.Context, c *client, level commonpb.ConsistencyLevel, guarantee uint64, pks ...int64) (map[int64]bool, error) {
	rows, err := c.Query(ctx, level, guarantee, nil, pks...)
	if err != nil {
		return nil, err
	}
	out := map[int64]bool{}
	for _, r := range rows {
		out[r.PK] = true
	}
	return out, nil
}
