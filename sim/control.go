package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
)

// ControlHandler serves the fault controls of the clusters lookup finds:
//
//	POST /sim/{id}/replication/pause
//	POST /sim/{id}/replication/resume
//	POST /sim/{id}/replication/delay?d=500ms
//	POST /sim/{id}/stream/drop
//	GET  /sim/{id}/status
//
// {id} is the cluster whose incoming replication is affected. Unknown ids
// get 404, a bad duration 400, a wrong method 405. A Fleet's Handler adds
// crash and restart.
func ControlHandler(lookup func(id string) (*Cluster, bool)) http.Handler {
	mux := http.NewServeMux()
	addControls(mux, func(id string) (*Cluster, error) {
		if c, ok := lookup(id); ok && c != nil {
			return c, nil
		}
		return nil, unknownClusterError(id)
	})
	return mux
}

// unknownClusterError: no cluster has this id (404).
type unknownClusterError string

func (e unknownClusterError) Error() string { return fmt.Sprintf("unknown cluster %q", string(e)) }

// downError: the cluster exists but is crashed (409, except for status).
type downError struct{ id, addr string }

func (e downError) Error() string {
	return fmt.Sprintf("cluster %s is down (crashed); POST /sim/%s/restart brings it back", e.id, e.id)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func lookupError(w http.ResponseWriter, err error) {
	var unknown unknownClusterError
	code := http.StatusConflict
	if errors.As(err, &unknown) {
		code = http.StatusNotFound
	}
	http.Error(w, err.Error(), code)
}

// addControls registers the fault controls of ControlHandler on mux.
func addControls(mux *http.ServeMux, lookup func(id string) (*Cluster, error)) {
	with := func(fn func(c *Cluster, w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, err := lookup(r.PathValue("id"))
			if err != nil {
				lookupError(w, err)
				return
			}
			fn(c, w, r)
		}
	}
	ok := func(w http.ResponseWriter, c *Cluster, what string) {
		writeJSON(w, map[string]any{"cluster": c.ID(), "ok": true, "action": what})
	}
	mux.HandleFunc("POST /sim/{id}/replication/pause", with(func(c *Cluster, w http.ResponseWriter, r *http.Request) {
		c.PauseReplication()
		ok(w, c, "pause")
	}))
	mux.HandleFunc("POST /sim/{id}/replication/resume", with(func(c *Cluster, w http.ResponseWriter, r *http.Request) {
		c.ResumeReplication()
		ok(w, c, "resume")
	}))
	mux.HandleFunc("POST /sim/{id}/replication/delay", with(func(c *Cluster, w http.ResponseWriter, r *http.Request) {
		raw := r.URL.Query().Get("d")
		d, err := time.ParseDuration(raw)
		if err != nil || d < 0 {
			http.Error(w, fmt.Sprintf("bad duration d=%q: want a non-negative Go duration such as 500ms", raw), http.StatusBadRequest)
			return
		}
		c.SetReplicationDelay(d)
		ok(w, c, "delay "+d.String())
	}))
	mux.HandleFunc("POST /sim/{id}/stream/drop", with(func(c *Cluster, w http.ResponseWriter, r *http.Request) {
		c.DropStream()
		ok(w, c, "drop")
	}))
	mux.HandleFunc("GET /sim/{id}/status", func(w http.ResponseWriter, r *http.Request) {
		c, err := lookup(r.PathValue("id"))
		var down downError
		switch {
		case errors.As(err, &down):
			writeJSON(w, ClusterStatus{ID: down.id, Addr: down.addr, Role: "down"})
		case err != nil:
			lookupError(w, err)
		default:
			writeJSON(w, c.Status())
		}
	})
}

// Fleet runs simulated clusters that can be crashed and restarted in
// place, so a user of the demo can take a cluster away as a crash would
// and bring it back. Each member keeps its Options: a restart listens on
// the address the cluster had and, with Options.DataDir, replays its WAL,
// so it comes back with everything it had acknowledged, including what it
// never replicated (Milvus keeps its WAL in durable storage).
type Fleet struct {
	mu      sync.Mutex
	members map[string]*member
	order   []string
}

type member struct {
	opts Options
	addr string
	c    *Cluster // nil while down
}

// NewFleet returns an empty fleet.
func NewFleet() *Fleet { return &Fleet{members: map[string]*member{}} }

// Start starts a cluster and adds it to the fleet.
func (f *Fleet) Start(ctx context.Context, opts Options) (*Cluster, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, dup := f.members[opts.ClusterID]; dup {
		return nil, fmt.Errorf("sim: cluster %q is already in the fleet", opts.ClusterID)
	}
	c, err := Start(ctx, opts)
	if err != nil {
		return nil, err
	}
	f.members[c.ID()] = &member{opts: opts, addr: c.Addr(), c: c}
	f.order = append(f.order, c.ID())
	return c, nil
}

// Cluster returns the running cluster with this id; ok is false for an
// unknown or crashed one.
func (f *Fleet) Cluster(id string) (c *Cluster, ok bool) {
	c, err := f.lookup(id)
	return c, err == nil
}

func (f *Fleet) lookup(id string) (*Cluster, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.members[id]
	switch {
	case !ok:
		return nil, unknownClusterError(id)
	case m.c == nil:
		return nil, downError{id: id, addr: m.addr}
	}
	return m.c, nil
}

// Crash stops a cluster as kill -9 would (Cluster.Crash): it answers
// nothing more and its connections drop. With wipe its data directory
// is emptied too, as when the machine is lost: a restart brings back an
// empty cluster that was never given a replicate configuration, ready to
// be rebuilt.
func (f *Fleet) Crash(id string, wipe bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.members[id]
	if !ok {
		return unknownClusterError(id)
	}
	if m.c == nil && !wipe {
		return fmt.Errorf("cluster %s is already down", id)
	}
	if m.c != nil {
		m.c.Crash()
		m.c = nil
	}
	if wipe && m.opts.DataDir != "" {
		if err := os.RemoveAll(m.opts.DataDir); err != nil {
			return fmt.Errorf("sim: wiping the data of %s: %w", id, err)
		}
	}
	return nil
}

// Restart brings a crashed cluster back on its address. A running one is
// crashed first. Without Options.DataDir it comes back empty.
func (f *Fleet) Restart(ctx context.Context, id string) (*Cluster, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.members[id]
	if !ok {
		return nil, unknownClusterError(id)
	}
	if m.c != nil {
		m.c.Crash()
		m.c = nil
	}
	opts := m.opts
	opts.Listen = m.addr
	// The port was just released; another process may grab it in between.
	var err error
	for range 20 {
		var c *Cluster
		if c, err = Start(ctx, opts); err == nil {
			m.c = c
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("sim: restarting %s: %w", id, err)
}

// Clusters returns the running clusters in the order they were started.
func (f *Fleet) Clusters() []*Cluster {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*Cluster
	for _, id := range f.order {
		if c := f.members[id].c; c != nil {
			out = append(out, c)
		}
	}
	return out
}

// Stop stops every running cluster.
func (f *Fleet) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range f.order {
		if m := f.members[id]; m.c != nil {
			m.c.Stop()
			m.c = nil
		}
	}
}

// Handler serves ControlHandler's controls for the fleet's clusters plus
//
//	POST /sim/{id}/crash[?wipe=true]   stop the cluster as kill -9 would (wipe: and lose its data)
//	POST /sim/{id}/restart             bring it back on its address with its WAL
//
// A control of a crashed cluster gets 409; its status answers role "down".
func (f *Fleet) Handler() http.Handler {
	mux := http.NewServeMux()
	addControls(mux, f.lookup)
	mux.HandleFunc("POST /sim/{id}/crash", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		wipe := false
		if raw := r.URL.Query().Get("wipe"); raw != "" {
			var err error
			if wipe, err = strconv.ParseBool(raw); err != nil {
				http.Error(w, fmt.Sprintf("bad wipe=%q: want true or false", raw), http.StatusBadRequest)
				return
			}
		}
		if err := f.Crash(id, wipe); err != nil {
			lookupError(w, err)
			return
		}
		action := "crash"
		if wipe {
			action = "crash, data wiped"
		}
		writeJSON(w, map[string]any{"cluster": id, "ok": true, "action": action})
	})
	mux.HandleFunc("POST /sim/{id}/restart", func(w http.ResponseWriter, r *http.Request) {
		c, err := f.Restart(r.Context(), r.PathValue("id"))
		var unknown unknownClusterError
		switch {
		case errors.As(err, &unknown):
			lookupError(w, err)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			writeJSON(w, map[string]any{"cluster": c.ID(), "ok": true, "action": "restart", "addr": c.Addr(), "role": c.Role()})
		}
	})
	return mux
}

// ClusterStatus is a snapshot of a cluster for humans and tests.
type ClusterStatus struct {
	ID          string             `json:"id"`
	Addr        string             `json:"addr"`
	Role        string             `json:"role"`
	Source      string             `json:"source,omitempty"`
	Targets     []string           `json:"targets,omitempty"`
	Paused      bool               `json:"paused"`
	Delay       string             `json:"replication_delay"`
	Served      map[string]uint64  `json:"served_ts"`
	Checkpoints []CheckpointStatus `json:"checkpoints,omitempty"`
	// PChannelSources names, per pchannel of a secondary, the cluster it
	// takes replicated messages from.
	PChannelSources map[string]string `json:"pchannel_sources,omitempty"`
	Salvage         map[string]string `json:"salvage,omitempty"`
	// ForcePromotions counts the force promotions this process carried
	// out (a repeated one with the same configuration is not counted).
	ForcePromotions int64 `json:"force_promotions"`
}

// CheckpointStatus is how far replication from one source pchannel got.
type CheckpointStatus struct {
	Source         string `json:"source"`
	SourcePChannel string `json:"source_pchannel"`
	PChannel       string `json:"pchannel"`
	MessageID      int64  `json:"message_id"`
	TimeTick       uint64 `json:"time_tick"`
}

// Status reports the cluster's role, fault settings and checkpoints.
func (c *Cluster) Status() ClusterStatus {
	paused, delay, _, _ := c.faults.get()
	st := ClusterStatus{ID: c.id, Addr: c.Addr(), Role: c.Role(), Paused: paused, Delay: delay.String(), Served: map[string]uint64{},
		ForcePromotions: c.forcePromotions.Load()}
	for _, w := range c.wals {
		st.Served[w.name] = w.served.Load()
	}
	c.repl.mu.Lock()
	st.Source = c.repl.source
	st.Targets = keys(c.repl.targets)
	for p, src := range c.repl.pchSource {
		if src != "" {
			if st.PChannelSources == nil {
				st.PChannelSources = map[string]string{}
			}
			st.PChannelSources[c.pchannels[p]] = src
		}
	}
	for k, ck := range c.repl.ckpts {
		st.Checkpoints = append(st.Checkpoints, CheckpointStatus{Source: k.src, SourcePChannel: ck.srcPch, PChannel: c.pchannels[k.p], MessageID: ck.msgID, TimeTick: ck.ts})
	}
	for p, sc := range c.repl.salvage {
		if st.Salvage == nil {
			st.Salvage = map[string]string{}
		}
		st.Salvage[c.pchannels[p]] = formatSalvage(sc)
	}
	c.repl.mu.Unlock()
	sort.Strings(st.Targets)
	sort.Slice(st.Checkpoints, func(i, j int) bool {
		a, b := st.Checkpoints[i], st.Checkpoints[j]
		if a.Source != b.Source {
			return a.Source < b.Source
		}
		return a.PChannel < b.PChannel
	})
	return st
}

// Config builds the replication configuration entry describing c (uri, token
// and pchannels), as a ReplicateConfiguration lists its clusters.
func (c *Cluster) Config() *commonpb.MilvusCluster {
	return &commonpb.MilvusCluster{
		ClusterId:       c.id,
		ConnectionParam: &commonpb.ConnectionParam{Uri: c.Addr(), Token: c.tokenFor()},
		Pchannels:       c.PChannels(),
	}
}

// ReplicationConfig builds the configuration for source -> each target.
func ReplicationConfig(source *Cluster, targets ...*Cluster) *commonpb.ReplicateConfiguration {
	cfg := &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{source.Config()}}
	for _, t := range targets {
		cfg.Clusters = append(cfg.Clusters, t.Config())
		cfg.CrossClusterTopology = append(cfg.CrossClusterTopology, &commonpb.CrossClusterTopology{SourceClusterId: source.ID(), TargetClusterId: t.ID()})
	}
	return cfg
}

// JoinReplication joins source -> each target: it builds the configuration
// and sends the same UpdateReplicateConfiguration to every cluster over gRPC,
// concurrently, as a real deployment does, and waits for every answer.
func JoinReplication(ctx context.Context, source *Cluster, targets ...*Cluster) error {
	if source == nil || len(targets) == 0 {
		return errors.New("sim: JoinReplication needs a source and at least one target")
	}
	cfg := ReplicationConfig(source, targets...)
	all := append([]*Cluster{source}, targets...)
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, c := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = UpdateReplicateConfiguration(ctx, c.Addr(), c.tokenFor(), cfg, false)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("sim: update replicate configuration on %s: %w", all[i].ID(), err)
		}
	}
	return nil
}

// UpdateReplicateConfiguration sends one UpdateReplicateConfiguration to the
// Milvus-API endpoint addr and turns a Milvus error status into an error.
func UpdateReplicateConfiguration(ctx context.Context, addr, token string, cfg *commonpb.ReplicateConfiguration, force bool) error {
	conn, auth, err := dialMilvus(addr, token)
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := milvuspb.NewMilvusServiceClient(conn).UpdateReplicateConfiguration(auth(ctx),
		&milvuspb.UpdateReplicateConfigurationRequest{ReplicateConfiguration: cfg, ForcePromote: force})
	if err != nil {
		return err
	}
	if st.GetCode() != 0 || st.GetErrorCode() != commonpb.ErrorCode_Success {
		return fmt.Errorf("milvus error %d: %s", st.GetCode(), st.GetReason())
	}
	return nil
}
