package failover_test

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/proto"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/sim"
)

// Where the simulator differs from Milvus in ways this suite had to work
// around. Each test fails on the simulator as it is; they run with
// MHP_SIM_BUGS=1 so `make test` stays green until test/sim is fixed.

func simBugsOnly(t *testing.T) {
	if os.Getenv("MHP_SIM_BUGS") == "" {
		t.Skip("known simulator deviation from Milvus; run with MHP_SIM_BUGS=1")
	}
}

func startInProcess(t *testing.T, id, dir, listen string) *sim.Cluster {
	t.Helper()
	c, err := sim.Start(context.Background(), sim.Options{ClusterID: id, TimeTickInterval: 20 * time.Millisecond, DataDir: dir, Listen: listen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func createOn(t *testing.T, c *client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	schema, _ := proto.Marshal(&schemapb.CollectionSchema{Name: collName, Fields: []*schemapb.FieldSchema{
		{FieldID: 100, Name: "pk", DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
		{FieldID: 101, Name: "val", DataType: schemapb.DataType_Int64},
		{FieldID: 102, Name: "v", DataType: schemapb.DataType_FloatVector, TypeParams: []*commonpb.KeyValuePair{{Key: "dim", Value: "2"}}},
	}})
	st, err := c.rpc.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: collName, Schema: schema, ShardsNum: 1})
	mustOK(t, "CreateCollection", st, err)
	st, err = c.rpc.CreateIndex(ctx, &milvuspb.CreateIndexRequest{CollectionName: collName, FieldName: "v",
		ExtraParams: []*commonpb.KeyValuePair{{Key: "metric_type", Value: "L2"}}})
	mustOK(t, "CreateIndex", st, err)
	st, err = c.rpc.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{CollectionName: collName})
	mustOK(t, "LoadCollection", st, err)
}

func writeOn(t *testing.T, c *client, upsert bool, pk, val int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fields, n := rowsRequest([]int64{pk}, []int64{val})
	var res *milvuspb.MutationResult
	var err error
	if upsert {
		res, err = c.rpc.Upsert(ctx, &milvuspb.UpsertRequest{CollectionName: collName, FieldsData: fields, NumRows: n})
	} else {
		res, err = c.rpc.Insert(ctx, &milvuspb.InsertRequest{CollectionName: collName, FieldsData: fields, NumRows: n})
	}
	mustOK(t, "write", res.GetStatus(), err)
}

// TestSimUpsertAtomicity: Milvus reads at the read's timestamp, and an
// upsert's Delete and Insert become visible together; a read never finds
// an upserted key missing. The simulator applies them one after the other
// and reads the latest state, so a Strong read racing an upsert of its key
// can find no row.
func TestSimUpsertAtomicity(t *testing.T) {
	simBugsOnly(t)
	c := startInProcess(t, "x", "", "127.0.0.1:0")
	cli := dialProxy(t, c.Addr())
	createOn(t, cli)
	writeOn(t, cli, true, 5, 0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var missing atomic.Int64
	wg.Go(func() {
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			writeOn(t, cli, true, 5, i)
		}
	})
	for range 300 {
		rows, err := cli.keys(commonpb.ConsistencyLevel_Strong, 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 0 {
			missing.Add(1)
		}
	}
	close(stop)
	wg.Wait()
	if n := missing.Load(); n > 0 {
		t.Errorf("%d of 300 Strong reads found the upserted key missing", n)
	}
}

// TestSimSecondaryAcceptsForeignSource: Milvus's replicate interceptor
// checks that a replicated message comes from the cluster's source. The
// simulator accepts a stream from any cluster its configuration lists
// whenever its current source has no live stream: an old primary that
// comes back still streaming its unreplicated messages delivers them to a
// secondary of the new primary once the new configuration names it and
// the new primary's stream blips.
func TestSimSecondaryAcceptsForeignSource(t *testing.T) {
	simBugsOnly(t)
	ctx := context.Background()
	aDir := t.TempDir()
	a := startInProcess(t, "a", aDir, "127.0.0.1:0")
	b, c := startInProcess(t, "b", "", "127.0.0.1:0"), startInProcess(t, "c", "", "127.0.0.1:0")
	if err := sim.JoinReplication(ctx, a, b, c); err != nil {
		t.Fatal(err)
	}
	ca, cb, cc := dialProxy(t, a.Addr()), dialProxy(t, b.Addr()), dialProxy(t, c.Addr())
	createOn(t, ca)
	writeOn(t, ca, false, 1, 1)
	for _, cl := range []*client{cb, cc} {
		eventually(t, "1 replicated", 10*time.Second, func() bool {
			rows, err := cl.keys(commonpb.ConsistencyLevel_Eventually, 1)
			return err == nil && len(rows) == 1
		})
	}
	b.PauseReplication()
	c.PauseReplication()
	writeOn(t, ca, false, 2, 2) // reaches neither
	a.Crash()
	time.Sleep(300 * time.Millisecond)
	b.ResumeReplication()
	c.ResumeReplication()
	// b takes over; c follows b.
	if err := sim.UpdateReplicateConfiguration(ctx, b.Addr(), "", &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{b.Config()}}, true); err != nil {
		t.Fatal(err)
	}
	if err := sim.JoinReplication(ctx, b, c); err != nil {
		t.Fatal(err)
	}
	// a returns, still a primary streaming to c; then b's configuration
	// names a as a target, which reaches c through CDC.
	a = startInProcess(t, "a", aDir, a.Addr())
	if err := sim.UpdateReplicateConfiguration(ctx, b.Addr(), "", sim.ReplicationConfig(b, c, a), false); err != nil {
		t.Fatal(err)
	}
	// The simulator refuses a's stream while b's is live; whenever b's
	// stream to c breaks (a network blip, here injected) a takes over.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.DropStream()
		time.Sleep(30 * time.Millisecond)
		if rows, err := cc.keys(commonpb.ConsistencyLevel_Eventually, 2); err == nil && len(rows) > 0 {
			t.Fatal("c, a secondary of b, applied a write streamed by a, which is not its source")
		}
	}
}

// TestSimDDLApplyOrder: a secondary applies each DDL with the first of its
// per-pchannel copies, but the copies of consecutive DDLs arrive on
// independent streams: the second pchannel's copy of LoadCollection can be
// applied before the first pchannel's copy of CreateCollection, and is
// then dropped ("collection not loaded" forever, though the checkpoints
// are caught up). Milvus keeps DDL in order on the control channel.
func TestSimDDLApplyOrder(t *testing.T) {
	simBugsOnly(t)
	ctx := context.Background()
	for i := range 300 {
		a := startInProcess(t, "a", "", "127.0.0.1:0")
		b, c := startInProcess(t, "b", "", "127.0.0.1:0"), startInProcess(t, "c", "", "127.0.0.1:0")
		if err := sim.JoinReplication(ctx, a, b, c); err != nil {
			t.Fatal(err)
		}
		createOn(t, dialProxy(t, a.Addr()))
		for _, s := range []*sim.Cluster{b, c} {
			cl := dialProxy(t, s.Addr())
			var err error
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				if _, err = cl.keys(commonpb.ConsistencyLevel_Eventually, 1); err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("round %d: secondary %s never serves the collection: %v", i, s.ID(), err)
			}
			cl.conn.Close()
		}
		a.Stop()
		b.Stop()
		c.Stop()
	}
}
