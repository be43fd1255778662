package sim

import (
	"fmt"
	"strings"
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	sdkcol "github.com/milvus-io/milvus/client/v2/column"
	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
)

func queryIDs(t *testing.T, cli milvuspb.MilvusServiceClient, coll, expr string, tmpl map[string]*schemapb.TemplateValue) []int64 {
	t.Helper()
	res := resp(t)(cli.Query(tctx(t), &milvuspb.QueryRequest{CollectionName: coll, Expr: expr, ExprTemplateValues: tmpl,
		ConsistencyLevel: commonpb.ConsistencyLevel_Strong})).(*milvuspb.QueryResults)
	ids := longs(fieldByName(res.GetFieldsData(), "id"))
	return ids
}

// TestQueryFilters runs filter expressions through Query and compares with
// the same predicate evaluated in Go.
func TestQueryFilters(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "q"})
	cli := rawClient(t, c)
	createCollection(t, cli, "qf", 4, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	r := genRows(90, 4, 1, 5)
	insertRows(t, cli, "qf", r, 4)
	color := func(i int) string { return []string{"red", "green", "blue"}[r.ids[i]%3] }
	cases := []struct {
		expr string
		want func(i int) bool
	}{
		{"id == 5", func(i int) bool { return r.ids[i] == 5 }},
		{"id != 5 and id < 8", func(i int) bool { return r.ids[i] != 5 && r.ids[i] < 8 }},
		{"age <= 3", func(i int) bool { return r.ages[i] <= 3 }},
		{"age > 45 || age < 2", func(i int) bool { return r.ages[i] > 45 || r.ages[i] < 2 }},
		{"10 < id < 15", func(i int) bool { return r.ids[i] > 10 && r.ids[i] < 15 }},
		{"20 >= id >= 18", func(i int) bool { return r.ids[i] >= 18 && r.ids[i] <= 20 }},
		{"id in [1, 2, 3, 99]", func(i int) bool { return r.ids[i] >= 1 && r.ids[i] <= 3 }},
		{"id not in [1, 2, 3] and id < 6", func(i int) bool { return r.ids[i] > 3 && r.ids[i] < 6 }},
		{`name == "n7" or name == 'n8'`, func(i int) bool { return r.names[i] == "n7" || r.names[i] == "n8" }},
		{`name in ["n10", 'n11']`, func(i int) bool { return r.names[i] == "n10" || r.names[i] == "n11" }},
		{`name like "n1%"`, func(i int) bool { return strings.HasPrefix(r.names[i], "n1") }},
		{"flag == true and id < 10", func(i int) bool { return r.flags[i] && r.ids[i] < 10 }},
		{"flag and id < 10", func(i int) bool { return r.flags[i] && r.ids[i] < 10 }},
		{"not flag and id < 10", func(i int) bool { return !r.flags[i] && r.ids[i] < 10 }},
		{"not (id < 80)", func(i int) bool { return r.ids[i] >= 80 }},
		{"score > 8.45", func(i int) bool { return r.scores[i] > 8.45 }},
		{"score >= 8 and score <= 8.2", func(i int) bool { return r.scores[i] >= 8 && r.scores[i] <= 8.2 }},
		{"(id < 5 or id > 85) and not (id == 2)", func(i int) bool { return (r.ids[i] < 5 || r.ids[i] > 85) && r.ids[i] != 2 }},
		{"id < 3 or id > 87 and age == 38", func(i int) bool { return r.ids[i] < 3 || (r.ids[i] > 87 && r.ages[i] == 38) }},
		{`color == "red" and id < 20`, func(i int) bool { return color(i) == "red" && r.ids[i] < 20 }},
		{`$meta["rank"] >= 5 && id < 30`, func(i int) bool { return r.ids[i]%7 >= 5 && r.ids[i] < 30 }},
		{`rank in [0, 6] and color != "blue" and id < 40`, func(i int) bool {
			return (r.ids[i]%7 == 0 || r.ids[i]%7 == 6) && color(i) != "blue" && r.ids[i] < 40
		}},
		{"missing_key == 1", func(i int) bool { return false }},
		{"id > -5 and id <= 2", func(i int) bool { return r.ids[i] <= 2 }},
		{"age == 3.0", func(i int) bool { return r.ages[i] == 3 }},
	}
	for _, tc := range cases {
		t.Run(tc.expr, func(t *testing.T) {
			got := queryIDs(t, cli, "qf", tc.expr, nil)
			var want []int64
			for i := range r.ids {
				if tc.want(i) {
					want = append(want, r.ids[i])
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s: got %v want %v", tc.expr, got, want)
			}
		})
	}
	t.Run("template", func(t *testing.T) {
		got := queryIDs(t, cli, "qf", "id in {ids} and age > {a}", map[string]*schemapb.TemplateValue{
			"ids": {Val: &schemapb.TemplateValue_ArrayVal{ArrayVal: &schemapb.TemplateArrayValue{Data: &schemapb.TemplateArrayValue_LongData{LongData: &schemapb.LongArray{Data: []int64{1, 2, 3, 4}}}}}},
			"a":   {Val: &schemapb.TemplateValue_Int64Val{Int64Val: 2}},
		})
		if fmt.Sprint(got) != "[3 4]" {
			t.Fatalf("template query: %v", got)
		}
	})
}

// TestQueryLimitOffsetCount covers pagination (pk order), count(*) with and
// without a filter, output fields and the empty-expression rule.
func TestQueryLimitOffsetCount(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "q2"})
	cli := rawClient(t, c)
	createCollection(t, cli, "pg", 4, 2, commonpb.ConsistencyLevel_Strong, "COSINE")
	r := genRows(50, 4, 100, 9)
	insertRows(t, cli, "pg", r, 4)
	ctx := tctx(t)
	res := resp(t)(cli.Query(ctx, &milvuspb.QueryRequest{CollectionName: "pg", OutputFields: []string{"name", "color"},
		QueryParams: []*commonpb.KeyValuePair{kv("limit", "5"), kv("offset", "10")}})).(*milvuspb.QueryResults)
	if got := fmt.Sprint(longs(fieldByName(res.GetFieldsData(), "id"))); got != "[110 111 112 113 114]" {
		t.Fatalf("limit 5 offset 10: %v", got)
	}
	if got := fieldByName(res.GetFieldsData(), "name").GetScalars().GetStringData().GetData(); fmt.Sprint(got) != "[n110 n111 n112 n113 n114]" {
		t.Fatalf("names %v", got)
	}
	meta := fieldByName(res.GetFieldsData(), dynamicFieldName)
	if meta == nil || !meta.GetIsDynamic() || string(meta.GetScalars().GetJsonData().GetData()[0]) != `{"color":"blue"}` {
		t.Fatalf("dynamic output: %v", meta)
	}
	if fmt.Sprint(res.GetOutputFields()) != "[id name color]" {
		t.Fatalf("output_fields %v", res.GetOutputFields())
	}
	for _, tc := range []struct {
		expr string
		want int64
	}{{"", 50}, {"age < 10", 0}, {"id >= 140", 10}} {
		res := resp(t)(cli.Query(ctx, &milvuspb.QueryRequest{CollectionName: "pg", Expr: tc.expr, OutputFields: []string{"count(*)"}})).(*milvuspb.QueryResults)
		want := int64(0)
		for i := range r.ids {
			if tc.expr == "" || tc.expr == "age < 10" && r.ages[i] < 10 || tc.expr == "id >= 140" && r.ids[i] >= 140 {
				want++
			}
		}
		if got := longs(res.GetFieldsData()[0]); len(got) != 1 || got[0] != want || res.GetOutputFields()[0] != "count(*)" {
			t.Fatalf("count(*) where %q: %v want %d", tc.expr, got, want)
		}
	}
	reason := failed(t, codeParameterInvalid)(cli.Query(ctx, &milvuspb.QueryRequest{CollectionName: "pg"}))
	if !strings.Contains(reason, "empty expression should be used with limit") {
		t.Fatalf("reason %q", reason)
	}
}

// TestDeleteUpsertThroughSDK deletes by ids and by filter, upserts, and
// checks counts and values through the Go SDK.
func TestDeleteUpsertThroughSDK(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "d"})
	cli := sdkClient(t, c)
	ctx := tctx(t)
	const name, dim = "du", 8
	if err := cli.CreateCollection(ctx, milvusclient.SimpleCreateCollectionOptions(name, dim).WithAutoID(false).WithShardNum(2)); err != nil {
		t.Fatal(err)
	}
	r := genRows(40, dim, 1, 11)
	if _, err := cli.Insert(ctx, milvusclient.NewColumnBasedInsertOption(name).WithInt64Column("id", r.ids).
		WithFloatVectorColumn("vector", dim, r.vecs).WithInt64Column("age", r.ages)); err != nil {
		t.Fatal(err)
	}
	count := func() int64 {
		t.Helper()
		rs, err := cli.Query(ctx, milvusclient.NewQueryOption(name).WithOutputFields("count(*)").WithConsistencyLevel(entity.ClStrong))
		if err != nil {
			t.Fatal(err)
		}
		v, err := rs.GetColumn("count(*)").GetAsInt64(0)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if n := count(); n != 40 {
		t.Fatalf("count after insert %d", n)
	}
	del, err := cli.Delete(ctx, milvusclient.NewDeleteOption(name).WithInt64IDs("id", []int64{1, 2, 3}))
	if err != nil || del.DeleteCount != 3 {
		t.Fatalf("delete by ids: %v %v", del, err)
	}
	del, err = cli.Delete(ctx, milvusclient.NewDeleteOption(name).WithExpr("age >= 30"))
	if err != nil {
		t.Fatal(err)
	}
	wantLeft := int64(0)
	for i := range r.ids {
		if r.ids[i] > 3 && r.ages[i] < 30 {
			wantLeft++
		}
	}
	if n := count(); n != wantLeft || del.DeleteCount != 37-wantLeft {
		t.Fatalf("after delete by filter: count %d (want %d), deleted %d", n, wantLeft, del.DeleteCount)
	}
	// Upsert: id 4 changes age, id 1 (deleted) comes back.
	up, err := cli.Upsert(ctx, milvusclient.NewColumnBasedInsertOption(name).WithInt64Column("id", []int64{4, 1}).
		WithFloatVectorColumn("vector", dim, r.vecs[:2]).WithInt64Column("age", []int64{999, 998}))
	if err != nil || up.UpsertCount != 2 {
		t.Fatalf("upsert: %v %v", up, err)
	}
	if n := count(); n != wantLeft+1 {
		t.Fatalf("count after upsert %d want %d", n, wantLeft+1)
	}
	rs, err := cli.Get(ctx, milvusclient.NewQueryOption(name).WithIDs(sdkcol.NewColumnInt64("id", []int64{4, 1})).WithOutputFields("age").WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		t.Fatal(err)
	}
	// age is a dynamic key here (SimpleCreateCollectionOptions enables the
	// dynamic field), so the SDK hands it back as a dynamic column.
	ids := rs.GetColumn("id").(*sdkcol.ColumnInt64).Data()
	got := map[int64]int64{}
	for i := range ids {
		age, err := rs.GetColumn("age").GetAsInt64(i)
		if err != nil {
			t.Fatal(err)
		}
		got[ids[i]] = age
	}
	if len(got) != 2 || got[4] != 999 || got[1] != 998 {
		t.Fatalf("after upsert: %v", got)
	}
	// A search never returns a deleted or superseded row.
	sets, err := cli.Search(ctx, milvusclient.NewSearchOption(name, 100, []entity.Vector{entity.FloatVector(r.vecs[1])}).WithConsistencyLevel(entity.ClStrong).WithOutputFields("age"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for _, id := range sets[0].IDs.(*sdkcol.ColumnInt64).Data() {
		if seen[id] {
			t.Fatalf("id %d returned twice", id)
		}
		seen[id] = true
		if id == 2 || id == 3 {
			t.Fatalf("deleted id %d returned", id)
		}
	}
	if int64(len(seen)) != wantLeft+1 {
		t.Fatalf("search saw %d rows, want %d", len(seen), wantLeft+1)
	}
}

// TestAutoIDInsert: autoID collections get distinct increasing ids.
func TestAutoIDInsert(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "auto"})
	cli := sdkClient(t, c)
	ctx := tctx(t)
	if err := cli.CreateCollection(ctx, milvusclient.SimpleCreateCollectionOptions("auto", 4)); err != nil {
		t.Fatal(err)
	}
	r := genRows(10, 4, 0, 1)
	res, err := cli.Insert(ctx, milvusclient.NewColumnBasedInsertOption("auto").WithFloatVectorColumn("vector", 4, r.vecs).
		WithColumns(sdkcol.NewColumnVarChar("tag", r.names)))
	if err != nil {
		t.Fatal(err)
	}
	ids := res.IDs.(*sdkcol.ColumnInt64).Data()
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("auto ids not increasing: %v", ids)
		}
	}
	rs, err := cli.Query(ctx, milvusclient.NewQueryOption("auto").WithFilter(`tag == "n3"`).WithOutputFields("tag").WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		t.Fatal(err)
	}
	if rs.ResultCount != 1 || rs.GetColumn("id").(*sdkcol.ColumnInt64).Data()[0] != ids[3] {
		t.Fatalf("dynamic field query: %d rows", rs.ResultCount)
	}
}
