package testproc

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
)

// This file is the raw Milvus client the robustness suites drive their
// load with, on one collection of registers: pk (int64 primary key), val
// (int64) and v (a 2-dimensional float vector). Raw gRPC instead of an
// SDK, so a test sees every status and header as the proxy sent it.

// Client is a raw Milvus client: one gRPC connection (one proxy session)
// on the collection Coll.
type Client struct {
	RPC  milvuspb.MilvusServiceClient
	Coll string
}

// Dial connects to addr (the proxy or a cluster directly); t.Cleanup
// closes the connection. It reconnects quickly after a restart of what is
// behind addr (grpc's default backoff grows to two minutes).
func Dial(t testing.TB, addr, coll string) *Client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Client{RPC: milvuspb.NewMilvusServiceClient(conn), Coll: coll}
}

// StatusErr is the error of a call: the gRPC error, or the Milvus status
// when it is not a success.
func StatusErr(st *commonpb.Status, err error) error {
	if err != nil {
		return err
	}
	if st.GetCode() != 0 || st.GetErrorCode() != commonpb.ErrorCode_Success {
		return fmt.Errorf("milvus error %d: %s", st.GetCode(), st.GetReason())
	}
	return nil
}

// MustOK fails the test when a call did not succeed.
func MustOK(t testing.TB, what string, st *commonpb.Status, err error) {
	t.Helper()
	if err := StatusErr(st, err); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// RowsRequest builds the fields of an insert or upsert of registers pks
// with values vals.
func RowsRequest(pks, vals []int64) (fields []*schemapb.FieldData, n uint32) {
	vec := make([]float32, 0, 2*len(pks))
	for _, pk := range pks {
		vec = append(vec, float32(pk%1000), 1)
	}
	return []*schemapb.FieldData{
		{FieldName: "pk", Type: schemapb.DataType_Int64, Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{
			Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: pks}}}}},
		{FieldName: "val", Type: schemapb.DataType_Int64, Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{
			Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: vals}}}}},
		{FieldName: "v", Type: schemapb.DataType_FloatVector, Field: &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{
			Dim: 2, Data: &schemapb.VectorField_FloatVector{FloatVector: &schemapb.FloatArray{Data: vec}}}}},
	}, uint32(len(pks))
}

// ClusterHeader is the response header in which the proxy names the
// cluster that served a call.
const ClusterHeader = "x-milvus-ha-cluster"

// First is the first of a header's values, or "".
func First(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// Write inserts (upsert: upserts) one row and returns the answer, the
// cluster that took it (ClusterHeader, when the call went through the
// proxy) and the gRPC error as it came, for the caller to classify.
func (c *Client) Write(ctx context.Context, upsert bool, pk, val int64) (*milvuspb.MutationResult, string, error) {
	var hdr metadata.MD
	fields, n := RowsRequest([]int64{pk}, []int64{val})
	var res *milvuspb.MutationResult
	var err error
	if upsert {
		res, err = c.RPC.Upsert(ctx, &milvuspb.UpsertRequest{CollectionName: c.Coll, FieldsData: fields, NumRows: n}, grpc.Header(&hdr))
	} else {
		res, err = c.RPC.Insert(ctx, &milvuspb.InsertRequest{CollectionName: c.Coll, FieldsData: fields, NumRows: n}, grpc.Header(&hdr))
	}
	return res, First(hdr.Get(ClusterHeader)), err
}

// Insert writes one row and returns its timestamp and the cluster that
// took it (ClusterHeader, when the call went through the proxy).
func (c *Client) Insert(ctx context.Context, pk, val int64) (ts uint64, cluster string, err error) {
	res, cluster, err := c.Write(ctx, false, pk, val)
	return res.GetTimestamp(), cluster, StatusErr(res.GetStatus(), err)
}

// Row is one row read back.
type Row struct{ PK, Val int64 }

// Query reads the given primary keys at a consistency level and guarantee
// timestamp and returns the rows found (duplicates included).
func (c *Client) Query(ctx context.Context, level commonpb.ConsistencyLevel, guarantee uint64, opts []grpc.CallOption, pks ...int64) ([]Row, error) {
	var b strings.Builder
	b.WriteString("pk in [")
	for i, pk := range pks {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(pk, 10))
	}
	b.WriteByte(']')
	res, err := c.RPC.Query(ctx, &milvuspb.QueryRequest{CollectionName: c.Coll, Expr: b.String(),
		OutputFields: []string{"pk", "val"}, ConsistencyLevel: level, GuaranteeTimestamp: guarantee}, opts...)
	if err := StatusErr(res.GetStatus(), err); err != nil {
		return nil, err
	}
	var pkCol, valCol []int64
	for _, f := range res.GetFieldsData() {
		switch f.GetFieldName() {
		case "pk":
			pkCol = f.GetScalars().GetLongData().GetData()
		case "val":
			valCol = f.GetScalars().GetLongData().GetData()
		}
	}
	out := make([]Row, len(pkCol))
	for i := range pkCol {
		out[i].PK = pkCol[i]
		if i < len(valCol) {
			out[i].Val = valCol[i]
		}
	}
	return out, nil
}

// Keys is Query with a 15 s bound and no guarantee timestamp.
func (c *Client) Keys(level commonpb.ConsistencyLevel, pks ...int64) ([]Row, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return c.Query(ctx, level, 0, nil, pks...)
}

// Presence says which of pks the cluster behind c holds, and how often,
// at the given level (in batches of 500 keys).
func (c *Client) Presence(level commonpb.ConsistencyLevel, pks []int64) (map[int64]int, error) {
	out := map[int64]int{}
	for i := 0; i < len(pks); i += 500 {
		rows, err := c.Keys(level, pks[i:min(i+500, len(pks))]...)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			out[r.PK]++
		}
	}
	return out, nil
}

// CreateCollection creates the register collection (one shard, Session
// by default), indexes its vector and loads it, through c.
func (c *Client) CreateCollection(ctx context.Context) error {
	schema, err := proto.Marshal(&schemapb.CollectionSchema{Name: c.Coll, Fields: []*schemapb.FieldSchema{
		{FieldID: 100, Name: "pk", DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
		{FieldID: 101, Name: "val", DataType: schemapb.DataType_Int64},
		{FieldID: 102, Name: "v", DataType: schemapb.DataType_FloatVector, TypeParams: []*commonpb.KeyValuePair{{Key: "dim", Value: "2"}}},
	}})
	if err != nil {
		return err
	}
	st, err := c.RPC.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: c.Coll, Schema: schema, ShardsNum: 1,
		ConsistencyLevel: commonpb.ConsistencyLevel_Session})
	if err := StatusErr(st, err); err != nil {
		return fmt.Errorf("CreateCollection: %w", err)
	}
	st, err = c.RPC.CreateIndex(ctx, &milvuspb.CreateIndexRequest{CollectionName: c.Coll, FieldName: "v",
		ExtraParams: []*commonpb.KeyValuePair{{Key: "metric_type", Value: "L2"}}})
	if err := StatusErr(st, err); err != nil {
		return fmt.Errorf("CreateIndex: %w", err)
	}
	st, err = c.RPC.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{CollectionName: c.Coll})
	if err := StatusErr(st, err); err != nil {
		return fmt.Errorf("LoadCollection: %w", err)
	}
	return nil
}

// WaitServes polls until the cluster behind c answers an Eventually query
// of the collection (a replica has it loaded), or returns the last error
// after bound.
func (c *Client) WaitServes(bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Query(ctx, commonpb.ConsistencyLevel_Eventually, 0, nil, 1)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Join sends the same replicate configuration (source -> targets) to
// every cluster at once, as a deployment does, and fails the test when a
// cluster refuses it within 20s. addr gives a cluster's gRPC address; each
// cluster has pchannels physical channels.
func Join(t testing.TB, addr func(id string) string, pchannels int, source string, targets ...string) {
	t.Helper()
	entry := func(id string) *commonpb.MilvusCluster {
		e := &commonpb.MilvusCluster{ClusterId: id, ConnectionParam: &commonpb.ConnectionParam{Uri: addr(id)}}
		for i := range pchannels {
			e.Pchannels = append(e.Pchannels, sim.PChannelName(id, i))
		}
		return e
	}
	cfg := &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{entry(source)}}
	for _, t := range targets {
		cfg.Clusters = append(cfg.Clusters, entry(t))
		cfg.CrossClusterTopology = append(cfg.CrossClusterTopology, &commonpb.CrossClusterTopology{SourceClusterId: source, TargetClusterId: t})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ids := append([]string{source}, targets...)
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Go(func() { errs[i] = sim.UpdateReplicateConfiguration(ctx, addr(id), "", cfg, false) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("joining replication on %s: %v", ids[i], err)
		}
	}
}
