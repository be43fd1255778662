package topology

import (
	"context"
	"fmt"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
)

// The Arbiter drives leader changes through two small interfaces the
// Manager implements, by cluster id: the routing view it changes
// (topologyControl) and the Milvus replication calls it makes
// (replicationCalls). It never reaches into the Manager's members or
// counters.

// topologyControl is the routing view a leader change reads and changes.
type topologyControl interface {
	Snapshot() *Snapshot
	Changed() <-chan struct{}
	LeaderLost() <-chan LeaderLoss
	Rediscover()
	HoldWrites(reason string) error
	ReleaseWrites() error
	InstallLeader(p Promotion) error
	SetQuarantine(id, reason string) error
	// setFenced fences a cluster (Allow refuses it) or lifts the fence;
	// drain waits for the requests admitted before the fence.
	setFenced(id string, on bool)
	drain(ctx context.Context, id string, max time.Duration) int64
	rearmLossDetection()
	// ackedWrite is the highest write timestamp the cluster acknowledged
	// through the proxy; writesHeld counts writes that waited for a
	// leader so far.
	ackedWrite(id string) uint64
	writesHeld() int64
	// spawn runs fn as one of the Manager's goroutines (false once it
	// closes); clusterIDs lists the clusters in config order.
	spawn(fn func(ctx context.Context)) bool
	clusterIDs() []string
	settings() Options
}

// replicationCalls are the Milvus replication calls of a leader change,
// each bounded by ctx; every error names the cluster and the call.
type replicationCalls interface {
	replicateConfigOf(ctx context.Context, id string) (*commonpb.ReplicateConfiguration, error)
	updateReplicateConfigOf(ctx context.Context, id string, cfg *commonpb.ReplicateConfiguration, force bool) error
	replicateInfoOf(ctx context.Context, id, source string, ownPChannels []string, n int) (cps, salvage []*commonpb.ReplicateCheckpoint, err error)
	configsOf(ctx context.Context, ids []string) map[string]configAnswer
	dumpPastOf(ctx context.Context, id string, from []*commonpb.ReplicateCheckpoint, endTS uint64) Unreplicated
	dumpOneOf(ctx context.Context, id string, i int, ck *commonpb.ReplicateCheckpoint, endTS uint64) Unreplicated
	allocTimestampOf(ctx context.Context, id string) (uint64, error)
}

// control is both.
type control interface {
	topologyControl
	replicationCalls
}

var _ control = (*Manager)(nil)

func (m *Manager) ackedWrite(id string) uint64 {
	if mb := m.members[id]; mb != nil {
		return mb.ackedWrite.Load()
	}
	return 0
}

func (m *Manager) writesHeld() int64 { return m.holdsStarted.Load() }

func (m *Manager) clusterIDs() []string {
	ids := make([]string, len(m.order))
	for i, mb := range m.order {
		ids[i] = mb.id
	}
	return ids
}

func (m *Manager) settings() Options { return m.opts }

// member returns the cluster's member, or an error naming the unknown id.
func (m *Manager) member(id string) (*member, error) {
	if mb := m.members[id]; mb != nil {
		return mb, nil
	}
	return nil, fmt.Errorf("topology: unknown cluster %q", id)
}

func (m *Manager) replicateConfigOf(ctx context.Context, id string) (*commonpb.ReplicateConfiguration, error) {
	mb, err := m.member(id)
	if err != nil {
		return nil, err
	}
	return m.replicateConfig(ctx, mb)
}

func (m *Manager) updateReplicateConfigOf(ctx context.Context, id string, cfg *commonpb.ReplicateConfiguration, force bool) error {
	mb, err := m.member(id)
	if err != nil {
		return err
	}
	return m.updateReplicateConfig(ctx, mb, cfg, force)
}

func (m *Manager) replicateInfoOf(ctx context.Context, id, source string, own []string, n int) ([]*commonpb.ReplicateCheckpoint, []*commonpb.ReplicateCheckpoint, error) {
	mb, err := m.member(id)
	if err != nil {
		return nil, nil, err
	}
	return m.replicateInfo(ctx, mb, source, own, n)
}

func (m *Manager) configsOf(ctx context.Context, ids []string) map[string]configAnswer {
	var mbs []*member
	for _, id := range ids {
		if mb := m.members[id]; mb != nil {
			mbs = append(mbs, mb)
		}
	}
	return m.fetchConfigs(ctx, mbs)
}

func (m *Manager) dumpPastOf(ctx context.Context, id string, from []*commonpb.ReplicateCheckpoint, endTS uint64) Unreplicated {
	mb, err := m.member(id)
	if err != nil {
		return Unreplicated{Incomplete: err.Error()}
	}
	return m.dumpPast(ctx, mb, from, endTS)
}

func (m *Manager) dumpOneOf(ctx context.Context, id string, i int, ck *commonpb.ReplicateCheckpoint, endTS uint64) Unreplicated {
	mb, err := m.member(id)
	if err != nil {
		return Unreplicated{Incomplete: err.Error()}
	}
	return m.dumpOne(ctx, mb, i, ck, endTS)
}

// allocTimestampOf asks any cluster (not only the leader) for a fresh
// timestamp, without touching the leader clock.
func (m *Manager) allocTimestampOf(ctx context.Context, id string) (uint64, error) {
	mb, err := m.member(id)
	if err != nil {
		return 0, err
	}
	resp, err := mb.rpc.AllocTimestamp(mb.outgoing(ctx, ""), &milvuspb.AllocTimestampRequest{})
	if err == nil {
		err = statusErr("AllocTimestamp", mb.id, resp.GetStatus())
	}
	if err != nil {
		return 0, fmt.Errorf("AllocTimestamp on %s: %w", mb.id, err)
	}
	return resp.GetTimestamp(), nil
}
