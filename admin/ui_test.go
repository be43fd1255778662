package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
)

// TestHistoryRing: the sampler keeps the last window/interval samples,
// oldest first, turns counters into samples unchanged, and records each
// leader change once however many samples see it.
func TestHistoryRing(t *testing.T) {
	f := &fakeController{}
	s := newSampler(f, time.Second, 3*time.Second)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	change := func(epoch uint64, to string) *Change {
		return &Change{Kind: "switchover", From: "a", To: to, Epoch: epoch, At: t0.Add(time.Duration(epoch) * time.Second), Result: "ok"}
	}
	views := []View{
		{Leader: "a", Epoch: 0},
		{Leader: "a", Epoch: 0, Clusters: []ClusterView{{ID: "b", Role: "alternative", LagSeconds: 0.2, LagKnown: true, Reads: 5}}},
		{Leader: "b", Epoch: 1, LastChange: change(1, "b"), Clusters: []ClusterView{{ID: "b", Role: "leader", Reads: 9, Served: 20}}},
		{Leader: "b", Epoch: 1, LastChange: change(1, "b")},
		{Leader: "c", Epoch: 2, LastChange: change(2, "c"), FailingOver: true},
	}
	for i, v := range views {
		f.mu.Lock()
		f.view = v
		f.mu.Unlock()
		s.sample(t0.Add(time.Duration(i) * time.Second))
		h := s.history()
		if want := min(i+1, 3); len(h.Samples) != want {
			t.Fatalf("after %d samples: %d kept, want %d", i+1, len(h.Samples), want)
		}
	}
	h := s.history()
	if h.IntervalSeconds != 1 || h.WindowSeconds != 3 {
		t.Errorf("interval %v window %v", h.IntervalSeconds, h.WindowSeconds)
	}
	var epochs []uint64
	for i, smp := range h.Samples {
		epochs = append(epochs, smp.Epoch)
		if want := t0.Add(time.Duration(i+2) * time.Second); !smp.At.Equal(want) {
			t.Errorf("sample %d at %v, want %v (oldest first)", i, smp.At, want)
		}
	}
	if len(epochs) != 3 || epochs[0] != 1 || epochs[1] != 1 || epochs[2] != 2 {
		t.Errorf("epochs %v, want [1 1 2]", epochs)
	}
	if c := h.Samples[0].Clusters; len(c) != 1 || c[0].Reads != 9 || c[0].Served != 20 || c[0].Role != "leader" {
		t.Errorf("cluster sample %+v", c)
	}
	if !h.Samples[2].FailingOver || h.Samples[2].Leader != "c" {
		t.Errorf("last sample %+v", h.Samples[2])
	}
	if len(h.Changes) != 2 || h.Changes[0].To != "b" || h.Changes[1].To != "c" {
		t.Errorf("changes %+v, want a->b then a->c, once each", h.Changes)
	}
}

// TestHistoryEndpoint: Serve starts the sampler, /api/v1/history serves
// its samples, and Shutdown stops it (no sample after).
func TestHistoryEndpoint(t *testing.T) {
	f := &fakeController{ready: true, view: View{Leader: "a", Clusters: []ClusterView{{ID: "a", Role: "leader", Healthy: true}}}}
	s := New(Options{Controller: f, Logger: slog.New(slog.DiscardHandler), HistoryInterval: 20 * time.Millisecond, HistoryWindow: time.Second})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	url := "http://" + lis.Addr().String() + "/api/v1/history"
	var h History
	testutil.EventuallyWhy(t, 20*time.Second, "3 history samples", func() (bool, string) {
		code, body := do(t, "GET", url, "")
		if code != http.StatusOK {
			t.Fatalf("GET history: %d %s", code, body)
		}
		h = History{}
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			t.Fatalf("history JSON: %v\n%s", err, body)
		}
		return len(h.Samples) >= 3, fmt.Sprintf("%d samples", len(h.Samples))
	})
	if h.Samples[0].Leader != "a" || len(h.Samples[0].Clusters) != 1 || h.WindowSeconds != 1 {
		t.Errorf("history %+v", h)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n := len(s.hist.history().Samples)
	time.Sleep(100 * time.Millisecond)
	if m := len(s.hist.history().Samples); m != n {
		t.Errorf("sampling went on after Shutdown: %d -> %d samples", n, m)
	}
}

// TestHistoryWithoutServe: a server that never served shuts down cleanly
// and answers an empty history, not null.
func TestHistoryWithoutServe(t *testing.T) {
	s, ts := newTest(t, &fakeController{})
	code, body := do(t, "GET", ts.URL+"/api/v1/history", "")
	if code != http.StatusOK || !strings.Contains(body, `"samples": []`) || !strings.Contains(body, `"changes": []`) {
		t.Errorf("history: %d %s", code, body)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestUIPage: /ui is one self-contained HTML page: no external scripts,
// styles, fonts or images (the admin port often has no internet), a CSP
// that forbids them, and it reads only endpoints this server has.
func TestUIPage(t *testing.T) {
	_, ts := newTest(t, &fakeController{ready: true})
	resp, err := http.Get(ts.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	page := string(b)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /ui: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:`).FindString(page); m != "" {
		t.Errorf("the page loads an external asset: %q", m)
	}
	for _, ref := range regexp.MustCompile(`fetch\("([^"]+)"`).FindAllStringSubmatch(page, -1) {
		code, body := do(t, "GET", ts.URL+"/"+ref[1], "")
		if code != http.StatusOK {
			t.Errorf("the page fetches %s: %d %s", ref[1], code, body)
		}
	}
	for _, want := range []string{"setInterval(refresh", "Leader changes", "Replication lag", "Reads served per second"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if code, body := do(t, "GET", ts.URL+"/", ""); code != 200 || !strings.Contains(body, "GET  /ui") {
		t.Errorf("index does not list /ui: %d %s", code, body)
	}
}

// TestHistoryRecordChange: changes reported by RecordChange are kept even
// when two fall between samples, a change the sampler also sees is kept
// once, and a change still running is not recorded.
func TestHistoryRecordChange(t *testing.T) {
	f := &fakeController{}
	s := New(Options{Controller: f, Logger: slog.New(slog.DiscardHandler)})
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	first := Change{Kind: "switchover", From: "a", To: "b", Epoch: 1, At: t0, Result: "ok"}
	second := Change{Kind: "failover", From: "b", To: "c", Epoch: 2, At: t0.Add(time.Second), Result: "ok"}
	refused := Change{Kind: "switchover", From: "c", To: "c", Epoch: 2, At: t0.Add(2 * time.Second), Result: "refused"}
	s.RecordChange(first)
	s.RecordChange(second)
	s.RecordChange(refused)
	s.RecordChange(Change{Kind: "switchover", From: "c", To: "a", Epoch: 2, At: t0.Add(3 * time.Second)}) // running
	f.mu.Lock()
	f.view = View{Leader: "c", Epoch: 2, LastChange: &refused}
	f.mu.Unlock()
	s.hist.sample(t0.Add(4 * time.Second))
	h := s.hist.history()
	if len(h.Changes) != 3 || h.Changes[0].To != "b" || h.Changes[1].To != "c" || h.Changes[2].Result != "refused" {
		t.Errorf("changes %+v, want a->b, b->c and the refused one, once each", h.Changes)
	}
}
