package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc"
)

// Dim is the dimension of the test collections' vec field.
const Dim = 8

// Connect connects the Go SDK to addr with cfg (nil: defaults; its
// Address is overwritten); t.Cleanup closes the client.
func Connect(t testing.TB, addr string, cfg *milvusclient.ClientConfig) *milvusclient.Client {
	t.Helper()
	if cfg == nil {
		cfg = &milvusclient.ClientConfig{}
	}
	cfg.Address = addr
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := milvusclient.New(ctx, cfg)
	if err != nil {
		t.Fatalf("connecting the Go SDK to %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// Vec is row id's vector: deterministic, so a search for Vec(id) finds
// row id first.
func Vec(id int64) []float32 {
	v := make([]float32, Dim)
	for j := range v {
		v[j] = float32((id*31+int64(j)*7)%97) / 97
	}
	return v
}

// MakeCollection creates (Bounded consistency), indexes (FLAT, L2) and
// loads a collection with fields id (int64 primary key) and vec (float
// vector of Dim) through c, waiting for the index and the load.
func MakeCollection(t testing.TB, c *milvusclient.Client, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	schema := entity.NewSchema().WithName(name).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(Dim))
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

// Insert inserts rows ids (with their Vec) into coll.
func Insert(ctx context.Context, c *milvusclient.Client, coll string, ids ...int64) error {
	vecs := make([][]float32, len(ids))
	for i, id := range ids {
		vecs[i] = Vec(id)
	}
	_, err := c.Insert(ctx, milvusclient.NewColumnBasedInsertOption(coll).
		WithInt64Column("id", ids).WithFloatVectorColumn("vec", Dim, vecs))
	if err != nil {
		return fmt.Errorf("insert %v: %w", ids, err)
	}
	return nil
}

// Search searches coll for Vec(id) (top 1) at consistency level cl and
// returns only the error: for tests that count calls, not results.
func Search(ctx context.Context, c *milvusclient.Client, coll string, id int64, cl entity.ConsistencyLevel, opts ...grpc.CallOption) error {
	_, err := c.Search(ctx, milvusclient.NewSearchOption(coll, 1, []entity.Vector{entity.FloatVector(Vec(id))}).
		WithANNSField("vec").WithConsistencyLevel(cl), opts...)
	return err
}

// SearchID searches coll for row id, with a filter on it, at consistency
// level cl and reports whether it was found.
func SearchID(ctx context.Context, c *milvusclient.Client, coll string, id int64, cl entity.ConsistencyLevel) (bool, error) {
	res, err := c.Search(ctx, milvusclient.NewSearchOption(coll, 1, []entity.Vector{entity.FloatVector(Vec(id))}).
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
