package sim

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	sdkcol "github.com/milvus-io/milvus/client/v2/column"
	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
)

// TestCollectionLifecycle walks a collection through its life with the Go
// SDK: database, create with shards and consistency level, describe
// (channels), partitions, aliases, rename, load/release, drop.
func TestCollectionLifecycle(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "life", PChannels: 3})
	cli := sdkClient(t, c)
	ctx := tctx(t)
	if err := cli.CreateDatabase(ctx, milvusclient.NewCreateDatabaseOption("db1")); err != nil {
		t.Fatal(err)
	}
	dbs, err := cli.ListDatabase(ctx, milvusclient.NewListDatabaseOption())
	if err != nil || !slices.Contains(dbs, "db1") || !slices.Contains(dbs, "default") {
		t.Fatalf("databases %v %v", dbs, err)
	}
	if err := cli.UseDatabase(ctx, milvusclient.NewUseDatabaseOption("db1")); err != nil {
		t.Fatal(err)
	}
	const dim = 8
	schema := entity.NewSchema().WithName("life").
		WithField(entity.NewField().WithName("pk").WithDataType(entity.FieldTypeVarChar).WithMaxLength(20).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("v").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))
	err = cli.CreateCollection(ctx, milvusclient.NewCreateCollectionOption("life", schema).WithShardNum(4).
		WithConsistencyLevel(entity.ClSession).
		WithIndexOptions(milvusclient.NewCreateIndexOption("life", "v", index.NewHNSWIndex(entity.COSINE, 16, 64))))
	if err != nil {
		t.Fatal(err)
	}
	coll, err := cli.DescribeCollection(ctx, milvusclient.NewDescribeCollectionOption("life"))
	if err != nil {
		t.Fatal(err)
	}
	if coll.ShardNum != 4 || coll.ConsistencyLevel != entity.ClSession || len(coll.VirtualChannels) != 4 || len(coll.PhysicalChannels) != 4 {
		t.Fatalf("describe: shards %d level %v vch %v pch %v", coll.ShardNum, coll.ConsistencyLevel, coll.VirtualChannels, coll.PhysicalChannels)
	}
	for i, p := range coll.PhysicalChannels {
		if !strings.HasPrefix(p, "life-rootcoord-dml_") || coll.VirtualChannels[i] != fmt.Sprintf("%s_%dv%d", p, coll.ID, i) {
			t.Fatalf("channel names: pch %s vch %s", p, coll.VirtualChannels[i])
		}
	}
	if coll.Schema.PKFieldName() != "pk" || coll.Name != "life" {
		t.Fatalf("schema %+v", coll.Schema)
	}
	idx, err := cli.DescribeIndex(ctx, milvusclient.NewDescribeIndexOption("life", "v"))
	if err != nil || idx.Params()["metric_type"] != "COSINE" || idx.Params()["index_type"] != "HNSW" {
		t.Fatalf("describe index: %v %v", idx, err)
	}
	// Not visible from the default database.
	if err := cli.UseDatabase(ctx, milvusclient.NewUseDatabaseOption("default")); err != nil {
		t.Fatal(err)
	}
	if has, err := cli.HasCollection(ctx, milvusclient.NewHasCollectionOption("life")); err != nil || has {
		t.Fatalf("has in default db: %v %v", has, err)
	}
	if err := cli.UseDatabase(ctx, milvusclient.NewUseDatabaseOption("db1")); err != nil {
		t.Fatal(err)
	}
	if err := cli.CreatePartition(ctx, milvusclient.NewCreatePartitionOption("life", "p1")); err != nil {
		t.Fatal(err)
	}
	parts, err := cli.ListPartitions(ctx, milvusclient.NewListPartitionOption("life"))
	if err != nil || fmt.Sprint(parts) != "[_default p1]" {
		t.Fatalf("partitions %v %v", parts, err)
	}
	load, err := cli.LoadCollection(ctx, milvusclient.NewLoadCollectionOption("life"))
	if err != nil {
		t.Fatal(err)
	}
	if err := load.Await(ctx); err != nil {
		t.Fatal(err)
	}
	r := genRows(20, dim, 0, 3)
	keys := make([]string, len(r.ids))
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
	}
	if _, err := cli.Insert(ctx, milvusclient.NewColumnBasedInsertOption("life").WithVarcharColumn("pk", keys[:10]).WithFloatVectorColumn("v", dim, r.vecs[:10])); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Insert(ctx, milvusclient.NewColumnBasedInsertOption("life").WithPartition("p1").WithVarcharColumn("pk", keys[10:]).WithFloatVectorColumn("v", dim, r.vecs[10:])); err != nil {
		t.Fatal(err)
	}
	sets, err := cli.Search(ctx, milvusclient.NewSearchOption("life", 20, []entity.Vector{entity.FloatVector(r.vecs[15])}).WithPartitions("p1").WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		t.Fatal(err)
	}
	got := sets[0].IDs.(*sdkcol.ColumnVarChar).Data()
	if len(got) != 10 || got[0] != "k15" {
		t.Fatalf("partition search: %v", got)
	}
	for _, k := range got {
		if k < "k10" {
			t.Fatalf("partition search returned %s from _default", k)
		}
	}
	if err := cli.CreateAlias(ctx, milvusclient.NewCreateAliasOption("life", "life_alias")); err != nil {
		t.Fatal(err)
	}
	rs, err := cli.Query(ctx, milvusclient.NewQueryOption("life_alias").WithOutputFields("count(*)").WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := rs.GetColumn("count(*)").GetAsInt64(0); n != 20 {
		t.Fatalf("count through alias %d", n)
	}
	if err := cli.ReleasePartitions(ctx, milvusclient.NewReleasePartitionsOptions("life", "p1")); err != nil {
		t.Fatal(err)
	}
	if err := cli.DropPartition(ctx, milvusclient.NewDropPartitionOption("life", "p1")); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, c)
	stats := resp(t)(raw.GetCollectionStatistics(ctx, &milvuspb.GetCollectionStatisticsRequest{DbName: "db1", CollectionName: "life"})).(*milvuspb.GetCollectionStatisticsResponse)
	if stats.GetStats()[0].GetValue() != "10" {
		t.Fatalf("row_count after dropping p1: %v", stats.GetStats())
	}
	if err := cli.RenameCollection(ctx, milvusclient.NewRenameCollectionOption("life", "life2")); err != nil {
		t.Fatal(err)
	}
	names, err := cli.ListCollections(ctx, milvusclient.NewListCollectionOption())
	if err != nil || fmt.Sprint(names) != "[life2]" {
		t.Fatalf("collections after rename %v %v", names, err)
	}
	alias, err := cli.DescribeAlias(ctx, milvusclient.NewDescribeAliasOption("life_alias"))
	if err != nil || alias.CollectionName != "life2" {
		t.Fatalf("alias after rename %v %v", alias, err)
	}
	if err := cli.ReleaseCollection(ctx, milvusclient.NewReleaseCollectionOption("life2")); err != nil {
		t.Fatal(err)
	}
	state, err := cli.GetLoadState(ctx, milvusclient.NewGetLoadStateOption("life2"))
	if err != nil || state.State != entity.LoadStateNotLoad {
		t.Fatalf("load state %v %v", state, err)
	}
	failed(t, codeCollectionNotLoad)(raw.Query(ctx, &milvuspb.QueryRequest{DbName: "db1", CollectionName: "life2", Expr: `pk == "k00"`}))
	if err := cli.DropDatabase(ctx, milvusclient.NewDropDatabaseOption("db1")); err == nil {
		t.Fatal("dropped a non-empty database")
	}
	if err := cli.DropAlias(ctx, milvusclient.NewDropAliasOption("life_alias")); err != nil {
		t.Fatal(err)
	}
	if err := cli.DropCollection(ctx, milvusclient.NewDropCollectionOption("life2")); err != nil {
		t.Fatal(err)
	}
	if err := cli.DropDatabase(ctx, milvusclient.NewDropDatabaseOption("db1")); err != nil {
		t.Fatal(err)
	}
}

// TestConsistencyLevels: Strong waits for the time tick, Eventually does
// not wait, a guarantee timestamp that is never reached times out with a
// Milvus error status, and MutationResult timestamps are increasing hybrid
// timestamps close to the wall clock.
func TestConsistencyLevels(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "cons", TimeTickInterval: 30 * time.Millisecond, GuaranteeTimeout: 200 * time.Millisecond})
	cli := rawClient(t, c)
	ctx := tctx(t)
	createCollection(t, cli, "cons", 4, 2, commonpb.ConsistencyLevel_Strong, "L2")
	r := genRows(4, 4, 1, 1)
	res1 := insertRows(t, cli, "cons", &rows{ids: r.ids[:2], vecs: r.vecs[:2], ages: r.ages[:2], scores: r.scores[:2], names: r.names[:2], flags: r.flags[:2], metas: r.metas[:2]}, 4)
	res2 := insertRows(t, cli, "cons", &rows{ids: r.ids[2:], vecs: r.vecs[2:], ages: r.ages[2:], scores: r.scores[2:], names: r.names[2:], flags: r.flags[2:], metas: r.metas[2:]}, 4)
	if res2.Timestamp <= res1.Timestamp {
		t.Fatalf("mutation timestamps not increasing: %d then %d", res1.Timestamp, res2.Timestamp)
	}
	if d := time.Since(PhysicalTime(res2.Timestamp)); d < -time.Second || d > 5*time.Second {
		t.Fatalf("timestamp %d is %v away from now", res2.Timestamp, d)
	}
	alloc := resp(t)(cli.AllocTimestamp(ctx, &milvuspb.AllocTimestampRequest{})).(*milvuspb.AllocTimestampResponse)
	if alloc.GetTimestamp() <= res2.Timestamp {
		t.Fatalf("AllocTimestamp %d not after the last write %d", alloc.GetTimestamp(), res2.Timestamp)
	}
	count := func(level commonpb.ConsistencyLevel, g uint64, useDefault bool) (int64, *commonpb.Status) {
		res, err := cli.Query(ctx, &milvuspb.QueryRequest{CollectionName: "cons", OutputFields: []string{"count(*)"},
			ConsistencyLevel: level, GuaranteeTimestamp: g, UseDefaultConsistency: useDefault})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetStatus().GetCode() != 0 {
			return -1, res.GetStatus()
		}
		return longs(res.GetFieldsData()[0])[0], nil
	}
	for _, tc := range []struct {
		name  string
		level commonpb.ConsistencyLevel
		g     uint64
		def   bool
	}{
		{"strong", commonpb.ConsistencyLevel_Strong, 0, false},
		{"session with write ts", commonpb.ConsistencyLevel_Session, res2.Timestamp, false},
		{"customized 0 means now", commonpb.ConsistencyLevel_Customized, 0, false},
		{"bounded", commonpb.ConsistencyLevel_Bounded, 0, false},
		{"eventually", commonpb.ConsistencyLevel_Eventually, 0, false},
		{"collection default", commonpb.ConsistencyLevel_Eventually, 0, true},
	} {
		if n, st := count(tc.level, tc.g, tc.def); n != 4 {
			t.Fatalf("%s: count %d %v", tc.name, n, st)
		}
	}
	// A guarantee in the future is reached only by a later time tick; one far
	// in the future times out.
	future := ComposeTS(time.Now().Add(100*time.Millisecond), 0)
	if n, st := count(commonpb.ConsistencyLevel_Customized, future, false); n != 4 {
		t.Fatalf("near-future guarantee: %v", st)
	}
	if time.Now().Before(PhysicalTime(future)) {
		t.Fatalf("read with guarantee %v returned at %v, before the guarantee", PhysicalTime(future), time.Now())
	}
	_, st := count(commonpb.ConsistencyLevel_Customized, ComposeTS(time.Now().Add(time.Hour), 0), false)
	if st == nil || st.GetCode() != codeTimeout || !strings.Contains(st.GetReason(), "guarantee timestamp") {
		t.Fatalf("far-future guarantee: %v", st)
	}
	// Search honours it too.
	req := searchReq("cons", 2, "L2", "", nil, r.vecs[0])
	req.ConsistencyLevel = commonpb.ConsistencyLevel_Session
	req.GuaranteeTimestamp = ComposeTS(time.Now().Add(time.Hour), 0)
	failed(t, codeTimeout)(cli.Search(ctx, req))
}
