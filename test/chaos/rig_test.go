package chaos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
)

const (
	pchannels   = 2
	detectAfter = time.Second
	writeHold   = 10 * time.Second
)

// rig is three simulated clusters a -> b, c and the proxy in front of
// them, every one its own process.
type rig struct {
	t     testing.TB
	root  string
	ids   []string
	sims  map[string]*simProc
	proxy *proxyProc
	adm   *admin.Client
	hc    *http.Client

	direct map[string]*client // one connection per cluster, bypassing the proxy
	via    *client            // the rig's own connection through the proxy
	probe  atomic.Int64       // primary keys of probe writes
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, root: t.TempDir(), ids: []string{"a", "b", "c"}, sims: map[string]*simProc{},
		direct: map[string]*client{}, hc: &http.Client{Timeout: 5 * time.Second}}
	r.probe.Store(7_000_000_000_000)
	r.sims = testproc.StartSims(t, binary, r.root, r.ids)
	for _, id := range r.ids {
		r.direct[id] = dial(t, r.sims[id].Addr)
	}
	r.join("a", "b", "c")

	var yaml strings.Builder
	fmt.Fprintf(&yaml, "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndiscovery: replicate\nclusters:\n")
	for _, id := range r.ids {
		fmt.Fprintf(&yaml, "  - id: %s\n    uri: %s\n", id, r.sims[id].Addr)
	}
	// The proxy keeps its leader change record and the quarantines in
	// force in a file: a restarted proxy must not forget them.
	fmt.Fprintf(&yaml, "failover:\n  mode: auto\n  detect_after: %s\n  write_hold: %s\n  state_file: %s\ndrain:\n  grace_period: 2s\n",
		detectAfter, writeHold, filepath.Join(r.root, "proxy-state.json"))
	cfgPath := filepath.Join(r.root, "proxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := startProxy(t, r.root, cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r.proxy = p
	// No client timeout for the actions: a switchover answers when it is
	// done; each call has its own context.
	r.adm, err = admin.NewClient("http://"+p.Admin, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	r.via = dial(t, p.Addr)
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := r.topology()
		if err == nil && v.Leader == "a" && v.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy did not find leader a within 30s: %+v %v", v, err)
		}
		time.Sleep(50 * time.Millisecond)
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

// setup creates, indexes and loads the collection through the proxy and
// waits until every alternative serves it.
func (r *rig) setup() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.via.CreateCollection(ctx); err != nil {
		r.t.Fatal(err)
	}
	for _, id := range []string{"b", "c"} {
		if err := r.direct[id].WaitServes(20 * time.Second); err != nil {
			r.t.Fatalf("%s does not serve the collection after 20s: %v\n%s", id, err, r.diagnostics())
		}
	}
}

func (r *rig) topology() (admin.View, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.adm.Topology(ctx)
}

func (r *rig) readyz() (int, string) {
	resp, err := r.hc.Get("http://" + r.proxy.Admin + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// simControl posts a fault control to a simulator.
func (r *rig) simControl(id, action string) error {
	resp, err := r.hc.Post("http://"+r.sims[id].Ctl+"/sim/"+id+"/"+action, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s on %s: %d %s", action, id, resp.StatusCode, b)
	}
	return nil
}

// diagnostics is every simulator's own status and the proxy's topology,
// for failure messages.
func (r *rig) diagnostics() string {
	var b strings.Builder
	for _, id := range r.ids {
		if !r.sims[id].Running() {
			fmt.Fprintf(&b, "sim %s: down\n", id)
			continue
		}
		resp, err := r.hc.Get("http://" + r.sims[id].Ctl + "/sim/" + id + "/status")
		if err != nil {
			fmt.Fprintf(&b, "sim %s: %v\n", id, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(&b, "sim %s: %s\n", id, strings.TrimSpace(string(body)))
	}
	v, err := r.topology()
	if err != nil {
		fmt.Fprintf(&b, "proxy topology: %v\n", err)
	} else {
		j, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(&b, "proxy topology: %s\n", j)
	}
	return b.String()
}

// writable asks every running cluster directly whether it takes a write
// (a probe row with its own primary key) and returns those that did.
func (r *rig) writable() (ok []string, why []string) {
	for _, id := range r.ids {
		if !r.sims[id].Running() {
			continue
		}
		pk := r.probe.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _, err := r.direct[id].Insert(ctx, pk, pk)
		cancel()
		if err == nil {
			ok = append(ok, id)
		} else {
			why = append(why, fmt.Sprintf("%s: %.120s", id, err))
		}
	}
	return ok, why
}

// settle waits up to bound until exactly one cluster accepts writes, the
// proxy routes a write to that cluster, and /readyz is 200. It returns the
// leader, or what still did not hold at the bound.
func (r *rig) settle(bound time.Duration) (string, error) {
	deadline := time.Now().Add(bound)
	var last string
	for {
		leader, why := r.settledOnce()
		if why == "" {
			return leader, nil
		}
		last = why
		if time.Now().After(deadline) {
			return "", fmt.Errorf("not settled after %s: %s", bound, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *rig) settledOnce() (string, string) {
	ok, why := r.writable()
	if len(ok) != 1 {
		return "", fmt.Sprintf("clusters accepting writes directly: %v (others: %s)", ok, strings.Join(why, "; "))
	}
	pk := r.probe.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, via, err := r.via.Insert(ctx, pk, pk)
	cancel()
	if err != nil {
		return "", fmt.Sprintf("%s alone accepts writes, but a write through the proxy failed: %.200s", ok[0], err)
	}
	if via != ok[0] {
		return "", fmt.Sprintf("%s alone accepts writes, but the proxy sent a write to %q", ok[0], via)
	}
	if code, body := r.readyz(); code != http.StatusOK {
		return "", fmt.Sprintf("%s leads and takes the proxy's writes, but /readyz is %d: %.200s", ok[0], code, body)
	}
	return ok[0], ""
}
