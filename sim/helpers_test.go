package sim

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand"
	"strconv"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

func startCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.TimeTickInterval == 0 {
		opts.TimeTickInterval = 20 * time.Millisecond
	}
	c, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start %s: %v", opts.ClusterID, err)
	}
	t.Cleanup(c.Stop)
	return c
}

func rawClient(t testing.TB, c *Cluster) milvuspb.MilvusServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return milvuspb.NewMilvusServiceClient(conn)
}

func sdkClient(t testing.TB, c *Cluster) *milvusclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := milvusclient.New(ctx, &milvusclient.ClientConfig{Address: c.Addr()})
	if err != nil {
		t.Fatalf("sdk connect: %v", err)
	}
	t.Cleanup(func() { cli.Close(context.Background()) })
	return cli
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type statusHolder interface{ GetStatus() *commonpb.Status }

// ok(t)(cli.Call(...)) fails the test unless the call returned a success
// status.
func ok(t testing.TB) func(*commonpb.Status, error) {
	return func(st *commonpb.Status, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("rpc error: %v", err)
		}
		if st.GetCode() != 0 || st.GetErrorCode() != commonpb.ErrorCode_Success {
			t.Fatalf("milvus error %d: %s", st.GetCode(), st.GetReason())
		}
	}
}

// resp(t)(cli.Call(...)) returns the response of a successful call.
func resp(t testing.TB) func(statusHolder, error) statusHolder {
	return func(r statusHolder, err error) statusHolder {
		t.Helper()
		ok(t)(r.GetStatus(), err)
		return r
	}
}

// failed(t, code)(cli.Call(...)) asserts a Milvus error status (not a gRPC
// error) with the given code and returns its reason.
func failed(t testing.TB, code int32) func(statusHolder, error) string {
	return func(r statusHolder, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("want a milvus error status, got gRPC error %v", err)
		}
		wantErr(t, r.GetStatus(), nil, code)
		return r.GetStatus().GetReason()
	}
}

// failedSt is failed for calls that return a bare status.
func failedSt(t testing.TB, code int32) func(*commonpb.Status, error) string {
	return func(st *commonpb.Status, err error) string {
		t.Helper()
		wantErr(t, st, err, code)
		return st.GetReason()
	}
}

// wantErr asserts a Milvus error status (not a gRPC error) with code.
func wantErr(t testing.TB, st *commonpb.Status, err error, code int32) {
	t.Helper()
	if err != nil {
		t.Fatalf("want a milvus error status, got gRPC error %v", err)
	}
	if st.GetCode() != code {
		t.Fatalf("want milvus error code %d, got %d (%q)", code, st.GetCode(), st.GetReason())
	}
	if st.GetErrorCode() == commonpb.ErrorCode_Success {
		t.Fatalf("legacy error_code is Success on an error status: %v", st)
	}
}

func kv(k, v string) *commonpb.KeyValuePair { return &commonpb.KeyValuePair{Key: k, Value: v} }

// testSchema: id int64 pk, vec float vector, age int64, score double, name
// varchar, flag bool.
func testSchema(name string, dim int, dynamic bool) *schemapb.CollectionSchema {
	return &schemapb.CollectionSchema{
		Name:               name,
		EnableDynamicField: dynamic,
		Fields: []*schemapb.FieldSchema{
			{Name: "id", DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
			{Name: "vec", DataType: schemapb.DataType_FloatVector, TypeParams: []*commonpb.KeyValuePair{kv("dim", strconv.Itoa(dim))}},
			{Name: "age", DataType: schemapb.DataType_Int64},
			{Name: "score", DataType: schemapb.DataType_Double},
			{Name: "name", DataType: schemapb.DataType_VarChar, TypeParams: []*commonpb.KeyValuePair{kv("max_length", "64")}},
			{Name: "flag", DataType: schemapb.DataType_Bool},
		},
	}
}

func createCollection(t testing.TB, cli milvuspb.MilvusServiceClient, name string, dim int, shards int32, level commonpb.ConsistencyLevel, metric string) {
	t.Helper()
	ctx := tctx(t)
	b, err := proto.Marshal(testSchema(name, dim, true))
	if err != nil {
		t.Fatal(err)
	}
	ok(t)(cli.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: name, Schema: b, ShardsNum: shards, ConsistencyLevel: level}))
	ok(t)(cli.CreateIndex(ctx, &milvuspb.CreateIndexRequest{CollectionName: name, FieldName: "vec",
		ExtraParams: []*commonpb.KeyValuePair{kv("index_type", "FLAT"), kv("metric_type", metric)}}))
	ok(t)(cli.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{CollectionName: name}))
}

type rows struct {
	ids    []int64
	vecs   [][]float32
	ages   []int64
	scores []float64
	names  []string
	flags  []bool
	metas  [][]byte
}

func genRows(n, dim int, firstID int64, seed int64) *rows {
	rng := rand.New(rand.NewSource(seed))
	r := &rows{}
	for i := 0; i < n; i++ {
		id := firstID + int64(i)
		v := make([]float32, dim)
		for j := range v {
			v[j] = rng.Float32()*2 - 1
		}
		r.ids = append(r.ids, id)
		r.vecs = append(r.vecs, v)
		r.ages = append(r.ages, id%50)
		r.scores = append(r.scores, float64(id)/10)
		r.names = append(r.names, "n"+strconv.FormatInt(id, 10))
		r.flags = append(r.flags, id%2 == 0)
		r.metas = append(r.metas, []byte(`{"color":"`+[]string{"red", "green", "blue"}[id%3]+`","rank":`+strconv.FormatInt(id%7, 10)+`}`))
	}
	return r
}

func (r *rows) fieldData(dim int) []*schemapb.FieldData {
	var flat []float32
	for _, v := range r.vecs {
		flat = append(flat, v...)
	}
	return []*schemapb.FieldData{
		{FieldName: "id", Type: schemapb.DataType_Int64, Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: r.ids}}})},
		{FieldName: "vec", Type: schemapb.DataType_FloatVector, Field: &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{Dim: int64(dim), Data: &schemapb.VectorField_FloatVector{FloatVector: &schemapb.FloatArray{Data: flat}}}}},
		{FieldName: "age", Type: schemapb.DataType_Int64, Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: r.ages}}})},
		{FieldName: "score", Type: schemapb.DataType_Double, Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_DoubleData{DoubleData: &schemapb.DoubleArray{Data: r.scores}}})},
		{FieldName: "name", Type: schemapb.DataType_VarChar, Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_StringData{StringData: &schemapb.StringArray{Data: r.names}}})},
		{FieldName: "flag", Type: schemapb.DataType_Bool, Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_BoolData{BoolData: &schemapb.BoolArray{Data: r.flags}}})},
		{FieldName: dynamicFieldName, Type: schemapb.DataType_JSON, IsDynamic: true, Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_JsonData{JsonData: &schemapb.JSONArray{Data: r.metas}}})},
	}
}

func insertRows(t testing.TB, cli milvuspb.MilvusServiceClient, coll string, r *rows, dim int) *milvuspb.MutationResult {
	t.Helper()
	return resp(t)(cli.Insert(tctx(t), &milvuspb.InsertRequest{CollectionName: coll, FieldsData: r.fieldData(dim), NumRows: uint32(len(r.ids))})).(*milvuspb.MutationResult)
}

func placeholder(vs ...[]float32) []byte {
	ph := &commonpb.PlaceholderValue{Tag: "$0", Type: commonpb.PlaceholderType_FloatVector}
	for _, v := range vs {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		ph.Values = append(ph.Values, b)
	}
	out, _ := proto.Marshal(&commonpb.PlaceholderGroup{Placeholders: []*commonpb.PlaceholderValue{ph}})
	return out
}

func searchReq(coll string, topK int, metric, filter string, outputs []string, qs ...[]float32) *milvuspb.SearchRequest {
	return &milvuspb.SearchRequest{
		CollectionName: coll,
		Dsl:            filter,
		DslType:        commonpb.DslType_BoolExprV1,
		SearchInput:    &milvuspb.SearchRequest_PlaceholderGroup{PlaceholderGroup: placeholder(qs...)},
		OutputFields:   outputs,
		Nq:             int64(len(qs)),
		SearchParams: []*commonpb.KeyValuePair{kv("anns_field", "vec"), kv("topk", strconv.Itoa(topK)), kv("metric_type", metric),
			kv("params", "{}"), kv("round_decimal", "-1")},
		ConsistencyLevel: commonpb.ConsistencyLevel_Strong,
	}
}

func longs(fd *schemapb.FieldData) []int64 { return fd.GetScalars().GetLongData().GetData() }

func fieldByName(fds []*schemapb.FieldData, name string) *schemapb.FieldData {
	for _, fd := range fds {
		if fd.GetFieldName() == name {
			return fd
		}
	}
	return nil
}
