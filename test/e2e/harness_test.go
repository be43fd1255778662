// Package e2e proves the proxy's routing through its public interface: the
// demo topology (simulated clusters a = leader, b, c joined by replication)
// with the real proxy in front, driven by the official Go SDK.
package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/sim"
)

const (
	clusterHeader = "x-milvus-ha-cluster"
	dim           = 8
)

// env is one demo topology plus the proxy, torn down by t.Cleanup.
type env struct {
	clusters map[string]*sim.Cluster
	app      *app.App
	cfg      *config.Config
}

type envOptions struct {
	alternatives int
	delay        time.Duration
	tune         func(*config.Config)
}

func logger(t *testing.T) *slog.Logger {
	if os.Getenv("E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	ctx := context.Background()
	lg := logger(t)
	e := &env{clusters: map[string]*sim.Cluster{}}
	var all []*sim.Cluster
	for i := 0; i <= o.alternatives; i++ {
		id := string(rune('a' + i))
		c, err := sim.Start(ctx, sim.Options{ClusterID: id, ReplicationDelay: o.delay, Logger: lg.With("sim", id)})
		if err != nil {
			t.Fatalf("starting sim %s: %v", id, err)
		}
		t.Cleanup(c.Stop)
		e.clusters[id] = c
		all = append(all, c)
	}
	jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := sim.JoinReplication(jctx, all[0], all[1:]...); err != nil {
		t.Fatalf("joining replication: %v", err)
	}
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Discovery = config.DiscoveryReplicate
	for _, c := range all {
		cfg.Clusters = append(cfg.Clusters, config.Cluster{ID: c.ID(), URI: c.Addr()})
	}
	if o.tune != nil {
		o.tune(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	a, err := app.New(ctx, app.Options{Config: cfg, Logger: lg})
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	if err := a.Start(); err != nil {
		t.Fatalf("app.Start: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Shutdown(sctx)
	})
	e.app, e.cfg = a, cfg
	e.waitReady(t, o.alternatives)
	return e
}

// waitReady waits until the proxy knows the leader and every alternative's
// checkpoints.
func (e *env) waitReady(t *testing.T, alternatives int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		s := e.app.Topology().Snapshot()
		known := 0
		for _, c := range s.Clusters {
			if c.Role == "alternative" && c.CheckpointsKnown && c.Healthy {
				known++
			}
		}
		if s.Leader != nil && s.Leader.Healthy && known == alternatives {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("proxy not ready: %+v", e.app.Topology().View())
}

// recorder remembers which cluster served each call, from the response
// header the proxy adds.
type recorder struct {
	mu   sync.Mutex
	last map[string]string // method -> cluster of its last call
}

func (r *recorder) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var md metadata.MD
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
		cluster := ""
		if v := md.Get(clusterHeader); len(v) > 0 {
			cluster = v[0]
		}
		r.mu.Lock()
		r.last[method] = cluster
		r.mu.Unlock()
		return err
	}
}

// served returns the cluster that served the last call of a method
// (short name, e.g. "Search").
func (r *recorder) served(method string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last["/milvus.proto.milvus.MilvusService/"+method]
}

// client connects the Go SDK to the proxy with a header recorder.
func (e *env) client(t *testing.T) (*milvusclient.Client, *recorder) {
	t.Helper()
	rec := &recorder{last: map[string]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := milvusclient.New(ctx, &milvusclient.ClientConfig{
		Address:     e.app.Addr(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(rec.interceptor())},
	})
	if err != nil {
		t.Fatalf("connecting the Go SDK to the proxy: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c, rec
}

func vec(i int64) []float32 {
	v := make([]float32, dim)
	for j := range v {
		v[j] = float32((i*31+int64(j)*7)%97) / 97
	}
	return v
}

// makeCollection creates, indexes and loads a collection (id int64 pk,
// vec float vector) through the proxy, and waits until every alternative
// has it loaded too.
func (e *env) makeCollection(t *testing.T, c *milvusclient.Client, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	schema := entity.NewSchema().WithName(name).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))
	if err := c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(name, schema).
		WithConsistencyLevel(entity.ClBounded)); err != nil {
		t.Fatalf("create collection: %v", err)
	}
	task, err := c.CreateIndex(ctx, milvusclient.NewCreateIndexOption(name, "vec", index.NewFlatIndex(entity.L2)))
	if err != nil {
		t.Fatalf("create index: %v", err)
	}
	if err := task.Await(ctx); err != nil {
		t.Fatalf("await index: %v", err)
	}
	lt, err := c.LoadCollection(ctx, milvusclient.NewLoadCollectionOption(name))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := lt.Await(ctx); err != nil {
		t.Fatalf("await load: %v", err)
	}
}

func (e *env) insert(ctx context.Context, c *milvusclient.Client, coll string, ids ...int64) error {
	vecs := make([][]float32, len(ids))
	for i, id := range ids {
		vecs[i] = vec(id)
	}
	_, err := c.Insert(ctx, milvusclient.NewColumnBasedInsertOption(coll).
		WithInt64Column("id", ids).WithFloatVectorColumn("vec", dim, vecs))
	if err != nil {
		return fmt.Errorf("insert %v: %w", ids, err)
	}
	return nil
}

// searchID searches for the row id with a filter on it and reports
// whether it was found.
func searchID(ctx context.Context, c *milvusclient.Client, coll string, id int64, cl entity.ConsistencyLevel) (bool, error) {
	res, err := c.Search(ctx, milvusclient.NewSearchOption(coll, 1, []entity.Vector{entity.FloatVector(vec(id))}).
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
