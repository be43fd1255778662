package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
)

// TestDataDirRestart: a cluster with a DataDir that crashes comes back with
// its catalog and data, even with a torn record at the end of a WAL file.
func TestDataDirRestart(t *testing.T) {
	dir := t.TempDir()
	a := startCluster(t, Options{ClusterID: "a", DataDir: dir})
	ca := rawClient(t, a)
	ctx := tctx(t)
	createCollection(t, ca, "keep", 4, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	insertRange(t, ca, "keep", 1, 30)
	resp(t)(ca.Delete(ctx, &milvuspb.DeleteRequest{CollectionName: "keep", Expr: "id < 6"}))
	ok(t)(ca.CreateAlias(ctx, &milvuspb.CreateAliasRequest{CollectionName: "keep", Alias: "kept"}))
	desc := resp(t)(ca.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{CollectionName: "keep"})).(*milvuspb.DescribeCollectionResponse)
	last := insertRange(t, ca, "keep", 100, 3)
	a.Crash()

	// The process died in the middle of writing a record.
	f, err := os.OpenFile(filepath.Join(dir, "wal_0.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0x80, 0x01, 0x0a, 0x03})
	f.Close()

	a2 := startCluster(t, Options{ClusterID: "a", DataDir: dir})
	c2 := rawClient(t, a2)
	if n := count(t, c2, "kept", commonpb.ConsistencyLevel_Strong, 0); n != 28 {
		t.Fatalf("after restart: %d rows, want 28", n)
	}
	desc2 := resp(t)(c2.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{CollectionName: "keep"})).(*milvuspb.DescribeCollectionResponse)
	if desc2.GetCollectionID() != desc.GetCollectionID() || strings.Join(desc2.GetVirtualChannelNames(), ",") != strings.Join(desc.GetVirtualChannelNames(), ",") {
		t.Fatalf("collection changed across restart: %v vs %v", desc2, desc)
	}
	next := insertRange(t, c2, "keep", 200, 2)
	if next.GetTimestamp() <= last.GetTimestamp() {
		t.Fatalf("timestamps went back after restart: %d then %d", last.GetTimestamp(), next.GetTimestamp())
	}
	a2.Stop()
	a3 := startCluster(t, Options{ClusterID: "a", DataDir: dir})
	if n := count(t, rawClient(t, a3), "keep", commonpb.ConsistencyLevel_Strong, 0); n != 30 {
		t.Fatalf("after second restart: %d rows, want 30", n)
	}
	a3.Stop()
	if _, err := Start(ctx, Options{ClusterID: "other", DataDir: dir}); err == nil || !strings.Contains(err.Error(), "belongs to cluster") {
		t.Fatalf("another cluster id on the same data dir: %v", err)
	}
}

// TestReplicationSurvivesRestarts: the target restarts from its DataDir with
// its checkpoints and the source's CDC resumes after them; then the primary
// restarts with its configuration and resumes CDC. Nothing is lost or
// applied twice.
func TestReplicationSurvivesRestarts(t *testing.T) {
	da, db := t.TempDir(), t.TempDir()
	a := startCluster(t, Options{ClusterID: "a", DataDir: da})
	b := startCluster(t, Options{ClusterID: "b", DataDir: db})
	join(t, a, b)
	ca := rawClient(t, a)
	createCollection(t, ca, "rs", 4, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	res := insertRange(t, ca, "rs", 1, 10)
	waitCollection(t, rawClient(t, b), "rs")
	if n := sessionCount(t, rawClient(t, b), "rs", res.Timestamp); n != 10 {
		t.Fatalf("count %d", n)
	}
	bAddr := b.Addr()
	b.Crash()
	insertRange(t, ca, "rs", 100, 10)
	b2 := startCluster(t, Options{ClusterID: "b", DataDir: db, Listen: bAddr})
	if b2.Role() != "secondary" {
		t.Fatalf("restarted target role %s", b2.Role())
	}
	res = insertRange(t, ca, "rs", 200, 5)
	cb := rawClient(t, b2)
	if n := sessionCount(t, cb, "rs", res.Timestamp); n != 25 {
		t.Fatalf("restarted target has %d rows, want 25", n)
	}
	aAddr := a.Addr()
	a.Crash()
	a2 := startCluster(t, Options{ClusterID: "a", DataDir: da, Listen: aAddr})
	if a2.Role() != "primary" {
		t.Fatalf("restarted source role %s", a2.Role())
	}
	res = insertRange(t, rawClient(t, a2), "rs", 300, 5)
	if n := sessionCount(t, cb, "rs", res.Timestamp); n != 30 {
		t.Fatalf("target has %d rows after the source restarted, want 30", n)
	}
	for p, ids := range srcIDs(b2, "a") {
		for i := 1; i < len(ids); i++ {
			if ids[i] != ids[i-1]+1 {
				t.Fatalf("pchannel %d: source ids %d then %d across restarts", p, ids[i-1], ids[i])
			}
		}
	}
}
