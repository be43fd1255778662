package topology

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/protobuf/proto"
)

// The Milvus replication calls a leader change makes, each bounded by the
// caller's context. Every error says which cluster and which call.

// replicateConfig reads a cluster's replicate configuration.
func (m *Manager) replicateConfig(ctx context.Context, mb *member) (*commonpb.ReplicateConfiguration, error) {
	resp, err := mb.rpc.GetReplicateConfiguration(mb.outgoing(ctx, ""), &milvuspb.GetReplicateConfigurationRequest{})
	if err == nil {
		err = statusErr("GetReplicateConfiguration", mb.id, resp.GetStatus())
	}
	if err != nil {
		return nil, fmt.Errorf("reading the replicate configuration of %s: %w", mb.id, err)
	}
	if resp.GetConfiguration() == nil {
		return &commonpb.ReplicateConfiguration{}, nil
	}
	return resp.GetConfiguration(), nil
}

// updateReplicateConfig sends UpdateReplicateConfiguration. A primary
// broadcasts the configuration through its WAL and answers at once; a
// secondary answers once the message has reached it through CDC, so the
// call can block as long as replication does.
func (m *Manager) updateReplicateConfig(ctx context.Context, mb *member, cfg *commonpb.ReplicateConfiguration, force bool) error {
	st, err := mb.rpc.UpdateReplicateConfiguration(mb.outgoing(ctx, ""), &milvuspb.UpdateReplicateConfigurationRequest{
		ReplicateConfiguration: m.withCredentials(cfg), ForcePromote: force,
	})
	if err == nil {
		err = statusErr("UpdateReplicateConfiguration", mb.id, st)
	}
	if err != nil {
		what := "UpdateReplicateConfiguration"
		if force {
			what += "(force_promote)"
		}
		return fmt.Errorf("%s on %s: %w", what, mb.id, err)
	}
	return nil
}

// withCredentials fills in the connection token of every cluster whose
// entry has none with the proxy's own token for that cluster. Milvus
// never returns tokens (GetReplicateConfiguration sanitizes them), so a
// configuration rebuilt from one would otherwise leave the source's CDC
// unable to log in to its targets. Deterministic: the same input always
// yields the same request, so a retried change sends identical ones.
func (m *Manager) withCredentials(cfg *commonpb.ReplicateConfiguration) *commonpb.ReplicateConfiguration {
	out := proto.Clone(cfg).(*commonpb.ReplicateConfiguration)
	for _, c := range out.GetClusters() {
		tok := m.tokens[c.GetClusterId()]
		if tok == "" || c.GetConnectionParam().GetToken() != "" {
			continue
		}
		if c.ConnectionParam == nil {
			c.ConnectionParam = &commonpb.ConnectionParam{}
		}
		c.ConnectionParam.Token = tok
	}
	return out
}

// sameConfig compares configurations as Milvus returns them: tokens left
// out.
func sameConfig(a, b *commonpb.ReplicateConfiguration) bool {
	strip := func(c *commonpb.ReplicateConfiguration) *commonpb.ReplicateConfiguration {
		c = proto.Clone(c).(*commonpb.ReplicateConfiguration)
		for _, e := range c.GetClusters() {
			if e.GetConnectionParam() != nil {
				e.ConnectionParam.Token = ""
			}
		}
		return c
	}
	return proto.Equal(strip(a), strip(b))
}

// replicateInfo reads, on cluster mb, how far it replicated each of the
// source's n pchannels (checkpoint) and, after a force promotion, where it
// stood when promoted (salvage). A nil entry means none.
func (m *Manager) replicateInfo(ctx context.Context, mb *member, source string, ownPChannels []string, n int) (cps, salvage []*commonpb.ReplicateCheckpoint, err error) {
	cps = make([]*commonpb.ReplicateCheckpoint, n)
	salvage = make([]*commonpb.ReplicateCheckpoint, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			pch := pchannelAt(mb.id, ownPChannels, i)
			resp, err := mb.rpc.GetReplicateInfo(mb.outgoing(ctx, ""), &milvuspb.GetReplicateInfoRequest{
				SourceClusterId: source, TargetPchannel: pch,
			})
			if err != nil {
				errs[i] = fmt.Errorf("GetReplicateInfo(%s, %s) on %s: %w", source, pch, mb.id, err)
				return
			}
			cps[i], salvage[i] = resp.GetCheckpoint(), resp.GetSalvageCheckpoint()
		})
	}
	wg.Wait()
	return cps, salvage, errors.Join(errs...)
}

// pchannelAt names cluster id's i-th pchannel: from its configuration,
// else by Milvus's naming rule.
func pchannelAt(id string, own []string, i int) string {
	if i < len(own) && own[i] != "" {
		return own[i]
	}
	return fmt.Sprintf("%s-rootcoord-dml_%d", id, i)
}

// ticks returns the time ticks of checkpoints (0 for none).
func ticks(cps []*commonpb.ReplicateCheckpoint) []uint64 {
	out := make([]uint64, len(cps))
	for i, c := range cps {
		out[i] = c.GetTimeTick()
	}
	return out
}

// entryOf returns a copy of cluster id's entry in cfg, or nil.
func entryOf(cfg *commonpb.ReplicateConfiguration, id string) *commonpb.MilvusCluster {
	for _, c := range cfg.GetClusters() {
		if c.GetClusterId() == id {
			return proto.Clone(c).(*commonpb.MilvusCluster)
		}
	}
	return nil
}

// star is the configuration with source replicating to every
// target, clusters listed source first.
func star(source *commonpb.MilvusCluster, targets ...*commonpb.MilvusCluster) *commonpb.ReplicateConfiguration {
	cfg := &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{source}}
	for _, t := range targets {
		cfg.Clusters = append(cfg.Clusters, t)
		cfg.CrossClusterTopology = append(cfg.CrossClusterTopology, &commonpb.CrossClusterTopology{
			SourceClusterId: source.GetClusterId(), TargetClusterId: t.GetClusterId(),
		})
	}
	return cfg
}

// reverseConfig keeps cfg's clusters, in their order, and makes source
// the source of every other one (a switchover's configuration).
func reverseConfig(cfg *commonpb.ReplicateConfiguration, source string) *commonpb.ReplicateConfiguration {
	out := &commonpb.ReplicateConfiguration{}
	for _, c := range cfg.GetClusters() {
		out.Clusters = append(out.Clusters, proto.Clone(c).(*commonpb.MilvusCluster))
	}
	for _, c := range cfg.GetClusters() {
		if c.GetClusterId() != source {
			out.CrossClusterTopology = append(out.CrossClusterTopology, &commonpb.CrossClusterTopology{
				SourceClusterId: source, TargetClusterId: c.GetClusterId(),
			})
		}
	}
	return out
}

// withTarget returns the leader's configuration with one more target
// (or cfg itself when it already is one).
func withTarget(cfg *commonpb.ReplicateConfiguration, leader string, target *commonpb.MilvusCluster) *commonpb.ReplicateConfiguration {
	src := entryOf(cfg, leader)
	var targets []*commonpb.MilvusCluster
	for _, e := range cfg.GetCrossClusterTopology() {
		if e.GetSourceClusterId() == leader && e.GetTargetClusterId() != target.GetClusterId() {
			if t := entryOf(cfg, e.GetTargetClusterId()); t != nil {
				targets = append(targets, t)
			}
		}
	}
	return star(src, append(targets, proto.Clone(target).(*commonpb.MilvusCluster))...)
}

// withoutTarget returns the leader's configuration without target (its
// entry and its edge removed).
func withoutTarget(cfg *commonpb.ReplicateConfiguration, leader, target string) *commonpb.ReplicateConfiguration {
	var targets []*commonpb.MilvusCluster
	for _, e := range cfg.GetCrossClusterTopology() {
		if e.GetSourceClusterId() == leader && e.GetTargetClusterId() != target {
			if t := entryOf(cfg, e.GetTargetClusterId()); t != nil {
				targets = append(targets, t)
			}
		}
	}
	return star(entryOf(cfg, leader), targets...)
}

// standaloneOf reports whether cfg makes id a primary standing alone (what
// a force promotion leaves behind).
func standaloneOf(cfg *commonpb.ReplicateConfiguration, id string) bool {
	return len(cfg.GetClusters()) == 1 && cfg.GetClusters()[0].GetClusterId() == id && len(cfg.GetCrossClusterTopology()) == 0
}

// Unreplicated summarises what a former leader holds past a salvage
// checkpoint: the Insert, Delete and DDL messages DumpMessages returns.
type Unreplicated struct {
	Inserts int `json:"inserts"`
	Deletes int `json:"deletes"`
	DDL     int `json:"ddl"`
	// FirstTS and LastTS are the time ticks of the first and last of
	// them (0 when there are none).
	FirstTS uint64 `json:"first_ts,omitempty"`
	LastTS  uint64 `json:"last_ts,omitempty"`
	// Incomplete says why some pchannel could not be read in full.
	Incomplete string `json:"incomplete,omitempty"`
}

// Messages is how many data and DDL messages there are.
func (u Unreplicated) Messages() int { return u.Inserts + u.Deletes + u.DDL }

func (u Unreplicated) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d insert, %d delete, %d DDL messages", u.Inserts, u.Deletes, u.DDL)
	if u.Messages() > 0 {
		first := time.UnixMilli(hybridts.Physical(u.FirstTS)).UTC().Format("2006-01-02T15:04:05.000Z")
		last := time.UnixMilli(hybridts.Physical(u.LastTS)).UTC().Format("2006-01-02T15:04:05.000Z")
		fmt.Fprintf(&b, " written between %s and %s", first, last)
	}
	if u.Incomplete != "" {
		b.WriteString(" (incomplete: " + u.Incomplete + ")")
	}
	return b.String()
}

func (u *Unreplicated) add(o Unreplicated) {
	u.Inserts += o.Inserts
	u.Deletes += o.Deletes
	u.DDL += o.DDL
	if o.FirstTS != 0 && (u.FirstTS == 0 || o.FirstTS < u.FirstTS) {
		u.FirstTS = o.FirstTS
	}
	u.LastTS = max(u.LastTS, o.LastTS)
	if o.Incomplete != "" {
		if u.Incomplete != "" {
			u.Incomplete += "; "
		}
		u.Incomplete += o.Incomplete
	}
}

// Message type property of a WAL message: Milvus writes the MessageType
// number, the simulator its name.
const propMessageType = "_t"

// messageKind classifies a dumped message: "insert", "delete", "" for
// messages that carry no data (time ticks, replication configuration),
// "ddl" for the rest.
func messageKind(t string) string {
	switch t {
	case "Insert", strconv.Itoa(2):
		return "insert"
	case "Delete", strconv.Itoa(3):
		return "delete"
	case "TimeTick", strconv.Itoa(1), "CreateSegment", "Flush", "AlterReplicateConfig", "":
		return ""
	}
	return "ddl"
}

// dumpPast counts, on cluster mb, the messages of each pchannel after the
// given checkpoint (exclusive) and up to endTS (inclusive), with
// DumpMessages. A checkpoint without a message id cannot be dumped from;
// that pchannel is reported incomplete.
func (m *Manager) dumpPast(ctx context.Context, mb *member, from []*commonpb.ReplicateCheckpoint, endTS uint64) Unreplicated {
	var total Unreplicated
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, ck := range from {
		wg.Go(func() {
			u := m.dumpOne(ctx, mb, i, ck, endTS)
			mu.Lock()
			total.add(u)
			mu.Unlock()
		})
	}
	wg.Wait()
	return total
}

func (m *Manager) dumpOne(ctx context.Context, mb *member, i int, ck *commonpb.ReplicateCheckpoint, endTS uint64) Unreplicated {
	var u Unreplicated
	if ck.GetMessageId() == nil || ck.GetPchannel() == "" {
		u.Incomplete = fmt.Sprintf("pchannel %d: no checkpoint to dump from", i)
		return u
	}
	if ck.GetTimeTick() >= endTS {
		return u
	}
	stream, err := mb.rpc.DumpMessages(mb.outgoing(ctx, ""), &milvuspb.DumpMessagesRequest{
		Pchannel:       ck.GetPchannel(),
		StartMessageId: ck.GetMessageId(),
		// The checkpoint's own message did replicate: start after it.
		StartTimetick: ck.GetTimeTick() + 1,
		EndTimetick:   endTS,
	})
	if err != nil {
		u.Incomplete = fmt.Sprintf("DumpMessages(%s) on %s: %s", ck.GetPchannel(), mb.id, grpcMessage(err))
		return u
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return u
		}
		if err != nil {
			u.Incomplete = fmt.Sprintf("DumpMessages(%s) on %s: %s", ck.GetPchannel(), mb.id, grpcMessage(err))
			return u
		}
		if st := resp.GetStatus(); st != nil {
			if err := statusErr("DumpMessages", mb.id, st); err != nil {
				u.Incomplete = err.Error()
				return u
			}
		}
		msg := resp.GetMessage()
		if msg == nil {
			continue
		}
		props := msg.GetProperties()
		tt, _ := strconv.ParseUint(props["_tt"], 10, 64)
		if tt != 0 && tt <= ck.GetTimeTick() {
			continue
		}
		if tt > endTS {
			return u
		}
		switch messageKind(props[propMessageType]) {
		case "insert":
			u.Inserts++
		case "delete":
			u.Deletes++
		case "ddl":
			u.DDL++
		default:
			continue
		}
		if tt != 0 {
			if u.FirstTS == 0 || tt < u.FirstTS {
				u.FirstTS = tt
			}
			u.LastTS = max(u.LastTS, tt)
		}
	}
}

// cloneCheckpoints deep-copies checkpoints kept past the call.
func cloneCheckpoints(cps []*commonpb.ReplicateCheckpoint) []*commonpb.ReplicateCheckpoint {
	return slices.Collect(func(yield func(*commonpb.ReplicateCheckpoint) bool) {
		for _, c := range cps {
			var cc *commonpb.ReplicateCheckpoint
			if c != nil {
				cc = proto.Clone(c).(*commonpb.ReplicateCheckpoint)
			}
			if !yield(cc) {
				return
			}
		}
	})
}
