package sim

import (
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
)

// Regression tests for places where the simulator once differed from
// Milvus (each was found by a suite using it; see test/failover's
// simbugs_test.go for the end-to-end repros).

// TestReplicatedDDLAppliedInOrder: a target applies a broadcast DDL with
// its first copy, and the copies of consecutive DDLs arrive on independent
// pchannels. While the first copy of CreateCollection is still being
// applied (held here for 200ms), the other pchannel's copies of
// CreateIndex and LoadCollection must not overtake it: they would find no
// collection and be dropped, leaving the target "not loaded" forever.
func TestReplicatedDDLAppliedInOrder(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b", beforeDDL: func(e *entry) {
		if e.kind == kindCreateCollection {
			time.Sleep(200 * time.Millisecond)
		}
	}})
	join(t, a, b)
	ca, cb := rawClient(t, a), rawClient(t, b)
	createCollection(t, ca, "ordered", 4, 2, commonpb.ConsistencyLevel_Strong, "IP")
	waitCollection(t, cb, "ordered")
	idx := resp(t)(cb.DescribeIndex(tctx(t), &milvuspb.DescribeIndexRequest{CollectionName: "ordered", FieldName: "vec"})).(*milvuspb.DescribeIndexResponse)
	if len(idx.GetIndexDescriptions()) != 1 {
		t.Fatalf("target has %d indexes on vec, want 1", len(idx.GetIndexDescriptions()))
	}
	// The search takes its metric from the replicated index.
	res := insertRange(t, ca, "ordered", 1, 10)
	req := searchReq("ordered", 3, "", "", nil, genRows(1, 4, 0, 9).vecs[0])
	req.SearchParams = []*commonpb.KeyValuePair{kv("anns_field", "vec"), kv("topk", "3"), kv("params", "{}")}
	req.ConsistencyLevel, req.GuaranteeTimestamp = commonpb.ConsistencyLevel_Session, res.GetTimestamp()
	sr := resp(t)(cb.Search(tctx(t), req)).(*milvuspb.SearchResults)
	if got := len(sr.GetResults().GetScores()); got != 3 {
		t.Fatalf("search on the target found %d hits, want 3", got)
	}
}
