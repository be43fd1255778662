package sim

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
)

// TestReadsDuringReplicatedDDL reads on a target while the source writes,
// renames, creates partitions and aliases: run with -race, it proves reads
// and replicated DDL do not share state without synchronisation.
func TestReadsDuringReplicatedDDL(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	join(t, a, b)
	ca, cb := rawClient(t, a), rawClient(t, b)
	createCollection(t, ca, "r0", 4, 2, commonpb.ConsistencyLevel_Eventually, "IP")
	insertRange(t, ca, "r0", 1, 20)
	ok(t)(ca.CreateAlias(tctx(t), &milvuspb.CreateAliasRequest{CollectionName: "r0", Alias: "stable"}))
	waitCollection(t, cb, "r0")
	testutil.Eventually(t, 5*time.Second, "alias to replicate", func() bool {
		r, err := cb.DescribeAlias(tctx(t), &milvuspb.DescribeAliasRequest{Alias: "stable"})
		return err == nil && r.GetStatus().GetCode() == 0
	})
	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	q := genRows(1, 4, 0, 3).vecs[0]
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				req := searchReq("stable", 5, "IP", "age >= 0", []string{"name"}, q)
				req.ConsistencyLevel = commonpb.ConsistencyLevel_Eventually
				if _, err := cb.Search(tctx(t), req); err != nil {
					t.Error(err)
					return
				}
				cb.Query(tctx(t), &milvuspb.QueryRequest{CollectionName: "stable", Expr: "id > 3", OutputFields: []string{"*"},
					QueryParams: []*commonpb.KeyValuePair{kv("limit", "5")}, ConsistencyLevel: commonpb.ConsistencyLevel_Eventually})
				cb.DescribeCollection(tctx(t), &milvuspb.DescribeCollectionRequest{CollectionName: "stable"})
				cb.ShowCollections(tctx(t), &milvuspb.ShowCollectionsRequest{})
				cb.ShowPartitions(tctx(t), &milvuspb.ShowPartitionsRequest{CollectionName: "stable"})
				reads.Add(1)
			}
		}()
	}
	name := "r0"
	for i := 1; i <= 10; i++ {
		next := fmt.Sprintf("r%d", i)
		ok(t)(ca.RenameCollection(tctx(t), &milvuspb.RenameCollectionRequest{OldName: name, NewName: next}))
		name = next
		ok(t)(ca.CreatePartition(tctx(t), &milvuspb.CreatePartitionRequest{CollectionName: name, PartitionName: fmt.Sprintf("p%d", i)}))
		insertRange(t, ca, name, int64(100*i), 5)
	}
	res := insertRange(t, ca, name, 5000, 1)
	if n := sessionCount(t, cb, name, res.Timestamp); n != 71 {
		t.Fatalf("target has %d rows", n)
	}
	stop.Store(true)
	wg.Wait()
	if reads.Load() == 0 {
		t.Fatal("no reads ran")
	}
}
