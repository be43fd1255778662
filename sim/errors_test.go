package sim

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestMalformedRequests: bad requests get Milvus error statuses with the
// codes Milvus uses, never a gRPC error or a crash.
func TestMalformedRequests(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "m"})
	cli := rawClient(t, c)
	ctx := tctx(t)
	createCollection(t, cli, "good", 4, 1, commonpb.ConsistencyLevel_Bounded, "L2")
	r := genRows(3, 4, 1, 1)
	insertRows(t, cli, "good", r, 4)

	t.Run("wrong dimension on insert", func(t *testing.T) {
		wrong := genRows(2, 5, 10, 1)
		fds := wrong.fieldData(5)
		reason := failed(t, codeParameterInvalid)(cli.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "good", FieldsData: fds, NumRows: 2}))
		if !strings.Contains(reason, "dim") {
			t.Fatalf("reason %q", reason)
		}
	})
	schema, _ := proto.Marshal(&schemapb.CollectionSchema{Name: "strict", Fields: testSchema("strict", 4, false).Fields})
	ok(t)(cli.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: "strict", Schema: schema}))
	ok(t)(cli.CreateIndex(ctx, &milvuspb.CreateIndexRequest{CollectionName: "strict", FieldName: "vec", ExtraParams: []*commonpb.KeyValuePair{kv("metric_type", "L2")}}))
	ok(t)(cli.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{CollectionName: "strict"}))
	bare, _ := proto.Marshal(&schemapb.CollectionSchema{Name: "bare", Fields: testSchema("bare", 4, false).Fields})
	ok(t)(cli.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: "bare", Schema: bare}))

	t.Run("unknown field on insert without dynamic field", func(t *testing.T) {
		fds := append(r.fieldData(4)[:6], &schemapb.FieldData{FieldName: "bogus", Type: schemapb.DataType_Int64,
			Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: []int64{1, 2, 3}}}})})
		reason := failed(t, codeParameterInvalid)(cli.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "strict", FieldsData: fds, NumRows: 3}))
		if !strings.Contains(reason, "bogus") {
			t.Fatalf("reason %q", reason)
		}
	})
	t.Run("missing field", func(t *testing.T) {
		failed(t, codeParameterInvalid)(cli.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "good", FieldsData: r.fieldData(4)[:2], NumRows: 3}))
	})
	t.Run("type mismatch", func(t *testing.T) {
		fds := r.fieldData(4)
		fds[2] = &schemapb.FieldData{FieldName: "age", Type: schemapb.DataType_VarChar, Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_StringData{StringData: &schemapb.StringArray{Data: []string{"a", "b", "c"}}}})}
		failed(t, codeParameterInvalid)(cli.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "good", FieldsData: fds, NumRows: 3}))
	})
	t.Run("row count mismatch", func(t *testing.T) {
		fds := r.fieldData(4)
		fds[2] = &schemapb.FieldData{FieldName: "age", Type: schemapb.DataType_Int64, Field: scalars(&schemapb.ScalarField{Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: []int64{1}}}})}
		failed(t, codeParameterInvalid)(cli.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "good", FieldsData: fds, NumRows: 3}))
	})
	t.Run("unknown collection", func(t *testing.T) {
		failed(t, codeCollectionNotFound)(cli.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "nope", FieldsData: r.fieldData(4), NumRows: 3}))
		failed(t, codeCollectionNotFound)(cli.Search(ctx, searchReq("nope", 3, "L2", "", nil, r.vecs[0])))
		failed(t, codeCollectionNotFound)(cli.Query(ctx, &milvuspb.QueryRequest{CollectionName: "nope", Expr: "id > 0"}))
		failed(t, codeCollectionNotFound)(cli.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{CollectionName: "nope"}))
		failedSt(t, codeCollectionNotFound)(cli.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{CollectionName: "nope"}))
		failed(t, codeCollectionNotFound)(cli.Delete(ctx, &milvuspb.DeleteRequest{CollectionName: "nope", Expr: "id in [1]"}))
	})
	t.Run("unknown database", func(t *testing.T) {
		failed(t, codeDatabaseNotFound)(cli.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{DbName: "nodb", CollectionName: "good"}))
	})
	t.Run("bad expressions", func(t *testing.T) {
		for _, expr := range []string{"id >", "nosuchfield_and == ", `name == "unterminated`, "id = 3", "age + 1 > 2", "(id > 1", "id in 5"} {
			reason := failed(t, codeParameterInvalid)(cli.Query(ctx, &milvuspb.QueryRequest{CollectionName: "good", Expr: expr}))
			if !strings.Contains(reason, "cannot parse expression") {
				t.Fatalf("%q: reason %q", expr, reason)
			}
			failed(t, codeParameterInvalid)(cli.Search(ctx, searchReq("good", 3, "L2", expr, nil, r.vecs[0])))
			failed(t, codeParameterInvalid)(cli.Delete(ctx, &milvuspb.DeleteRequest{CollectionName: "good", Expr: expr}))
		}
		reason := failed(t, codeParameterInvalid)(cli.Query(ctx, &milvuspb.QueryRequest{CollectionName: "strict", Expr: "nosuch > 1"}))
		if !strings.Contains(reason, "field nosuch not exist") {
			t.Fatalf("reason %q", reason)
		}
	})
	t.Run("search parameters", func(t *testing.T) {
		req := searchReq("good", 3, "IP", "", nil, r.vecs[0])
		reason := failed(t, codeParameterInvalid)(cli.Search(ctx, req))
		if !strings.Contains(reason, "metric type not match") {
			t.Fatalf("reason %q", reason)
		}
		req = searchReq("good", 3, "L2", "", nil, []float32{1, 2, 3})
		reason = failed(t, codeParameterInvalid)(cli.Search(ctx, req))
		if !strings.Contains(reason, "dimension mismatch") {
			t.Fatalf("reason %q", reason)
		}
		req = searchReq("good", 3, "L2", "", nil, r.vecs[0])
		req.SearchParams = []*commonpb.KeyValuePair{kv("anns_field", "vec")}
		failed(t, codeParameterInvalid)(cli.Search(ctx, req))
		req = searchReq("good", 0, "L2", "", nil, r.vecs[0])
		failed(t, codeParameterInvalid)(cli.Search(ctx, req))
		req = searchReq("good", 3, "L2", "", nil, r.vecs[0])
		req.SearchInput = &milvuspb.SearchRequest_PlaceholderGroup{PlaceholderGroup: []byte{0xff, 0x01, 0x02}}
		failed(t, codeParameterInvalid)(cli.Search(ctx, req))
		failed(t, codeFieldNotFound)(cli.Search(ctx, searchReq("strict", 3, "L2", "", []string{"nosuch"}, r.vecs[0])))
	})
	t.Run("not loaded and no index", func(t *testing.T) {
		failed(t, codeCollectionNotLoad)(cli.Search(ctx, searchReq("bare", 3, "L2", "", nil, r.vecs[0])))
		failed(t, codeCollectionNotLoad)(cli.Query(ctx, &milvuspb.QueryRequest{CollectionName: "bare", Expr: "id > 0"}))
		reason := failedSt(t, codeIndexNotFound)(cli.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{CollectionName: "bare"}))
		if !strings.Contains(reason, "create index") {
			t.Fatalf("reason %q", reason)
		}
	})
	t.Run("bad schemas", func(t *testing.T) {
		noPK, _ := proto.Marshal(&schemapb.CollectionSchema{Name: "x", Fields: testSchema("x", 4, false).Fields[1:]})
		failedSt(t, codeParameterInvalid)(cli.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: "x", Schema: noPK}))
		failedSt(t, codeParameterInvalid)(cli.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: "x", Schema: []byte{0xff}}))
		failedSt(t, codeParameterInvalid)(cli.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: "1bad", Schema: noPK}))
		other, _ := proto.Marshal(testSchema("good", 8, true))
		failedSt(t, codeParameterInvalid)(cli.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: "good", Schema: other}))
		same, _ := proto.Marshal(testSchema("good", 4, true))
		ok(t)(cli.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: "good", Schema: same}))
	})
	t.Run("empty delete expression", func(t *testing.T) {
		failed(t, codeParameterInvalid)(cli.Delete(ctx, &milvuspb.DeleteRequest{CollectionName: "good"}))
	})
	t.Run("unimplemented methods answer gRPC Unimplemented", func(t *testing.T) {
		_, err := cli.CreateCredential(ctx, &milvuspb.CreateCredentialRequest{Username: "u"})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("CreateCredential: %v", err)
		}
		_, err = cli.ManualCompaction(ctx, &milvuspb.ManualCompactionRequest{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("ManualCompaction: %v", err)
		}
	})
	t.Run("the collection still works", func(t *testing.T) {
		res := resp(t)(cli.Query(ctx, &milvuspb.QueryRequest{CollectionName: "good", OutputFields: []string{"count(*)"}})).(*milvuspb.QueryResults)
		if n := longs(res.GetFieldsData()[0])[0]; n != 3 {
			t.Fatalf("count %d", n)
		}
	})
}

// TestAuthentication: with users configured, calls without valid
// credentials are refused with gRPC Unauthenticated, as Milvus does.
func TestAuthentication(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "auth", Users: map[string]string{"root": "Milvus"}})
	cli := rawClient(t, c)
	ctx := tctx(t)
	if _, err := cli.GetVersion(ctx, &milvuspb.GetVersionRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no credentials: %v", err)
	}
	bad := metadata.AppendToOutgoingContext(ctx, "authorization", base64.StdEncoding.EncodeToString([]byte("root:wrong")))
	if _, err := cli.GetVersion(bad, &milvuspb.GetVersionRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong password: %v", err)
	}
	good := metadata.AppendToOutgoingContext(ctx, "authorization", base64.StdEncoding.EncodeToString([]byte("root:Milvus")))
	resp(t)(cli.GetVersion(good, &milvuspb.GetVersionRequest{}))
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sdk, err := milvusclient.New(sctx, &milvusclient.ClientConfig{Address: c.Addr(), Username: "root", Password: "Milvus"})
	if err != nil {
		t.Fatalf("sdk with credentials: %v", err)
	}
	defer sdk.Close(ctx)
	if _, err := sdk.ListCollections(ctx, milvusclient.NewListCollectionOption()); err != nil {
		t.Fatalf("sdk call: %v", err)
	}
	if _, err := milvusclient.New(sctx, &milvusclient.ClientConfig{Address: c.Addr(), Username: "root", Password: "nope"}); err == nil {
		t.Fatal("sdk with a wrong password connected")
	}
}

// TestCapacity: SearchConcurrency 1 and SearchMinLatency serialise reads.
func TestCapacity(t *testing.T) {
	const lat = 40 * time.Millisecond
	c := startCluster(t, Options{ClusterID: "cap", SearchConcurrency: 1, SearchMinLatency: lat})
	cli := rawClient(t, c)
	createCollection(t, cli, "cap", 4, 1, commonpb.ConsistencyLevel_Eventually, "L2")
	r := genRows(10, 4, 1, 1)
	insertRows(t, cli, "cap", r, 4)
	start := time.Now()
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			req := searchReq("cap", 3, "L2", "", nil, r.vecs[i])
			req.ConsistencyLevel = commonpb.ConsistencyLevel_Eventually
			res, err := cli.Search(tctx(t), req)
			if err == nil && res.GetStatus().GetCode() != 0 {
				err = status.Error(codes.Internal, res.GetStatus().GetReason())
			}
			errs <- err
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Four searches that cannot overlap, each at least lat long.
	if el := time.Since(start); el < 4*lat {
		t.Fatalf("4 serialised searches took %v, less than %v", el, 4*lat)
	}
}
