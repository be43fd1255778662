package sim

import (
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
)

func TestSmoke(t *testing.T) {
	c := startCluster(t, Options{ClusterID: "a"})
	cli := rawClient(t, c)
	createCollection(t, cli, "c1", 8, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	r := genRows(100, 8, 1, 1)
	res := insertRows(t, cli, "c1", r, 8)
	if res.InsertCnt != 100 || res.Timestamp == 0 {
		t.Fatalf("insert result %v", res)
	}
	sr := resp(t)(cli.Search(tctx(t), searchReq("c1", 5, "L2", "age > 10", []string{"name", "color"}, r.vecs[20]))).(*milvuspb.SearchResults)
	t.Logf("%v", sr.Results)
	q := resp(t)(cli.Query(tctx(t), &milvuspb.QueryRequest{CollectionName: "c1", OutputFields: []string{"count(*)"}}))
	t.Logf("%v", q)
}
