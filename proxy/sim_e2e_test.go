package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// End to end on each engine: simulated clusters a (leader), b, c joined by
// replication delayed 300 ms, the real topology manager and router, the
// proxy, and the official Go SDK as the client.

type simEnv struct {
	clusters map[string]*sim.Cluster
	topo     *topology.Manager
	srv      *Server
	addr     string
	served   sync.Map // method -> cluster of its last call
}

func startSimEnv(t *testing.T, delay time.Duration) *simEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("end to end")
	}
	engine := EngineGRPC
	if t.Name() != "" && containsPath(t.Name(), "relay") {
		engine = EngineRelay
	}
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &simEnv{clusters: map[string]*sim.Cluster{}}
	var all []*sim.Cluster
	var copts []topology.ClusterOptions
	for _, id := range []string{"a", "b", "c"} {
		c, err := sim.Start(ctx, sim.Options{ClusterID: id, ReplicationDelay: delay, Logger: quiet})
		if err != nil {
			t.Fatalf("sim %s: %v", id, err)
		}
		t.Cleanup(c.Stop)
		e.clusters[id] = c
		all = append(all, c)
		copts = append(copts, topology.ClusterOptions{ID: id, URI: c.Addr()})
	}
	jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := sim.JoinReplication(jctx, all[0], all[1:]...); err != nil {
		t.Fatalf("joining replication: %v", err)
	}
	m, err := topology.New(topology.Options{Clusters: copts, PollInterval: 50 * time.Millisecond,
		DialOptions: BackendDialOptions(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(func() { _ = m.Close() })
	e.topo = m
	srv, err := New(Options{Engine: engine, Topology: m, Logger: quiet,
		Router: router.New(router.Options{LeaderServesReads: false, LeaderNow: m.LeaderNow})})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	e.srv, e.addr = srv, lis.Addr().String()
	testutil.WaitPublished(t, m, 15*time.Second, "a healthy leader and 2 alternatives with known checkpoints", func(s *topology.Snapshot) bool {
		ready := 0
		for _, c := range s.Clusters {
			if c.Role == topology.RoleAlternative && c.CheckpointsKnown && c.Healthy {
				ready++
			}
		}
		return s.Leader != nil && s.Leader.Healthy && ready == 2
	}, func(*topology.Snapshot) string { return fmt.Sprintf("%+v", m.View()) })
	return e
}

func containsPath(name, part string) bool {
	for i := 0; i+len(part) <= len(name); i++ {
		if name[i:i+len(part)] == part && (i == 0 || name[i-1] == '/') {
			return true
		}
	}
	return false
}

func (e *simEnv) client(t *testing.T) *milvusclient.Client {
	t.Helper()
	record := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var md metadata.MD
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
		if v := md.Get(HeaderCluster); len(v) > 0 {
			e.served.Store(method, v[0])
		} else {
			e.served.Store(method, "")
		}
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := milvusclient.New(ctx, &milvusclient.ClientConfig{Address: e.addr,
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(record)}})
	if err != nil {
		t.Fatalf("Go SDK: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func (e *simEnv) lastServed(method string) string {
	v, _ := e.served.Load("/milvus.proto.milvus.MilvusService/" + method)
	s, _ := v.(string)
	return s
}

const simDim = 8

func simVec(i int64) []float32 {
	v := make([]float32, simDim)
	for j := range v {
		v[j] = float32((i*31+int64(j)*7)%97) / 97
	}
	return v
}

func (e *simEnv) makeCollection(t *testing.T, c *milvusclient.Client, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	schema := entity.NewSchema().WithName(name).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(simDim))
	if err := c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(name, schema).WithConsistencyLevel(entity.ClBounded)); err != nil {
		t.Fatalf("create collection: %v", err)
	}
	it, err := c.CreateIndex(ctx, milvusclient.NewCreateIndexOption(name, "vec", index.NewFlatIndex(entity.L2)))
	if err != nil {
		t.Fatal(err)
	}
	if err := it.Await(ctx); err != nil {
		t.Fatal(err)
	}
	lt, err := c.LoadCollection(ctx, milvusclient.NewLoadCollectionOption(name))
	if err != nil {
		t.Fatal(err)
	}
	if err := lt.Await(ctx); err != nil {
		t.Fatal(err)
	}
	// Wait until both alternatives have the collection loaded.
	for _, id := range []string{"b", "c"} {
		direct, err := milvusclient.New(ctx, &milvusclient.ClientConfig{Address: e.clusters[id].Addr()})
		if err != nil {
			t.Fatal(err)
		}
		for {
			st, err := direct.GetLoadState(ctx, milvusclient.NewGetLoadStateOption(name))
			if err == nil && st.State == entity.LoadStateLoaded {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s never loaded %s: %v", id, name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = direct.Close(ctx)
	}
}

func simSearch(ctx context.Context, c *milvusclient.Client, coll string, id int64, cl entity.ConsistencyLevel) (bool, error) {
	res, err := c.Search(ctx, milvusclient.NewSearchOption(coll, 1, []entity.Vector{entity.FloatVector(simVec(id))}).
		WithANNSField("vec").WithFilter(fmt.Sprintf("id == %d", id)).WithConsistencyLevel(cl))
	if err != nil {
		return false, err
	}
	if len(res) != 1 || res[0].ResultCount == 0 {
		return false, nil
	}
	got, err := res[0].IDs.GetAsInt64(0)
	return err == nil && got == id, err
}

// TestSimEndToEnd: read-your-writes for Session, writes and Strong reads
// on the leader, Eventually reads on the alternatives.
func TestSimEndToEnd(t *testing.T) { bothEngines(t, testSimEndToEnd) }

func testSimEndToEnd(t *testing.T) {
	e := startSimEnv(t, 300*time.Millisecond)
	c := e.client(t)
	e.makeCollection(t, c, "e2e")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const rounds = 120
	violations, byAlt := 0, 0
	servedBy := map[string]int{}
	for i := 0; i < rounds; i++ {
		id := int64(i)
		if _, err := c.Insert(ctx, milvusclient.NewColumnBasedInsertOption("e2e").
			WithInt64Column("id", []int64{id}).WithFloatVectorColumn("vec", simDim, [][]float32{simVec(id)})); err != nil {
			t.Fatalf("round %d: insert: %v", i, err)
		}
		if w := e.lastServed("Insert"); w != "a" {
			t.Fatalf("round %d: insert served by %q", i, w)
		}
		if i%30 == 29 {
			time.Sleep(450 * time.Millisecond) // the write is on the alternatives now
		}
		found, err := simSearch(ctx, c, "e2e", id, entity.ClSession)
		if err != nil {
			t.Fatalf("round %d: search: %v", i, err)
		}
		if !found {
			violations++
		}
		who := e.lastServed("Search")
		servedBy[who]++
		if who != "a" {
			byAlt++
		}
	}
	t.Logf("Session: %d rounds, %d violations, served by %v", rounds, violations, servedBy)
	if violations != 0 {
		t.Fatalf("%d Session searches missed their own write", violations)
	}
	if byAlt < 2 {
		t.Fatalf("caught-up Session reads never went to an alternative: %v", servedBy)
	}

	// Strong: the leader.
	if _, err := simSearch(ctx, c, "e2e", 1, entity.ClStrong); err != nil {
		t.Fatal(err)
	}
	if who := e.lastServed("Search"); who != "a" {
		t.Fatalf("Strong read served by %q", who)
	}
	// Eventually: spread over b and c.
	spread := map[string]int{}
	for i := 0; i < 60; i++ {
		if _, err := simSearch(ctx, c, "e2e", 1, entity.ClEventually); err != nil {
			t.Fatal(err)
		}
		spread[e.lastServed("Search")]++
	}
	t.Logf("Eventually served by %v", spread)
	if spread["b"] < 10 || spread["c"] < 10 || spread["a"] != 0 {
		t.Fatalf("Eventually reads not spread over the alternatives: %v", spread)
	}
}
