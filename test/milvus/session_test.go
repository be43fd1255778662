package milvus_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

// readGuarantees records the consistency level and guarantee timestamp of
// every Search and Query the Go SDK sends, so the test can prove it
// exercises what it claims: Session reads with guarantee timestamp 0.
type readGuarantees struct {
	mu   sync.Mutex
	seen []string // "Session/0"
}

func (g *readGuarantees) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var s string
	switch r := req.(type) {
	case *milvuspb.SearchRequest:
		s = fmt.Sprintf("%v/%d", r.GetConsistencyLevel(), r.GetGuaranteeTimestamp())
	case *milvuspb.QueryRequest:
		s = fmt.Sprintf("%v/%d", r.GetConsistencyLevel(), r.GetGuaranteeTimestamp())
	}
	if s != "" {
		g.mu.Lock()
		g.seen = append(g.seen, s)
		g.mu.Unlock()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// take returns and forgets what was recorded.
func (g *readGuarantees) take() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.seen
	g.seen = nil
	return s
}

// TestSessionReadYourWritesGT0: the Go SDK (like Node) sends Session reads
// with guarantee timestamp 0. Milvus passes a Session read's guarantee
// through unchanged and its query nodes wait only while the guarantee is
// above their service time, so 0 means "no wait": directly against Milvus a
// client's Session read right after its own insert can miss the row.
// Through milvus-ha-proxy the same read waits for the session's last write
// (the proxy keeps the write timestamp per client identifier), so it never
// misses. Both sides are counted; only the proxy side is asserted.
func TestSessionReadYourWritesGT0(t *testing.T) {
	m := startMilvus(t)
	px := startProxy(t, m.Addr)

	var g readGuarantees
	cfg := func() *milvusclient.ClientConfig {
		// DialOptions replaces the SDK's defaults (keepalive, message
		// sizes): keep them and add the recorder.
		opts := append(slices.Clone(milvusclient.DefaultGrpcOpts), grpc.WithChainUnaryInterceptor(g.interceptor))
		return &milvusclient.ClientConfig{DialOptions: opts}
	}
	direct := testenv.Connect(t, m.Addr, cfg())
	proxied := testenv.Connect(t, px.Addr, cfg())

	const coll = "ryw"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	makeCollection(ctx, t, direct, coll)

	const rounds = 20
	type side struct {
		name                      string
		c                         *milvusclient.Client
		queryMisses, searchMisses int
		base                      int64
	}
	sides := []*side{{name: "direct", c: direct, base: 1_000_000}, {name: "proxy", c: proxied, base: 2_000_000}}
	for i := range int64(rounds) {
		// Alternate the two sides so they see the same load.
		for _, s := range sides {
			id := s.base + i
			if err := testenv.Insert(ctx, s.c, coll, id); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			rs, err := s.c.Query(ctx, milvusclient.NewQueryOption(coll).WithFilter(fmt.Sprintf("id == %d", id)).
				WithOutputFields("id").WithConsistencyLevel(entity.ClSession))
			if err != nil {
				t.Fatalf("%s: session query %d: %v", s.name, id, err)
			}
			if rs.ResultCount != 1 {
				s.queryMisses++
			}
			found, err := testenv.SearchID(ctx, s.c, coll, id, entity.ClSession)
			if err != nil {
				t.Fatalf("%s: session search %d: %v", s.name, id, err)
			}
			if !found {
				s.searchMisses++
			}
			for _, got := range g.take() {
				if got != "Session/0" {
					t.Fatalf("%s: the SDK sent a read as %s, want Session/0 (level/guarantee timestamp): the test no longer tests what it says", s.name, got)
				}
			}
		}
	}
	for _, s := range sides {
		t.Logf("%s to Milvus %s: Session reads with guarantee timestamp 0 right after the client's own insert missed it: query %d/%d, search %d/%d",
			s.name, m.Version, s.queryMisses, rounds, s.searchMisses, rounds)
	}
	if p := sides[1]; p.queryMisses+p.searchMisses != 0 {
		t.Errorf("through the proxy a Session read missed the client's own write: query %d/%d, search %d/%d",
			p.queryMisses, rounds, p.searchMisses, rounds)
	}
}

// makeCollection creates, indexes (FLAT) and loads the testenv collection
// shape (id int64 primary key, vec float vector of testenv.Dim); its
// consistency level is Bounded, the SDK default, which a read with an
// explicit level overrides.
func makeCollection(ctx context.Context, t *testing.T, c *milvusclient.Client, name string) {
	t.Helper()
	schema := entity.NewSchema().WithName(name).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(testenv.Dim))
	if err := c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(name, schema).
		WithConsistencyLevel(entity.ClBounded)); err != nil {
		t.Fatalf("create collection %s: %v", name, err)
	}
	task, err := c.CreateIndex(ctx, milvusclient.NewCreateIndexOption(name, "vec", index.NewFlatIndex(entity.L2)))
	if err != nil {
		t.Fatalf("create index on %s: %v", name, err)
	}
	if err := task.Await(ctx); err != nil {
		t.Fatalf("await index on %s: %v", name, err)
	}
	lt, err := c.LoadCollection(ctx, milvusclient.NewLoadCollectionOption(name))
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	if err := lt.Await(ctx); err != nil {
		t.Fatalf("await load of %s: %v", name, err)
	}
}
