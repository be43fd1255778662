package failover_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

const (
	collName  = "ha"
	pchannels = 2
)

// rigOptions shape a rig.
type rigOptions struct {
	mode        string        // failover.mode; default auto
	detectAfter time.Duration // default 1s
	extraSim    []string      // extra flags for every sim
	// binary runs the proxy as the built milvus-ha-proxy binary in its
	// own process (`serve --config`) instead of through app in this
	// process; the rig's app is then nil, and the proxy is reached only
	// through its addresses.
	binary bool
}

// rig is three simulated clusters a -> b, c (separate processes) and the
// proxy in front of them.
type rig struct {
	t    testing.TB
	ids  []string
	sims map[string]*simProc
	app  *app.App // nil with rigOptions.binary
	pch  int      // the leader pchannel index the collection lives on
	// addr and admin are the proxy's gRPC and admin addresses.
	addr, admin string
}

func newRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	if o.mode == "" {
		o.mode = "auto"
	}
	if o.detectAfter == 0 {
		o.detectAfter = time.Second
	}
	r := &rig{t: t, ids: []string{"a", "b", "c"}, sims: map[string]*simProc{}}
	for id, s := range testproc.StartSims(t, binary, t.TempDir(), r.ids, o.extraSim...) {
		r.sims[id] = &simProc{Sim: s, t: t}
	}
	r.join("a", "b", "c")

	var yaml strings.Builder
	fmt.Fprintf(&yaml, "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndiscovery: replicate\nclusters:\n")
	for _, id := range r.ids {
		fmt.Fprintf(&yaml, "  - id: %s\n    uri: %s\n", id, r.sims[id].Addr)
	}
	fmt.Fprintf(&yaml, "failover:\n  mode: %s\n  detect_after: %s\n  write_hold: 10s\n", o.mode, o.detectAfter)
	cfg, err := config.Parse([]byte(yaml.String()))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml.String())
	}
	if o.binary {
		r.startBinary(yaml.String())
		r.setup()
		return r
	}
	logFile, err := os.Create(filepath.Join(t.TempDir(), "proxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := app.New(context.Background(), app.Options{Config: cfg, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	r.app, r.addr, r.admin = a, a.Addr(), a.AdminAddr()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("proxy log (last 6000 bytes):\n%s", tail(b, 6000))
			}
		}
	})
	r.waitTopology("a leads, b and c polled", 20*time.Second, func(s *topology.Snapshot) bool {
		return s.Leader != nil && s.Leader.ID == "a" && s.Cluster("b").CheckpointsKnown && s.Cluster("c").CheckpointsKnown
	})
	r.setup()
	return r
}

// startBinary runs the proxy binary with the configuration and waits, on
// its admin API, until a leads and b and c are polled.
func (r *rig) startBinary(yaml string) {
	r.t.Helper()
	dir := r.t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		r.t.Fatal(err)
	}
	p, err := testproc.StartProxy(r.t, binary, dir, "proxy", path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.addr, r.admin = p.Addr, p.Admin
	testutil.Eventually(r.t, 20*time.Second, "a leads, b and c polled (admin API)", func() bool {
		code, b := r.adminGet("/api/v1/topology")
		var v admin.View
		if code != http.StatusOK || json.Unmarshal(b, &v) != nil || v.Leader != "a" {
			return false
		}
		polled := 0
		for _, c := range v.Clusters {
			if (c.ID == "b" || c.ID == "c") && len(c.Checkpoints) > 0 {
				polled++
			}
		}
		return polled == 2
	})
}

// join sends the same replicate configuration (source -> targets) to
// every cluster, as a deployment does.
func (r *rig) join(source string, targets ...string) {
	r.t.Helper()
	testproc.Join(r.t, func(id string) string { return r.sims[id].Addr }, pchannels, source, targets...)
}

func (r *rig) waitTopology(what string, d time.Duration, cond func(s *topology.Snapshot) bool) *topology.Snapshot {
	r.t.Helper()
	m := r.app.Topology()
	return testutil.WaitPublished(r.t, m, d, what, cond, func(*topology.Snapshot) string {
		v, _ := json.MarshalIndent(m.View(), "", "  ")
		return "topology:\n" + string(v)
	})
}

// setup creates, indexes and loads the collection through the proxy and
// waits until every alternative can serve it.
func (r *rig) setup() {
	r.t.Helper()
	c := dialProxy(r.t, r.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.CreateCollection(ctx); err != nil {
		r.t.Fatal(err)
	}
	d, err := c.RPC.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{CollectionName: collName})
	testproc.MustOK(r.t, "DescribeCollection", d.GetStatus(), err)
	pch := d.GetPhysicalChannelNames()
	if len(pch) != 1 {
		r.t.Fatalf("physical channels %v", pch)
	}
	i := strings.LastIndex(pch[0], "_")
	r.pch, err = strconv.Atoi(pch[0][i+1:])
	if err != nil {
		r.t.Fatalf("physical channel %q: %v", pch[0], err)
	}
	for _, id := range []string{"b", "c"} {
		dc := r.direct(id)
		var lastErr error
		testutil.EventuallyOr(r.t, 15*time.Second, id+" serving the collection", func() bool {
			_, lastErr = dc.Keys(commonpb.ConsistencyLevel_Eventually, 1)
			return lastErr == nil
		}, func() string { return fmt.Sprintf("%v\nsimulator status:\n%s", lastErr, r.simStatus()) })
	}
}

// simStatus fetches every simulator's own status (role, checkpoints) for
// failure messages.
func (r *rig) simStatus() string {
	var b strings.Builder
	for _, id := range r.ids {
		resp, err := http.Get("http://" + r.sims[id].Ctl + "/sim/" + id + "/status")
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", id, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(&b, "%s: %s\n", id, body)
	}
	return b.String()
}

// lastChange waits until the arbiter has recorded a leader change to a
// cluster (the new leader's snapshot is published just before).
func (r *rig) lastChange(to string) *topology.Change {
	r.t.Helper()
	var ch *topology.Change
	testutil.Eventually(r.t, 10*time.Second, "the leader change to "+to+" recorded", func() bool {
		ch = r.app.Arbiter().Status().LastChange
		return ch != nil && ch.To == to
	})
	return ch
}

// direct is a client of one cluster itself, bypassing the proxy.
func (r *rig) direct(id string) *client { return dialProxy(r.t, r.sims[id].Addr) }

// checkpoint reads, on cluster id, how far it replicated the source's
// pchannel the collection lives on.
func (r *rig) checkpoint(id, source string) (uint64, error) {
	c := r.direct(id)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := c.RPC.GetReplicateInfo(ctx, &milvuspb.GetReplicateInfoRequest{SourceClusterId: source, TargetPchannel: sim.PChannelName(id, r.pch)})
	if err != nil {
		return 0, err
	}
	return res.GetCheckpoint().GetTimeTick(), nil
}

// adminGet fetches an admin endpoint.
func (r *rig) adminGet(path string) (int, []byte) {
	r.t.Helper()
	resp, err := http.Get("http://" + r.admin + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// adminPost posts an action and decodes the answer.
func (r *rig) adminPost(path, to string) (int, admin.Result, admin.ErrorBody) {
	r.t.Helper()
	resp, err := http.Post("http://"+r.admin+path, "application/json", strings.NewReader(fmt.Sprintf(`{"to":%q}`, to)))
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var res admin.Result
	var eb admin.ErrorBody
	dec := json.NewDecoder(resp.Body)
	if resp.StatusCode == http.StatusOK {
		_ = dec.Decode(&res)
	} else {
		_ = dec.Decode(&eb)
	}
	return resp.StatusCode, res, eb
}

// view fetches /api/v1/topology.
func (r *rig) view() admin.View {
	r.t.Helper()
	code, b := r.adminGet("/api/v1/topology")
	if code != http.StatusOK {
		r.t.Fatalf("/api/v1/topology: %d %s", code, b)
	}
	var v admin.View
	if err := json.Unmarshal(b, &v); err != nil {
		r.t.Fatal(err)
	}
	return v
}

// client is the suites' raw Milvus client (test/testproc) on collName.
type client = testproc.Client

func dialProxy(t testing.TB, addr string) *client { return testproc.Dial(t, addr, collName) }

// presence asks a cluster directly which keys it holds, and how often.
func (r *rig) presence(id string, pks []int64) map[int64]int {
	r.t.Helper()
	c := r.direct(id)
	out, err := c.Presence(commonpb.ConsistencyLevel_Strong, pks)
	if err != nil {
		r.t.Fatalf("reading keys on %s: %v", id, err)
	}
	return out
}
