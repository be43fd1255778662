package sim

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
)

func TestControlHandler(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "ctl"})
	srv := httptest.NewServer(ControlHandler(func(id string) (*Cluster, bool) { return c, id == c.ID() }))
	defer srv.Close()
	do := func(method, path string) int {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, tc := range []struct {
		method, path string
		want         int
		check        func() bool
	}{
		{"POST", "/sim/ctl/replication/pause", 200, func() bool { p, _, _, _ := c.faults.get(); return p }},
		{"POST", "/sim/ctl/replication/resume", 200, func() bool { p, _, _, _ := c.faults.get(); return !p }},
		{"POST", "/sim/ctl/replication/delay?d=250ms", 200, func() bool { _, d, _, _ := c.faults.get(); return d == 250*time.Millisecond }},
		{"POST", "/sim/ctl/replication/delay?d=0s", 200, func() bool { _, d, _, _ := c.faults.get(); return d == 0 }},
		{"POST", "/sim/ctl/stream/drop", 200, nil},
		{"GET", "/sim/ctl/status", 200, nil},
		{"POST", "/sim/nope/replication/pause", 404, nil},
		{"POST", "/sim/ctl/replication/delay?d=soon", 400, nil},
		{"POST", "/sim/ctl/replication/delay?d=-1s", 400, nil},
		{"POST", "/sim/ctl/replication/delay", 400, nil},
		{"GET", "/sim/ctl/replication/pause", 405, nil},
		{"PUT", "/sim/ctl/stream/drop", 405, nil},
	} {
		if got := do(tc.method, tc.path); got != tc.want {
			t.Fatalf("%s %s: %d, want %d", tc.method, tc.path, got, tc.want)
		}
		if tc.check != nil && !tc.check() {
			t.Fatalf("%s %s: no effect", tc.method, tc.path)
		}
	}
}

// TestFleetCrashRestart: through the fleet's controls a cluster crashes
// (its port stops answering, its controls answer 409, its status "down"),
// comes back on the same address with every acknowledged write, and after
// a crash with wipe comes back empty.
func TestFleetCrashRestart(t *testing.T) {
	f := NewFleet()
	t.Cleanup(f.Stop)
	a, err := f.Start(context.Background(), Options{ClusterID: "a", DataDir: t.TempDir(), TimeTickInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := a.Addr()
	createCollection(t, rawClient(t, a), "kept", 4, 1, commonpb.ConsistencyLevel_Strong, "L2")
	insertRange(t, rawClient(t, a), "kept", 1, 25)
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	do := func(method, path string, want int) string {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, res.StatusCode, b, want)
		}
		return string(b)
	}
	do("POST", "/sim/a/crash", 200)
	if _, ok := f.Cluster("a"); ok {
		t.Fatal("a crashed cluster is still listed as running")
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after the crash", addr)
	}
	if body := do("GET", "/sim/a/status", 200); !strings.Contains(body, `"role":"down"`) {
		t.Fatalf("status of a crashed cluster: %s", body)
	}
	if body := do("POST", "/sim/a/replication/pause", 409); !strings.Contains(body, "restart") {
		t.Fatalf("a control of a crashed cluster: %s", body)
	}
	do("POST", "/sim/a/crash", 409) // already down
	do("POST", "/sim/zz/crash", 404)
	do("POST", "/sim/zz/restart", 404)
	do("POST", "/sim/a/crash?wipe=maybe", 400)

	do("POST", "/sim/a/restart", 200)
	a2, ok := f.Cluster("a")
	if !ok || a2.Addr() != addr {
		t.Fatalf("restarted on %v, want %s", a2, addr)
	}
	if n := count(t, rawClient(t, a2), "kept", commonpb.ConsistencyLevel_Strong, 0); n != 25 {
		t.Fatalf("after the restart: %d rows, want 25", n)
	}

	do("POST", "/sim/a/crash?wipe=true", 200)
	do("POST", "/sim/a/restart", 200)
	a3, _ := f.Cluster("a")
	has := resp(t)(rawClient(t, a3).HasCollection(tctx(t), &milvuspb.HasCollectionRequest{CollectionName: "kept"})).(*milvuspb.BoolResponse)
	if has.GetValue() {
		t.Fatal("a wiped cluster came back with its collection")
	}
	if got := f.Clusters(); len(got) != 1 || got[0] != a3 {
		t.Fatalf("running clusters %v", got)
	}
}
