// Package admin is the proxy's admin HTTP server: health and readiness for
// load balancers and orchestrators, Prometheus metrics, the topology and
// its recent history, a status page for people (/ui), and the switchover
// and failover actions. It is meant for a private address (default
// 127.0.0.1:9091): anyone who can reach it can move the leader.
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
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures New.
type Options struct {
	// Controller answers topology, readiness and actions. Required.
	Controller Controller
	// Metrics serves GET /metrics (telemetry.MetricsHandler). When nil,
	// /metrics answers 404.
	Metrics http.Handler
	// Logger logs actions and serving errors; default slog.Default().
	Logger *slog.Logger
	// ActionTimeout bounds one switchover or failover; default 2m. The
	// action does not stop when the HTTP client goes away: abandoning a
	// leader change half way is worse than finishing it.
	ActionTimeout time.Duration
	// HistoryInterval is how often the topology is sampled for
	// /api/v1/history and the status page; default 2s.
	HistoryInterval time.Duration
	// HistoryWindow is how much history is kept; default 10m.
	HistoryWindow time.Duration
	// Pprof serves Go's runtime profiles (net/http/pprof) under
	// /debug/pprof/ (config admin_pprof). Off by default: a CPU profile
	// or execution trace costs the proxy while it runs, and the profiles
	// show the process's command line and code layout.
	Pprof bool
}

// Server is the admin HTTP server.
type Server struct {
	ctl     Controller
	log     *slog.Logger
	timeout time.Duration
	pprof   bool
	mux     *http.ServeMux
	srv     *http.Server
	hist    *sampler

	draining atomic.Bool
	shutdown sync.Once
}

// New builds a Server; call Serve to start it.
func New(o Options) *Server {
	if o.Controller == nil {
		panic("admin.New: Options.Controller is nil")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ActionTimeout <= 0 {
		o.ActionTimeout = 2 * time.Minute
	}
	if o.HistoryInterval <= 0 {
		o.HistoryInterval = 2 * time.Second
	}
	if o.HistoryWindow <= 0 {
		o.HistoryWindow = 10 * time.Minute
	}
	s := &Server{
		ctl:     o.Controller,
		log:     o.Logger,
		timeout: o.ActionTimeout,
		mux:     http.NewServeMux(),
		hist:    newSampler(o.Controller, o.HistoryInterval, o.HistoryWindow),
	}
	s.mux.HandleFunc("GET /{$}", s.index)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if o.Metrics != nil {
		s.mux.Handle("GET /metrics", o.Metrics)
	}
	s.mux.HandleFunc("GET /api/v1/topology", s.topology)
	s.mux.HandleFunc("GET /api/v1/history", s.historyHandler)
	s.mux.HandleFunc("GET /ui", s.ui)
	s.mux.HandleFunc("POST /api/v1/switchover", s.actionHandler("switchover", s.ctl.Switchover))
	s.mux.HandleFunc("POST /api/v1/failover", s.actionHandler("failover", s.ctl.Failover))
	if at, ok := o.Controller.(Attacher); ok {
		s.mux.HandleFunc("POST /api/v1/attach", s.actionHandler("attach", at.Attach))
	}
	if o.Pprof {
		s.pprof = true
		// Index serves every named profile (heap, goroutine, allocs,
		// block, mutex, threadcreate) under /debug/pprof/NAME.
		s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
		// No WriteTimeout: a switchover answer may take as long as the
		// switchover.
	}
	return s
}

// Handle mounts an extra handler, e.g. the simulator's fault controls on
// "/sim/" in demo. Patterns follow http.ServeMux; one that conflicts with
// the admin's own panics, as ServeMux does.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the server's handler (tests, or embedding in another
// server).
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves on lis until Shutdown; it then returns nil. The history
// sampler runs from the first Serve to Shutdown.
func (s *Server) Serve(lis net.Listener) error {
	s.hist.run()
	if err := s.srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve %s: %w", lis.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting connections and waits, until ctx ends, for
// requests in flight (a running switchover included) to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.shutdown.Do(func() {
		err = s.srv.Shutdown(ctx)
		s.hist.close()
	})
	return err
}

// SetDraining turns /readyz to 503 for good: the first step of a graceful
// stop, so load balancers take the proxy out before it refuses calls.
func (s *Server) SetDraining() {
	if !s.draining.Swap(true) {
		s.log.Info("draining: /readyz now answers 503")
	}
}

// Draining reports whether SetDraining was called.
func (s *Server) Draining() bool { return s.draining.Load() }

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, `milvus-ha-proxy admin
GET  /healthz             200 while the process runs
GET  /readyz              200 while a leader is known and reachable and the proxy is not draining
GET  /metrics             Prometheus metrics
GET  /ui                  status page: clusters, roles, health, lag and reads over the last minutes, leader changes
GET  /api/v1/topology     clusters, roles, health, lag (JSON; milvus-ha-proxy status prints it)
GET  /api/v1/history      the topology sampled over the last minutes, and leader changes (JSON)
POST /api/v1/switchover   {"to":"ID"}  planned leader change, no data loss
POST /api/v1/failover     {"to":"ID"}  forced promotion
POST /api/v1/attach       {"cluster":"ID"}  attach a rebuilt or new cluster as a target of the leader
`)
	if s.pprof {
		fmt.Fprint(w, `GET  /debug/pprof/         Go runtime profiles (go tool pprof http://ADDR/debug/pprof/profile)
`)
	}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "OK\n")
}

// ready combines the drain state and the controller's answer.
func (s *Server) ready() (bool, string) {
	if s.draining.Load() {
		return false, "draining: the proxy is shutting down"
	}
	ok, reason := s.ctl.Ready()
	if !ok && reason == "" {
		reason = "not ready"
	}
	return ok, reason
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	ok, reason := s.ready()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %s\n", reason)
		return
	}
	io.WriteString(w, "OK\n")
}

func (s *Server) topology(w http.ResponseWriter, r *http.Request) {
	v := s.ctl.Topology(r.Context())
	v.Ready, v.NotReadyReason = s.ready()
	if v.Ready {
		v.NotReadyReason = ""
	}
	v.Draining = s.draining.Load()
	if v.Clusters == nil {
		v.Clusters = []ClusterView{}
	}
	if v.GeneratedAt.IsZero() {
		v.GeneratedAt = time.Now()
	}
	writeJSON(w, http.StatusOK, v)
}

type actionFunc func(ctx context.Context, to string) (Result, error)

// maxBody bounds an action request body; {"to":"..."} needs a few bytes.
const maxBody = 64 << 10

func (s *Server) actionHandler(kind string, do actionFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		field := "to"
		if kind == "attach" {
			field = "cluster"
		}
		to, err := decodeAction(w, r, field)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		// The controller serializes leader changes: one requested while
		// another runs waits for it (a bounded time), or is refused with
		// what is under way.
		s.log.Info(kind+" requested", "to", to, "remote", r.RemoteAddr)
		// Detached from the request: a client that disconnects must not
		// abandon a leader change half way.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.timeout)
		defer cancel()
		start := time.Now()
		res, err := do(ctx, to)
		if err != nil {
			status, code := classify(err)
			s.log.Warn(kind+" failed", "to", to, "code", code, "err", err, "took", time.Since(start))
			msg := err.Error()
			if !strings.HasPrefix(msg, kind) {
				if field == "to" {
					msg = fmt.Sprintf("%s to %s: %s", kind, to, msg)
				} else {
					msg = fmt.Sprintf("%s %s: %s", kind, to, msg)
				}
			}
			writeError(w, status, code, msg)
			return
		}
		if res.Kind == "" {
			res.Kind = kind
		}
		if res.To == "" {
			res.To = to
		}
		if res.TookSeconds == 0 {
			res.TookSeconds = time.Since(start).Seconds()
		}
		s.log.Info(kind+" done", "from", res.From, "to", res.To, "epoch", res.Epoch, "took", time.Since(start))
		writeJSON(w, http.StatusOK, res)
	}
}

func decodeAction(w http.ResponseWriter, r *http.Request, field string) (string, error) {
	want := fmt.Sprintf(`want {"%s":"ID"} where ID is a cluster id`, field)
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	var req map[string]*string
	if err := dec.Decode(&req); err != nil {
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("empty body: %s", want)
		}
		return "", fmt.Errorf("malformed JSON body: %v; %s", err, want)
	}
	if dec.More() {
		return "", fmt.Errorf("malformed JSON body: data after the object; %s", want)
	}
	for k := range req {
		if k != field {
			return "", fmt.Errorf("malformed JSON body: json: unknown field %q; %s", k, want)
		}
	}
	v, ok := req[field]
	if !ok || v == nil {
		return "", fmt.Errorf(`missing "%s": %s`, field, want)
	}
	to := strings.TrimSpace(*v)
	if to == "" {
		return "", fmt.Errorf(`"%s" is empty: %s`, field, want)
	}
	return to, nil
}

func classify(err error) (status int, code string) {
	switch {
	case errors.Is(err, ErrUnknownCluster):
		return http.StatusNotFound, "unknown_cluster"
	case errors.Is(err, ErrRefused):
		return http.StatusConflict, "refused"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout"
	default:
		return http.StatusInternalServerError, "internal"
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg, Code: code})
}
