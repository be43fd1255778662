package sim

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
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
