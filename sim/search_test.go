package sim

import (
	"fmt"
	"math"
	"sort"
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	sdkcol "github.com/milvus-io/milvus/client/v2/column"
	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
)

// bruteForce is the test's own exact search, in float64, independent of the
// simulator's kernels.
func bruteForce(metric string, q []float32, ids []int64, vecs [][]float32, keep func(i int) bool, k int) ([]int64, []float64) {
	type hit struct {
		id    int64
		score float64
	}
	var hits []hit
	norm := func(v []float32) float64 {
		var s float64
		for _, x := range v {
			s += float64(x) * float64(x)
		}
		return math.Sqrt(s)
	}
	for i, v := range vecs {
		if keep != nil && !keep(i) {
			continue
		}
		var s float64
		switch metric {
		case "L2":
			for j := range v {
				d := float64(q[j]) - float64(v[j])
				s += d * d
			}
		case "IP", "COSINE":
			for j := range v {
				s += float64(q[j]) * float64(v[j])
			}
			if metric == "COSINE" {
				s /= norm(q) * norm(v)
			}
		}
		hits = append(hits, hit{ids[i], s})
	}
	sort.SliceStable(hits, func(a, b int) bool {
		if metric == "L2" {
			return hits[a].score < hits[b].score
		}
		return hits[a].score > hits[b].score
	})
	if len(hits) > k {
		hits = hits[:k]
	}
	var outIDs []int64
	var scores []float64
	for _, h := range hits {
		outIDs = append(outIDs, h.id)
		scores = append(scores, h.score)
	}
	return outIDs, scores
}

// TestSearchMatchesBruteForce inserts random vectors through the Go SDK and
// checks that Search returns the ids and distances an independent exact
// computation returns, for every metric, several queries at once, with and
// without a filter, with an offset.
func TestSearchMatchesBruteForce(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "s"})
	cli := sdkClient(t, c)
	ctx := tctx(t)
	const dim, n, k = 16, 600, 7
	r := genRows(n, dim, 1000, 42)
	for _, metric := range []string{"L2", "IP", "COSINE"} {
		t.Run(metric, func(t *testing.T) {
			name := "brute_" + metric
			schema := entity.NewSchema().WithName(name).
				WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
				WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(dim)).
				WithField(entity.NewField().WithName("age").WithDataType(entity.FieldTypeInt64)).
				WithField(entity.NewField().WithName("name").WithDataType(entity.FieldTypeVarChar).WithMaxLength(32))
			err := cli.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(name, schema).WithShardNum(2).
				WithIndexOptions(milvusclient.NewCreateIndexOption(name, "vec", index.NewFlatIndex(entity.MetricType(metric)))))
			if err != nil {
				t.Fatal(err)
			}
			task, err := cli.LoadCollection(ctx, milvusclient.NewLoadCollectionOption(name))
			if err != nil {
				t.Fatal(err)
			}
			if err := task.Await(ctx); err != nil {
				t.Fatal(err)
			}
			// Two batches, so rows land in both shards over several messages.
			for _, part := range [][2]int{{0, n / 2}, {n / 2, n}} {
				res, err := cli.Insert(ctx, milvusclient.NewColumnBasedInsertOption(name).
					WithInt64Column("id", r.ids[part[0]:part[1]]).
					WithFloatVectorColumn("vec", dim, r.vecs[part[0]:part[1]]).
					WithInt64Column("age", r.ages[part[0]:part[1]]).
					WithVarcharColumn("name", r.names[part[0]:part[1]]))
				if err != nil {
					t.Fatal(err)
				}
				if res.InsertCount != int64(part[1]-part[0]) {
					t.Fatalf("insert count %d", res.InsertCount)
				}
			}
			queries := []entity.Vector{entity.FloatVector(r.vecs[3]), entity.FloatVector(genRows(1, dim, 0, 7).vecs[0]), entity.FloatVector(genRows(1, dim, 0, 8).vecs[0])}
			cases := []struct {
				filter string
				keep   func(i int) bool
				offset int
			}{
				{"", nil, 0},
				{"age >= 10 and age < 30", func(i int) bool { return r.ages[i] >= 10 && r.ages[i] < 30 }, 0},
				{`name in ["n1003", "n1200", "n1201", "n1402"] or age == 7`, func(i int) bool {
					nm := r.names[i]
					return nm == "n1003" || nm == "n1200" || nm == "n1201" || nm == "n1402" || r.ages[i] == 7
				}, 0},
				{"", nil, 3},
			}
			for _, tc := range cases {
				opt := milvusclient.NewSearchOption(name, k, queries).WithANNSField("vec").
					WithOutputFields("age", "name").WithConsistencyLevel(entity.ClStrong).WithOffset(tc.offset)
				if tc.filter != "" {
					opt = opt.WithFilter(tc.filter)
				}
				sets, err := cli.Search(ctx, opt)
				if err != nil {
					t.Fatalf("search %q: %v", tc.filter, err)
				}
				if len(sets) != len(queries) {
					t.Fatalf("got %d result sets for %d queries", len(sets), len(queries))
				}
				for qi, rs := range sets {
					wantIDs, wantScores := bruteForce(metric, queries[qi].(entity.FloatVector), r.ids, r.vecs, tc.keep, k+tc.offset)
					if tc.offset < len(wantIDs) {
						wantIDs, wantScores = wantIDs[tc.offset:], wantScores[tc.offset:]
					} else {
						wantIDs, wantScores = nil, nil
					}
					gotIDs := rs.IDs.(*sdkcol.ColumnInt64).Data()
					if fmt.Sprint(gotIDs) != fmt.Sprint(wantIDs) {
						t.Fatalf("filter %q query %d: ids %v, brute force %v", tc.filter, qi, gotIDs, wantIDs)
					}
					for i := range wantScores {
						if d := math.Abs(float64(rs.Scores[i]) - wantScores[i]); d > 1e-4*math.Max(1, math.Abs(wantScores[i])) {
							t.Fatalf("filter %q query %d rank %d: score %v, brute force %v", tc.filter, qi, i, rs.Scores[i], wantScores[i])
						}
					}
					ages := rs.GetColumn("age").(*sdkcol.ColumnInt64).Data()
					names := rs.GetColumn("name").(*sdkcol.ColumnVarChar).Data()
					for i, id := range gotIDs {
						row := int(id - 1000)
						if ages[i] != r.ages[row] || names[i] != r.names[row] {
							t.Fatalf("output fields of id %d: age %d name %s, want %d %s", id, ages[i], names[i], r.ages[row], r.names[row])
						}
					}
				}
			}
		})
	}
}

// TestSearchRawResultShape checks the SearchResultData layout Milvus
// clients parse: topks per query, flat ids/scores, fields_data, and that the
// metric defaults to the index's.
func TestSearchRawResultShape(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "r"})
	cli := rawClient(t, c)
	createCollection(t, cli, "shape", 4, 1, commonpb.ConsistencyLevel_Bounded, "IP")
	r := genRows(5, 4, 1, 3)
	insertRows(t, cli, "shape", r, 4)
	req := searchReq("shape", 10, "", "", []string{"*"}, r.vecs[0], r.vecs[1])
	res := resp(t)(cli.Search(tctx(t), req)).(*milvuspb.SearchResults).GetResults()
	if res.GetNumQueries() != 2 || res.GetTopK() != 10 || fmt.Sprint(res.GetTopks()) != "[5 5]" {
		t.Fatalf("shape: nq %d topk %d topks %v", res.GetNumQueries(), res.GetTopK(), res.GetTopks())
	}
	if len(res.GetIds().GetIntId().GetData()) != 10 || len(res.GetScores()) != 10 {
		t.Fatalf("flat ids/scores: %d/%d", len(res.GetIds().GetIntId().GetData()), len(res.GetScores()))
	}
	for _, name := range []string{"id", "vec", "age", "score", "name", "flag", dynamicFieldName} {
		if fd := fieldByName(res.GetFieldsData(), name); fd == nil {
			t.Fatalf("output * misses %s", name)
		}
	}
	if vec := fieldByName(res.GetFieldsData(), "vec").GetVectors(); vec.GetDim() != 4 || len(vec.GetFloatVector().GetData()) != 40 {
		t.Fatalf("vector output: %v", vec)
	}
	// IP scores are descending.
	s := res.GetScores()
	for i := 1; i < 5; i++ {
		if s[i] > s[i-1] {
			t.Fatalf("IP scores not descending: %v", s[:5])
		}
	}
	// Rounding.
	req.SearchParams = append(req.SearchParams, kv("round_decimal", "1"))
	rounded := resp(t)(cli.Search(tctx(t), req)).(*milvuspb.SearchResults).GetResults().GetScores()
	for _, x := range rounded {
		if math.Abs(float64(x)*10-math.Round(float64(x)*10)) > 1e-4 {
			t.Fatalf("round_decimal 1 left %v", x)
		}
	}
}

// TestHybridSearch fuses two ANN searches with RRF and weighted rerankers
// through the Go SDK.
func TestHybridSearch(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "h"})
	cli := sdkClient(t, c)
	ctx := tctx(t)
	const dim = 8
	schema := entity.NewSchema().WithName("hy").
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("a").WithDataType(entity.FieldTypeFloatVector).WithDim(dim)).
		WithField(entity.NewField().WithName("b").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))
	if err := cli.CreateCollection(ctx, milvusclient.NewCreateCollectionOption("hy", schema).WithIndexOptions(
		milvusclient.NewCreateIndexOption("hy", "a", index.NewFlatIndex(entity.L2)),
		milvusclient.NewCreateIndexOption("hy", "b", index.NewFlatIndex(entity.IP)))); err != nil {
		t.Fatal(err)
	}
	task, err := cli.LoadCollection(ctx, milvusclient.NewLoadCollectionOption("hy"))
	if err != nil || task.Await(ctx) != nil {
		t.Fatal(err)
	}
	ra, rb := genRows(100, dim, 0, 1), genRows(100, dim, 0, 2)
	if _, err := cli.Insert(ctx, milvusclient.NewColumnBasedInsertOption("hy").WithInt64Column("id", ra.ids).
		WithFloatVectorColumn("a", dim, ra.vecs).WithFloatVectorColumn("b", dim, rb.vecs)); err != nil {
		t.Fatal(err)
	}
	// The query for "a" is row 10's vector, the query for "b" row 20's: each
	// wins its own search, so RRF ranks both on top.
	reqA := milvusclient.NewAnnRequest("a", 5, entity.FloatVector(ra.vecs[10]))
	reqB := milvusclient.NewAnnRequest("b", 5, entity.FloatVector(rb.vecs[20])).WithFilter("id >= 20")
	sets, err := cli.HybridSearch(ctx, milvusclient.NewHybridSearchOption("hy", 4, reqA, reqB).WithReranker(milvusclient.NewRRFReranker()).WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		t.Fatal(err)
	}
	ids := sets[0].IDs.(*sdkcol.ColumnInt64).Data()
	if len(ids) != 4 || !(ids[0] == 10 && ids[1] == 20 || ids[0] == 20 && ids[1] == 10) {
		t.Fatalf("rrf ids %v scores %v", ids, sets[0].Scores)
	}
	if want := float32(1.0 / 61); math.Abs(float64(sets[0].Scores[0]-want)) > 1e-6 {
		t.Fatalf("rrf top score %v want %v", sets[0].Scores[0], want)
	}
	sets, err = cli.HybridSearch(ctx, milvusclient.NewHybridSearchOption("hy", 3, reqA, reqB).WithReranker(milvusclient.NewWeightedReranker([]float64{1, 0})).WithConsistencyLevel(entity.ClStrong))
	if err != nil {
		t.Fatal(err)
	}
	wantIDs, _ := bruteForce("L2", ra.vecs[10], ra.ids, ra.vecs, nil, 3)
	if got := sets[0].IDs.(*sdkcol.ColumnInt64).Data(); fmt.Sprint(got) != fmt.Sprint(wantIDs) {
		t.Fatalf("weighted [1,0] ids %v, want the L2 order %v", got, wantIDs)
	}
	if _, err := cli.HybridSearch(ctx, milvusclient.NewHybridSearchOption("hy", 3, reqA, reqB).WithReranker(milvusclient.NewWeightedReranker([]float64{1}))); err == nil {
		t.Fatal("weighted reranker with the wrong number of weights accepted")
	}
}
