package topology_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

var users = map[string]string{"root": "Milvus"}

func startSim(t *testing.T, id string, opts ...func(*sim.Options)) *sim.Cluster {
	t.Helper()
	o := sim.Options{ClusterID: id, Users: users, TimeTickInterval: 20 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	c, err := sim.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func waitSnap(t *testing.T, m *topology.Manager, what string, cond func(s *topology.Snapshot) bool) *topology.Snapshot {
	t.Helper()
	return testutil.WaitPublished(t, m, 15*time.Second, what, cond, func(*topology.Snapshot) string { return fmt.Sprintf("%+v", m.View()) })
}

// TestAgainstSimulatedClusters runs discovery, checkpoint tracking, the
// collection cache, routing and loss detection against real simulated
// Milvus clusters joined by replication, with authentication on.
func TestAgainstSimulatedClusters(t *testing.T) {
	ctx := context.Background()
	a, b, c := startSim(t, "a"), startSim(t, "b"), startSim(t, "c")
	if err := sim.JoinReplication(ctx, a, b, c); err != nil {
		t.Fatal(err)
	}
	opts := topology.Options{
		Discovery:         topology.DiscoveryReplicate,
		PollInterval:      20 * time.Millisecond,
		ProbeInterval:     50 * time.Millisecond,
		DiscoveryInterval: 100 * time.Millisecond,
		DetectAfter:       500 * time.Millisecond,
		ProbeTimeout:      time.Second, // the default (2*ProbeInterval, 100ms) times out on a loaded machine
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, s := range []*sim.Cluster{a, b, c} {
		opts.Clusters = append(opts.Clusters, topology.ClusterOptions{ID: s.ID(), URI: s.Addr(), Token: "root:Milvus"})
	}
	m, err := topology.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Close()

	s := waitSnap(t, m, "leader and caught-up alternatives", func(s *topology.Snapshot) bool {
		return s.Leader != nil && s.Cluster("b").CheckpointsKnown && s.Cluster("c").CheckpointsKnown &&
			s.Cluster("b").Healthy && s.Cluster("c").Healthy
	})
	if s.Leader.ID != "a" || s.Cluster("b").Role != topology.RoleAlternative || len(s.LeaderPChannels) != 2 {
		t.Fatalf("discovered %+v", m.View())
	}
	first, _ := s.Cluster("b").ReplicatedFor(nil)
	waitSnap(t, m, "checkpoints advancing with time ticks", func(s *topology.Snapshot) bool {
		ts, ok := s.Cluster("b").ReplicatedFor(nil)
		return ok && ts > first
	})

	// The collection cache asks the leader, with the proxy's credentials.
	createCollection(t, a, "docs")
	info, err := m.Collection(ctx, "", "docs")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.PChannels) == 0 || info.PChannels[0] < 0 || info.PChannels[len(info.PChannels)-1] > 1 {
		t.Fatalf("collection info %+v", info)
	}
	if _, err := m.Collection(ctx, "", "nope"); err == nil || !strings.Contains(err.Error(), "not") {
		t.Fatalf("missing collection: %v", err)
	}

	// Eventually reads spread over both alternatives.
	r := router.New(router.Options{LeaderNow: m.LeaderNow})
	counts := map[string]int{}
	for range 1000 {
		d := r.PickRead(m.Snapshot(), router.ReadRequest{})
		counts[d.Cluster.ID]++
	}
	if counts["b"] < 250 || counts["c"] < 250 || counts["a"] != 0 {
		t.Fatalf("eventually spread %v", counts)
	}

	// Pause b's replication: once c has moved past what b holds, a read
	// needing c's position never goes to b.
	b.PauseReplication()
	s = waitSnap(t, m, "b behind c", func(s *topology.Snapshot) bool {
		tb, okb := s.Cluster("b").ReplicatedFor(info.PChannels)
		tc, okc := s.Cluster("c").ReplicatedFor(info.PChannels)
		return okb && okc && hybridts.Physical(tc)-hybridts.Physical(tb) > 200
	})
	required, _ := s.Cluster("c").ReplicatedFor(info.PChannels)
	counts = map[string]int{}
	for range 200 {
		d := r.PickRead(m.Snapshot(), router.ReadRequest{PChannels: info.PChannels, Required: required})
		counts[d.Cluster.ID]++
	}
	if counts["b"] != 0 || counts["c"] == 0 {
		t.Fatalf("paused alternative served a read past its checkpoint: %v", counts)
	}
	// A Strong-like requirement (the leader's clock) falls back to the leader.
	if d := r.PickRead(m.Snapshot(), router.ReadRequest{Required: m.LeaderNow() + 1<<30}); d.Cluster.ID != "a" || d.Reason != router.ReasonLeaderLag {
		t.Fatalf("far-future requirement went to %s (%s)", d.Cluster.ID, d.Reason)
	}
	b.ResumeReplication()
	waitSnap(t, m, "b caught up again", func(s *topology.Snapshot) bool {
		tb, ok := s.Cluster("b").ReplicatedFor(info.PChannels)
		return ok && tb >= required
	})
	if d := r.PickRead(m.Snapshot(), router.ReadRequest{PChannels: info.PChannels, Required: required, Exclude: []string{"c"}}); d.Cluster.ID != "b" {
		t.Fatalf("caught-up b not eligible: %s (%s)", d.Cluster.ID, d.Reason)
	}

	// The leader dies: loss is reported after DetectAfter.
	a.Crash()
	select {
	case ev := <-m.LeaderLost():
		if ev.ClusterID != "a" {
			t.Fatalf("lost %+v", ev)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("leader loss not detected: %+v", m.View())
	}
	// Loss is declared DetectAfter after the last good probe; the failed
	// probe that marks it unhealthy may end a moment later on a loaded
	// machine (a probe made while the connection is reconnecting waits
	// for that attempt).
	waitSnap(t, m, "crashed leader unhealthy", func(s *topology.Snapshot) bool { return !s.Cluster("a").Healthy })
}

func TestSimWrongToken(t *testing.T) {
	a := startSim(t, "a")
	m, err := topology.New(topology.Options{
		Discovery:     topology.DiscoveryStatic,
		ProbeInterval: 20 * time.Millisecond,
		Clusters:      []topology.ClusterOptions{{ID: "a", URI: a.Addr(), Role: topology.RoleLeader, Token: "root:wrong"}},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Close()
	s := waitSnap(t, m, "auth failure reported", func(s *topology.Snapshot) bool {
		return strings.Contains(s.Leader.HealthReason, "Unauthenticated")
	})
	if s.Leader.Healthy {
		t.Fatal("a cluster refusing our credentials counted healthy")
	}
}

// createCollection creates a two-field collection directly on a cluster.
func createCollection(t *testing.T, c *sim.Cluster, name string) {
	t.Helper()
	schema := &schemapb.CollectionSchema{Name: name, Fields: []*schemapb.FieldSchema{
		{FieldID: 100, Name: "id", DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
		{FieldID: 101, Name: "v", DataType: schemapb.DataType_FloatVector, TypeParams: []*commonpb.KeyValuePair{{Key: "dim", Value: "2"}}},
	}}
	raw, err := proto.Marshal(schema)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := newConn(c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", base64.StdEncoding.EncodeToString([]byte("root:Milvus")))
	st, err := milvuspb.NewMilvusServiceClient(conn).CreateCollection(ctx, &milvuspb.CreateCollectionRequest{
		CollectionName: name, Schema: raw, ShardsNum: 1,
	})
	if err != nil || st.GetCode() != 0 {
		t.Fatalf("CreateCollection: %v %v", err, st)
	}
}

func newConn(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
