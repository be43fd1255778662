package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
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
// get 404, a bad duration 400, a wrong method 405.
func ControlHandler(lookup func(id string) (*Cluster, bool)) http.Handler {
	mux := http.NewServeMux()
	with := func(fn func(c *Cluster, w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			c, ok := lookup(id)
			if !ok || c == nil {
				http.Error(w, fmt.Sprintf("unknown cluster %q", id), http.StatusNotFound)
				return
			}
			fn(c, w, r)
		}
	}
	ok := func(w http.ResponseWriter, c *Cluster, what string) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"cluster": c.ID(), "ok": true, "action": what})
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
	mux.HandleFunc("GET /sim/{id}/status", with(func(c *Cluster, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(c.Status())
	}))
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
	st := ClusterStatus{ID: c.id, Addr: c.Addr(), Role: c.Role(), Paused: paused, Delay: delay.String(), Served: map[string]uint64{}}
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
