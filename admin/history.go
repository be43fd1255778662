package admin

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// History is the JSON of GET /api/v1/history: the topology sampled every
// IntervalSeconds over the last WindowSeconds, oldest first, and the
// leader changes seen meanwhile. The status page (/ui) draws it; a
// Prometheus server is the place for anything longer.
type History struct {
	IntervalSeconds float64  `json:"interval_seconds"`
	WindowSeconds   float64  `json:"window_seconds"`
	Samples         []Sample `json:"samples"`
	// Changes are the leader changes seen since the proxy started, the
	// last maxChanges of them, oldest first.
	Changes []Change `json:"changes"`
}

// Sample is the topology at one instant, reduced to what is plotted.
type Sample struct {
	At          time.Time       `json:"at"`
	Leader      string          `json:"leader"`
	Epoch       uint64          `json:"epoch"`
	FailingOver bool            `json:"failing_over"`
	Clusters    []ClusterSample `json:"clusters"`
}

// ClusterSample is one cluster in a Sample. Served and Reads are counters
// since the proxy started: rates are differences between samples.
type ClusterSample struct {
	ID          string  `json:"id"`
	Role        string  `json:"role"`
	Healthy     bool    `json:"healthy"`
	Quarantined bool    `json:"quarantined"`
	LagSeconds  float64 `json:"lag_seconds"`
	LagKnown    bool    `json:"lag_known"`
	Served      int64   `json:"served"`
	Reads       int64   `json:"reads"`
}

// maxChanges bounds the leader changes History keeps.
const maxChanges = 50

// sampler keeps the last window of topology samples in a ring. It runs
// from Serve to Shutdown.
type sampler struct {
	ctl      Controller
	interval time.Duration
	window   time.Duration

	mu      sync.Mutex
	ring    []Sample // capacity window/interval; next is the oldest once full
	next    int
	full    bool
	changes []Change

	start, stop sync.Once
	done        chan struct{}
	stopped     chan struct{}
}

func newSampler(ctl Controller, interval, window time.Duration) *sampler {
	n := int(window / interval)
	if n < 2 {
		n = 2
	}
	return &sampler{
		ctl: ctl, interval: interval, window: window,
		ring: make([]Sample, n), done: make(chan struct{}), stopped: make(chan struct{}),
	}
}

// run samples until close; it is started once, by Server.Serve.
func (s *sampler) run() {
	s.start.Do(func() {
		go func() {
			defer close(s.stopped)
			t := time.NewTicker(s.interval)
			defer t.Stop()
			s.sample(time.Now())
			for {
				select {
				case <-s.done:
					return
				case now := <-t.C:
					s.sample(now)
				}
			}
		}()
	})
}

// close stops the sampling goroutine and waits for it.
func (s *sampler) close() {
	s.stop.Do(func() {
		close(s.done)
		started := true
		s.start.Do(func() { started = false; close(s.stopped) })
		if started {
			<-s.stopped
		}
	})
}

// sample records the topology as it is now. Controller.Topology does not
// block on the network, so neither does this.
func (s *sampler) sample(now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), s.interval)
	v := s.ctl.Topology(ctx)
	cancel()
	smp := Sample{At: now, Leader: v.Leader, Epoch: v.Epoch, FailingOver: v.FailingOver,
		Clusters: make([]ClusterSample, 0, len(v.Clusters))}
	for _, c := range v.Clusters {
		smp.Clusters = append(smp.Clusters, ClusterSample{
			ID: c.ID, Role: c.Role, Healthy: c.Healthy, Quarantined: c.Quarantined,
			LagSeconds: c.LagSeconds, LagKnown: c.LagKnown, Served: c.Served, Reads: c.Reads,
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ring[s.next] = smp
	s.next = (s.next + 1) % len(s.ring)
	s.full = s.full || s.next == 0
	if lc := v.LastChange; lc != nil {
		s.addChangeLocked(*lc)
	}
}

// addChange records a finished leader change (RecordChange, or the last
// change a sample saw), once.
func (s *sampler) addChange(c Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addChangeLocked(c)
}

func (s *sampler) addChangeLocked(c Change) {
	if c.Result == "" {
		return // still running: recorded when it ends
	}
	for i := len(s.changes) - 1; i >= 0 && i >= len(s.changes)-4; i-- {
		if sameChange(s.changes[i], c) {
			return
		}
	}
	s.changes = append(s.changes, c)
	if len(s.changes) > maxChanges {
		s.changes = append(s.changes[:0:0], s.changes[len(s.changes)-maxChanges:]...)
	}
}

func sameChange(a, b Change) bool {
	return a.Kind == b.Kind && a.Epoch == b.Epoch && a.At.Equal(b.At) && a.To == b.To && a.Result == b.Result
}

// history returns a copy of the samples, oldest first.
func (s *sampler) history() History {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := History{
		IntervalSeconds: s.interval.Seconds(),
		WindowSeconds:   s.window.Seconds(),
		Changes:         append([]Change{}, s.changes...),
	}
	if s.full {
		h.Samples = append(h.Samples, s.ring[s.next:]...)
	}
	h.Samples = append(h.Samples, s.ring[:s.next]...)
	if h.Samples == nil {
		h.Samples = []Sample{}
	}
	return h
}

// RecordChange adds a finished leader change (or a refused or failed
// attempt) to the history. The sampler also picks up the topology's last
// change, but two changes between samples would show it only the second.
func (s *Server) RecordChange(c Change) { s.hist.addChange(c) }

func (s *Server) historyHandler(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.hist.history())
}
