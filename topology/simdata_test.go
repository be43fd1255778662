package topology_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// simClient talks to one simulated cluster directly (as root), for
// setting up data and checking what a cluster holds.
type simClient struct {
	t   testing.TB
	rpc milvuspb.MilvusServiceClient
}

func dial(t testing.TB, addr string) *simClient {
	t.Helper()
	conn, err := newConn(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &simClient{t: t, rpc: milvuspb.NewMilvusServiceClient(conn)}
}

func (c *simClient) ctx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	return metadata.AppendToOutgoingContext(ctx, "authorization", rootAuth), cancel
}

const rootAuth = "cm9vdDpNaWx2dXM=" // base64("root:Milvus")

func mustOK(t testing.TB, what string, st *commonpb.Status, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if st.GetCode() != 0 || st.GetErrorCode() != commonpb.ErrorCode_Success {
		t.Fatalf("%s: milvus error %d: %s", what, st.GetCode(), st.GetReason())
	}
}

// createLoaded creates a one-shard collection (pk int64, vector dim 2),
// indexes and loads it.
func (c *simClient) createLoaded(name string) {
	c.t.Helper()
	schema, _ := proto.Marshal(&schemapb.CollectionSchema{Name: name, Fields: []*schemapb.FieldSchema{
		{FieldID: 100, Name: "pk", DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
		{FieldID: 101, Name: "v", DataType: schemapb.DataType_FloatVector, TypeParams: []*commonpb.KeyValuePair{{Key: "dim", Value: "2"}}},
	}})
	ctx, cancel := c.ctx()
	defer cancel()
	st, err := c.rpc.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: name, Schema: schema, ShardsNum: 1})
	mustOK(c.t, "CreateCollection", st, err)
	st, err = c.rpc.CreateIndex(ctx, &milvuspb.CreateIndexRequest{CollectionName: name, FieldName: "v",
		ExtraParams: []*commonpb.KeyValuePair{{Key: "metric_type", Value: "L2"}}})
	mustOK(c.t, "CreateIndex", st, err)
	st, err = c.rpc.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{CollectionName: name})
	mustOK(c.t, "LoadCollection", st, err)
}

// insert writes the given primary keys and returns the write timestamp.
func (c *simClient) insert(name string, pks ...int64) uint64 {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := c.rpc.Insert(ctx, insertRequest(name, pks...))
	mustOK(c.t, "Insert", res.GetStatus(), err)
	return res.GetTimestamp()
}

// tryInsert is insert returning the Milvus error instead of failing.
func (c *simClient) tryInsert(name string, pks ...int64) error {
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := c.rpc.Insert(ctx, insertRequest(name, pks...))
	if err != nil {
		return err
	}
	if st := res.GetStatus(); st.GetCode() != 0 {
		return fmt.Errorf("milvus error %d: %s", st.GetCode(), st.GetReason())
	}
	return nil
}

func insertRequest(name string, pks ...int64) *milvuspb.InsertRequest {
	vec := make([]float32, 0, 2*len(pks))
	for _, pk := range pks {
		vec = append(vec, float32(pk), 1)
	}
	return &milvuspb.InsertRequest{CollectionName: name, NumRows: uint32(len(pks)), FieldsData: []*schemapb.FieldData{
		{FieldName: "pk", Type: schemapb.DataType_Int64, Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{
			Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: pks}}}}},
		{FieldName: "v", Type: schemapb.DataType_FloatVector, Field: &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{
			Dim: 2, Data: &schemapb.VectorField_FloatVector{FloatVector: &schemapb.FloatArray{Data: vec}}}}},
	}}
}

// has reports which of the keys the cluster holds (an Eventually read:
// what it has applied now).
func (c *simClient) has(name string, pks ...int64) map[int64]bool {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	var keys []string
	for _, pk := range pks {
		keys = append(keys, fmt.Sprint(pk))
	}
	res, err := c.rpc.Query(ctx, &milvuspb.QueryRequest{CollectionName: name, Expr: "pk in [" + strings.Join(keys, ",") + "]",
		OutputFields: []string{"pk"}, ConsistencyLevel: commonpb.ConsistencyLevel_Eventually})
	out := map[int64]bool{}
	if err == nil && (res.GetStatus().GetCode() == 100 || res.GetStatus().GetCode() == 101) {
		// The collection (or its load) has not replicated here yet: none
		// of the rows are visible; callers poll or assert on the answer.
		return out
	}
	mustOK(c.t, "Query", res.GetStatus(), err)
	for _, f := range res.GetFieldsData() {
		if f.GetFieldName() == "pk" {
			for _, pk := range f.GetScalars().GetLongData().GetData() {
				out[pk] = true
			}
		}
	}
	return out
}

// replicateConfig reads the cluster's replicate configuration.
func (c *simClient) replicateConfig() *commonpb.ReplicateConfiguration {
	c.t.Helper()
	ctx, cancel := c.ctx()
	defer cancel()
	res, err := c.rpc.GetReplicateConfiguration(ctx, &milvuspb.GetReplicateConfigurationRequest{})
	mustOK(c.t, "GetReplicateConfiguration", res.GetStatus(), err)
	return res.GetConfiguration()
}

// topologyOf renders a configuration's edges as "a>b,a>c".
func topologyOf(cfg *commonpb.ReplicateConfiguration) string {
	var out []string
	for _, e := range cfg.GetCrossClusterTopology() {
		out = append(out, e.GetSourceClusterId()+">"+e.GetTargetClusterId())
	}
	return strings.Join(out, ",")
}
