package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeController is a scripted Controller.
type fakeController struct {
	mu     sync.Mutex
	view   View
	ready  bool
	reason string
	calls  []string // "switchover b"
	// result and err are what actions return; block, when set, is waited
	// on before returning (started is closed first).
	result   Result
	err      error
	block    chan struct{}
	started  chan struct{}
	ctxErr   error         // ctx.Err() seen when the action returned
	returned chan struct{} // closed, when set, as the action returns
}

func (f *fakeController) Topology(context.Context) View {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.view
}

func (f *fakeController) Ready() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready, f.reason
}

func (f *fakeController) act(ctx context.Context, kind, to string) (Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, kind+" "+to)
	block, started := f.block, f.started
	f.mu.Unlock()
	if started != nil {
		close(started)
	}
	if block != nil {
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctxErr = ctx.Err()
	if f.returned != nil {
		close(f.returned)
		f.returned = nil
	}
	return f.result, f.err
}

func (f *fakeController) Switchover(ctx context.Context, to string) (Result, error) {
	return f.act(ctx, "switchover", to)
}

func (f *fakeController) Failover(ctx context.Context, to string) (Result, error) {
	return f.act(ctx, "failover", to)
}

func newTest(t *testing.T, f *fakeController) (*Server, *httptest.Server) {
	t.Helper()
	s := New(Options{
		Controller: f,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, "milvus_ha_proxy_epoch 3\n")
		}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthAndReadiness(t *testing.T) {
	f := &fakeController{ready: true}
	s, ts := newTest(t, f)

	if code, body := do(t, "GET", ts.URL+"/healthz", ""); code != 200 || body != "OK\n" {
		t.Errorf("healthz = %d %q", code, body)
	}
	if code, body := do(t, "GET", ts.URL+"/readyz", ""); code != 200 || body != "OK\n" {
		t.Errorf("readyz ready = %d %q", code, body)
	}

	f.mu.Lock()
	f.ready, f.reason = false, "no leader: failover under way"
	f.mu.Unlock()
	if code, body := do(t, "GET", ts.URL+"/readyz", ""); code != 503 || !strings.Contains(body, "no leader: failover under way") {
		t.Errorf("readyz without leader = %d %q", code, body)
	}

	f.mu.Lock()
	f.ready = true
	f.mu.Unlock()
	s.SetDraining()
	if code, body := do(t, "GET", ts.URL+"/readyz", ""); code != 503 || !strings.Contains(body, "draining") {
		t.Errorf("readyz draining = %d %q", code, body)
	}
	// Liveness stays up while draining: killing a draining proxy early
	// would cut the calls it is finishing.
	if code, _ := do(t, "GET", ts.URL+"/healthz", ""); code != 200 {
		t.Errorf("healthz while draining = %d", code)
	}
	if !s.Draining() {
		t.Error("Draining() false after SetDraining")
	}
}

func TestMetricsAndIndex(t *testing.T) {
	_, ts := newTest(t, &fakeController{ready: true})
	if code, body := do(t, "GET", ts.URL+"/metrics", ""); code != 200 || body != "milvus_ha_proxy_epoch 3\n" {
		t.Errorf("metrics = %d %q", code, body)
	}
	if code, body := do(t, "GET", ts.URL+"/", ""); code != 200 || !strings.Contains(body, "/api/v1/switchover") {
		t.Errorf("index = %d %q", code, body)
	}
	if code, _ := do(t, "GET", ts.URL+"/nope", ""); code != 404 {
		t.Errorf("unknown path = %d", code)
	}
	// Without a metrics handler /metrics is absent rather than empty.
	s := New(Options{Controller: &fakeController{}})
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("metrics without handler = %d", rec.Code)
	}
}

func TestTopology(t *testing.T) {
	lost := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f := &fakeController{ready: false, reason: "leader a unreachable", view: View{
		Epoch: 2, Leader: "", FailingOver: true, LeaderLostAt: &lost, Discovery: "static", FailoverMode: "auto",
		Clusters: []ClusterView{
			{ID: "a", URI: "127.0.0.1:19531", Role: "leader", Healthy: false, HealthReason: "connection refused", Breaker: "open", Served: 10},
			{ID: "b", URI: "127.0.0.1:19532", Role: "alternative", Healthy: true, Breaker: "closed", LagSeconds: 0.5, LagKnown: true, Checkpoints: []uint64{1 << 50}, Outstanding: 2, Served: 7},
		},
	}}
	_, ts := newTest(t, f)
	resp, err := http.Get(ts.URL + "/api/v1/topology")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("topology = %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	var v View
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if v.Epoch != 2 || !v.FailingOver || !v.LeaderLostAt.Equal(lost) || len(v.Clusters) != 2 ||
		v.Clusters[1].Checkpoints[0] != 1<<50 || v.Clusters[1].LagSeconds != 0.5 || v.Clusters[0].HealthReason != "connection refused" {
		t.Errorf("view = %+v", v)
	}
	// The server fills readiness in.
	if v.Ready || v.NotReadyReason != "leader a unreachable" || v.Draining || v.GeneratedAt.IsZero() {
		t.Errorf("ready=%v reason=%q draining=%v generated=%v", v.Ready, v.NotReadyReason, v.Draining, v.GeneratedAt)
	}

	// An empty topology is still a list, not null.
	f2 := &fakeController{ready: true}
	_, ts2 := newTest(t, f2)
	_, body := do(t, "GET", ts2.URL+"/api/v1/topology", "")
	if !strings.Contains(body, `"clusters": []`) {
		t.Errorf("empty clusters encoded as %s", body)
	}
}

func TestActions(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		body     string
		result   Result
		err      error
		wantCode int
		wantBody []string // substrings
		wantCall string   // "" = controller not called
	}{
		{"switchover ok", "/api/v1/switchover", `{"to":"b"}`, Result{From: "a", Epoch: 3, WritesHeld: 4}, nil,
			200, []string{`"kind": "switchover"`, `"from": "a"`, `"to": "b"`, `"epoch": 3`, `"writes_held": 4`}, "switchover b"},
		{"failover ok", "/api/v1/failover", `{"to": "c"}`, Result{From: "a", Epoch: 4, Quarantined: []string{"b"}, SalvageCheckpoint: []uint64{7}}, nil,
			200, []string{`"kind": "failover"`, `"quarantined": [`, `"salvage_checkpoint": [`}, "failover c"},
		{"malformed json", "/api/v1/switchover", `{"to":`, Result{}, nil, 400, []string{"malformed JSON body", `"code": "bad_request"`}, ""},
		{"not json", "/api/v1/failover", `to=b`, Result{}, nil, 400, []string{"malformed JSON body"}, ""},
		{"empty body", "/api/v1/switchover", ``, Result{}, nil, 400, []string{"empty body"}, ""},
		{"missing to", "/api/v1/switchover", `{}`, Result{}, nil, 400, []string{`missing \"to\"`}, ""},
		{"empty to", "/api/v1/failover", `{"to":"  "}`, Result{}, nil, 400, []string{`\"to\" is empty`}, ""},
		{"to not a string", "/api/v1/failover", `{"to":1}`, Result{}, nil, 400, []string{"malformed JSON body"}, ""},
		{"unknown field", "/api/v1/switchover", `{"too":"b"}`, Result{}, nil, 400, []string{`unknown field \"too\"`}, ""},
		{"trailing data", "/api/v1/switchover", `{"to":"b"} {"to":"c"}`, Result{}, nil, 400, []string{"data after the object"}, ""},
		{"unknown cluster", "/api/v1/switchover", `{"to":"zz"}`, Result{}, fmt.Errorf("cluster %q: %w", "zz", ErrUnknownCluster),
			404, []string{`"code": "unknown_cluster"`, `switchover to zz: cluster \"zz\": unknown cluster`}, "switchover zz"},
		{"refused", "/api/v1/failover", `{"to":"a"}`, Result{}, fmt.Errorf("a is already the leader: %w", ErrRefused),
			409, []string{`"code": "refused"`, "already the leader"}, "failover a"},
		{"timeout", "/api/v1/switchover", `{"to":"b"}`, Result{}, fmt.Errorf("waiting for b to catch up: %w", context.DeadlineExceeded),
			504, []string{`"code": "timeout"`}, "switchover b"},
		{"internal", "/api/v1/switchover", `{"to":"b"}`, Result{}, errors.New("UpdateReplicateConfiguration: boom"),
			500, []string{`"code": "internal"`, "boom"}, "switchover b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeController{ready: true, result: tt.result, err: tt.err}
			_, ts := newTest(t, f)
			code, body := do(t, "POST", ts.URL+tt.path, tt.body)
			if code != tt.wantCode {
				t.Errorf("status = %d, want %d; body %s", code, tt.wantCode, body)
			}
			for _, want := range tt.wantBody {
				if !strings.Contains(body, want) {
					t.Errorf("body lacks %q:\n%s", want, body)
				}
			}
			if code != 200 {
				var eb ErrorBody
				if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error == "" || eb.Code == "" {
					t.Errorf("error body %q is not an ErrorBody: %v", body, err)
				}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			switch {
			case tt.wantCall == "" && len(f.calls) != 0:
				t.Errorf("controller called: %v", f.calls)
			case tt.wantCall != "" && (len(f.calls) != 1 || f.calls[0] != tt.wantCall):
				t.Errorf("calls = %v, want [%s]", f.calls, tt.wantCall)
			}
		})
	}
}

func TestActionMethodNotAllowed(t *testing.T) {
	_, ts := newTest(t, &fakeController{})
	code, _ := do(t, "GET", ts.URL+"/api/v1/switchover", "")
	if code != http.StatusMethodNotAllowed {
		t.Errorf("GET switchover = %d", code)
	}
}

// TestConcurrentActionWaitsInController: while a switchover runs, a
// second leader change is handed to the controller too (it queues changes
// or refuses one with what is under way), and its refusal comes back as
// 409 with the controller's message, said once.
func TestConcurrentActionWaitsInController(t *testing.T) {
	f := &fakeController{ready: true, block: make(chan struct{}), started: make(chan struct{}), result: Result{From: "a"}}
	_, ts := newTest(t, f)
	first := make(chan int)
	go func() {
		code, _ := do(t, "POST", ts.URL+"/api/v1/switchover", `{"to":"b"}`)
		first <- code
	}()
	<-f.started
	f.mu.Lock()
	f.started = nil
	f.err = fmt.Errorf("%w: a switchover to b (step demote) is under way and did not end within 30s", ErrRefused)
	f.mu.Unlock()
	close(f.block)
	code, body := do(t, "POST", ts.URL+"/api/v1/failover", `{"to":"c"}`)
	if code != 409 || !strings.Contains(body, "failover to c: refused: a switchover to b (step demote) is under way") ||
		strings.Count(body, "refused") != 2 { // the message once, the code once
		t.Errorf("second action = %d %s", code, body)
	}
	if code := <-first; code != 200 && code != 409 {
		t.Errorf("first action = %d", code)
	}
	f.mu.Lock()
	calls := slices.Clone(f.calls)
	f.mu.Unlock()
	if len(calls) != 2 {
		t.Errorf("controller calls %v", calls)
	}
}

// TestActionSurvivesClientDisconnect: the operator's curl dying half way
// through a switchover must not cancel the switchover.
func TestActionSurvivesClientDisconnect(t *testing.T) {
	returned := make(chan struct{})
	f := &fakeController{ready: true, block: make(chan struct{}), started: make(chan struct{}), returned: returned}
	_, ts := newTest(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/api/v1/switchover", strings.NewReader(`{"to":"b"}`))
	done := make(chan error)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-f.started
	cancel()
	if err := <-done; err == nil {
		t.Fatal("client request did not fail after cancel")
	}
	close(f.block)
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("action never returned")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctxErr != nil {
		t.Errorf("action context was cancelled with the client: %v", f.ctxErr)
	}
}

func TestMountAndServeShutdown(t *testing.T) {
	s := New(Options{Controller: &fakeController{ready: true}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.Handle("/sim/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "sim:"+r.Method+" "+r.URL.Path)
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	base := "http://" + lis.Addr().String()
	if code, body := do(t, "POST", base+"/sim/b/replication/pause", ""); code != 200 || body != "sim:POST /sim/b/replication/pause" {
		t.Errorf("mounted handler = %d %q", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Shutdown = %v, want nil", err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

// TestPprof: /debug/pprof is absent by default and serves the runtime's
// profiles when Options.Pprof is set.
func TestPprof(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name  string
		pprof bool
		path  string
		code  int
		want  string // in the body
	}{
		{"off: index", false, "/debug/pprof/", 404, ""},
		{"off: profile", false, "/debug/pprof/profile?seconds=1", 404, ""},
		{"off: not listed", false, "/", 200, "/api/v1/failover"},
		{"on: listed", true, "/", 200, "/debug/pprof/"},
		{"on: index", true, "/debug/pprof/", 200, "goroutine"},
		{"on: goroutines", true, "/debug/pprof/goroutine?debug=1", 200, "goroutine profile:"},
		{"on: heap", true, "/debug/pprof/heap?debug=1", 200, "heap profile:"},
		{"on: cmdline", true, "/debug/pprof/cmdline", 200, ""},
		{"on: symbol", true, "/debug/pprof/symbol", 200, "num_symbols"},
		{"on: unknown profile", true, "/debug/pprof/nosuch", 404, "Unknown profile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{Controller: &fakeController{}, Pprof: tc.pprof, Logger: quiet})
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("GET %s = %d %.200q, want %d containing %q", tc.path, rec.Code, rec.Body.String(), tc.code, tc.want)
			}
			if tc.path == "/" && !tc.pprof && strings.Contains(rec.Body.String(), "pprof") {
				t.Errorf("index lists pprof while it is off: %q", rec.Body.String())
			}
		})
	}
	// A CPU profile: a gzipped protobuf after the requested second.
	s := New(Options{Controller: &fakeController{}, Pprof: true, Logger: quiet})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	code, body := do(t, "GET", ts.URL+"/debug/pprof/profile?seconds=1", "")
	if code != 200 || len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
		t.Errorf("CPU profile = %d, %d bytes; want 200 and gzip data", code, len(body))
	}
}
