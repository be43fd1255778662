package sim

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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

// TestUpsertVisibleWhole: Milvus writes an upsert's Delete and Insert in
// one transaction and reads at a timestamp, so no read, on the primary or
// on a target, finds an upserted key missing while upserts of it run.
func TestUpsertVisibleWhole(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	join(t, a, b)
	ca, cb := rawClient(t, a), rawClient(t, b)
	createCollection(t, ca, "ups", 4, 2, commonpb.ConsistencyLevel_Strong, "L2")
	const n = 8
	upsert := func(seed int64) error {
		r := genRows(n, 4, 1, seed)
		res, err := ca.Upsert(tctx(t), &milvuspb.UpsertRequest{CollectionName: "ups", FieldsData: r.fieldData(4), NumRows: n})
		if err == nil && res.GetStatus().GetCode() != 0 {
			err = fmt.Errorf("milvus error %d: %s", res.GetStatus().GetCode(), res.GetStatus().GetReason())
		}
		return err
	}
	if err := upsert(0); err != nil {
		t.Fatal(err)
	}
	waitCollection(t, cb, "ups")
	testutil.Eventually(t, 5*time.Second, "the rows to replicate", func() bool {
		return count(t, cb, "ups", commonpb.ConsistencyLevel_Eventually, 0) == n
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for seed := int64(1); ; seed++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := upsert(seed); err != nil {
				t.Errorf("upsert: %v", err)
				return
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	for i := 0; i < 200; i++ {
		if got := count(t, ca, "ups", commonpb.ConsistencyLevel_Strong, 0); got != n {
			t.Fatalf("read %d on the primary counted %d rows during upserts, want %d", i, got, n)
		}
		if got := count(t, cb, "ups", commonpb.ConsistencyLevel_Eventually, 0); got != n {
			t.Fatalf("read %d on the target counted %d rows during upserts, want %d", i, got, n)
		}
	}
}

// TestWALFileCutsIncompleteGroup: a group is written with one write, but
// should its end be missing from a WAL file, the whole group is cut off on
// open, as a torn record is.
func TestWALFileCutsIncompleteGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal.log")
	wf, es, err := openWALFile(path)
	if err != nil || len(es) != 0 {
		t.Fatalf("new wal file: %v, %d entries", err, len(es))
	}
	single := &entry{id: 1, ts: 10, kind: kindInsert}
	group := []*entry{
		{id: 2, ts: 11, kind: kindDelete, extra: map[string]string{propGroupNext: "1"}},
		{id: 3, ts: 11, kind: kindInsert},
	}
	half := &entry{id: 4, ts: 12, kind: kindDelete, extra: map[string]string{propGroupNext: "1"}}
	for _, w := range [][]*entry{{single}, group, {half}} {
		if err := wf.write(w...); err != nil {
			t.Fatal(err)
		}
	}
	wf.close()
	wf, es, err = openWALFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[2].id != 3 || es[1].ts != 11 || !es[1].groupNext() {
		t.Fatalf("reopened wal has %d entries, want the single message and the whole group", len(es))
	}
	// The cut is on disk: what is appended next follows the group.
	if err := wf.write(&entry{id: 4, ts: 13, kind: kindInsert}); err != nil {
		t.Fatal(err)
	}
	wf.close()
	if _, es, err = openWALFile(path); err != nil || len(es) != 4 || es[3].ts != 13 {
		t.Fatalf("after append: %v, %d entries", err, len(es))
	}
}

// TestSecondaryRefusesForeignSource: Milvus's replicate interceptor takes
// a replicated message only from the source its configuration names
// ("cluster id mismatch" otherwise). Here a crashes with a write its
// secondaries never got, b is promoted and c follows b; a comes back still
// a primary streaming that write, and b's configuration lists a again.
// Whatever happens to b's stream to c, c never applies a's write.
func TestSecondaryRefusesForeignSource(t *testing.T) {
	aDir := t.TempDir()
	a := startCluster(t, Options{ClusterID: "a", DataDir: aDir})
	b := startCluster(t, Options{ClusterID: "b"})
	c := startCluster(t, Options{ClusterID: "c"})
	join(t, a, b, c)
	ca, cb, cc := rawClient(t, a), rawClient(t, b), rawClient(t, c)
	createCollection(t, ca, "fs", 4, 2, commonpb.ConsistencyLevel_Strong, "L2")
	insertRange(t, ca, "fs", 1, 1)
	for _, cli := range []milvuspb.MilvusServiceClient{cb, cc} {
		waitCollection(t, cli, "fs")
		testutil.Eventually(t, 5*time.Second, "the first row to replicate", func() bool {
			return count(t, cli, "fs", commonpb.ConsistencyLevel_Eventually, 0) == 1
		})
	}
	b.PauseReplication()
	c.PauseReplication()
	insertRange(t, ca, "fs", 2, 1) // reaches neither
	addr := a.Addr()
	a.Crash()
	// Resume only once a's streams are gone: a message already received
	// and held by the pause would otherwise still be applied.
	for _, s := range []*Cluster{b, c} {
		testutil.Eventually(t, 5*time.Second, "a's streams to end", func() bool {
			s.repl.mu.Lock()
			defer s.repl.mu.Unlock()
			for k := range s.repl.inbound {
				if k.src == "a" {
					return false
				}
			}
			return true
		})
	}
	b.ResumeReplication()
	c.ResumeReplication()
	ctx := tctx(t)
	if err := UpdateReplicateConfiguration(ctx, b.Addr(), "", &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{b.Config()}}, true); err != nil {
		t.Fatal(err)
	}
	join(t, b, c)
	a = startCluster(t, Options{ClusterID: "a", DataDir: aDir, Listen: addr})
	if err := UpdateReplicateConfiguration(ctx, b.Addr(), "", ReplicationConfig(b, c, a), false); err != nil {
		t.Fatal(err)
	}
	rowTwo := func() int {
		res := resp(t)(cc.Query(tctx(t), &milvuspb.QueryRequest{CollectionName: "fs", Expr: "id == 2", OutputFields: []string{"id"},
			ConsistencyLevel: commonpb.ConsistencyLevel_Eventually})).(*milvuspb.QueryResults)
		return len(longs(fieldByName(res.GetFieldsData(), "id")))
	}
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		c.DropStream() // b's stream breaks; a's would take over if c let it
		time.Sleep(30 * time.Millisecond)
		if rowTwo() > 0 {
			t.Fatal("c, a secondary of b, applied a write streamed by a, which is not its source")
		}
	}
	// c still follows b.
	res := insertRange(t, cb, "fs", 3, 1)
	if n := sessionCount(t, cc, "fs", res.GetTimestamp()); n != 2 {
		t.Fatalf("c has %d rows after b's write, want 2 (rows 1 and 3)", n)
	}
}

// TestReplicateConfigurationOfUnconfiguredCluster: on a cluster never
// given a replicate configuration, Milvus 2.6 answers neither
// GetReplicateConfiguration nor GetReplicateInfo before the caller's
// deadline (milvus-io/milvus#52686); a waiting call answers once a
// configuration arrives.
func TestReplicateConfigurationOfUnconfiguredCluster(t *testing.T) {
	users := map[string]string{"root": "Milvus"}
	a := startCluster(t, Options{ClusterID: "a", Users: users})
	cli := rawClient(t, a)
	auth := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", base64.StdEncoding.EncodeToString([]byte("root:Milvus")))
	}
	short, cancel := context.WithTimeout(auth(context.Background()), 200*time.Millisecond)
	defer cancel()
	if _, err := cli.GetReplicateConfiguration(short, &milvuspb.GetReplicateConfigurationRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("GetReplicateConfiguration on a cluster never configured: %v, want DEADLINE_EXCEEDED", err)
	}
	short, cancel = context.WithTimeout(auth(context.Background()), 200*time.Millisecond)
	defer cancel()
	if _, err := cli.GetReplicateInfo(short, &milvuspb.GetReplicateInfoRequest{SourceClusterId: "x", TargetPchannel: a.PChannels()[0]}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("GetReplicateInfo on a cluster never configured: %v, want DEADLINE_EXCEEDED", err)
	}

	// A call that waits answers once the cluster is configured: here with
	// the one-cluster configuration a primary standing alone has.
	got := make(chan *milvuspb.GetReplicateConfigurationResponse, 1)
	waiting := make(chan error, 1)
	go func() {
		r, err := cli.GetReplicateConfiguration(auth(tctx(t)), &milvuspb.GetReplicateConfigurationRequest{})
		waiting <- err
		got <- r
	}()
	testutil.Eventually(t, 5*time.Second, "the call to wait", func() bool { return a.configWaits.Load() == 1 })
	select {
	case err := <-waiting:
		t.Fatalf("GetReplicateConfiguration answered before any configuration: %v", err)
	default:
	}
	alone := &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{a.Config()}}
	if err := UpdateReplicateConfiguration(tctx(t), a.Addr(), a.tokenFor(), alone, false); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; err != nil {
		t.Fatal(err)
	}
	r := <-got
	ok(t)(r.GetStatus(), nil)
	if r.GetConfiguration().GetClusters()[0].GetClusterId() != "a" || len(r.GetConfiguration().GetCrossClusterTopology()) != 0 {
		t.Fatalf("configuration %v, want a alone", r.GetConfiguration())
	}
	if a.Role() != "primary" {
		t.Fatalf("a standing alone is %s", a.Role())
	}

	// Stopping the cluster ends a call still waiting on another one.
	b := startCluster(t, Options{ClusterID: "b"})
	cb := rawClient(t, b)
	ended := make(chan error, 1)
	go func() {
		_, err := cb.GetReplicateConfiguration(tctx(t), &milvuspb.GetReplicateConfigurationRequest{})
		ended <- err
	}()
	testutil.Eventually(t, 5*time.Second, "the call to wait", func() bool { return b.configWaits.Load() == 1 })
	b.Stop()
	// Ended by the cluster (not cut off by the server's forced stop).
	if err := <-ended; status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("a call waiting on a stopping cluster: %v", err)
	}
}

// TestGetReplicateConfigurationClearsTokens: Milvus 2.6 clears the
// clusters' tokens in what GetReplicateConfiguration returns
// (replicateutil.SanitizeReplicateConfiguration, in every version that has
// the call); the cluster itself keeps them, so replication still
// authenticates.
func TestGetReplicateConfigurationClearsTokens(t *testing.T) {
	users := map[string]string{"root": "Milvus"}
	a := startCluster(t, Options{ClusterID: "a", Users: users})
	b := startCluster(t, Options{ClusterID: "b", Users: users})
	join(t, a, b)
	ctx := metadata.AppendToOutgoingContext(tctx(t), "authorization", base64.StdEncoding.EncodeToString([]byte("root:Milvus")))
	r := resp(t)(rawClient(t, a).GetReplicateConfiguration(ctx, &milvuspb.GetReplicateConfigurationRequest{})).(*milvuspb.GetReplicateConfigurationResponse)
	if len(r.GetConfiguration().GetClusters()) != 2 {
		t.Fatalf("configuration %v, want a and b", r.GetConfiguration())
	}
	for _, mc := range r.GetConfiguration().GetClusters() {
		if mc.GetConnectionParam().GetToken() != "" || mc.GetConnectionParam().GetUri() == "" {
			t.Errorf("cluster %s: connection %v, want the uri without the token", mc.GetClusterId(), mc.GetConnectionParam())
		}
	}
	if a.Config().GetConnectionParam().GetToken() == "" {
		t.Fatal("test clusters have no token")
	}
	// Replication still authenticates with the tokens the cluster keeps.
	createCollection(t, rawClientAuth(t, a), "tok", 4, 1, commonpb.ConsistencyLevel_Strong, "L2")
	testutil.Eventually(t, 5*time.Second, "the collection to replicate", func() bool {
		d, err := rawClient(t, b).DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{CollectionName: "tok"})
		return err == nil && d.GetStatus().GetCode() == 0
	})
}

// rawClientAuth is rawClient sending root:Milvus on every call.
func rawClientAuth(t testing.TB, c *Cluster) milvuspb.MilvusServiceClient {
	t.Helper()
	tok := base64.StdEncoding.EncodeToString([]byte("root:Milvus"))
	conn, err := grpc.NewClient(c.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", tok), method, req, reply, cc, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return milvuspb.NewMilvusServiceClient(conn)
}

// TestRepeatedSwitchovers: switchovers a -> b -> c -> a ... by the
// protocol (the new configuration to the old primary, then to the new one,
// then to the other secondary), with writes between them. Every secondary
// keeps replicating its primary on every pchannel. A pchannel handed to a
// source it had followed before must not resume from that source's stale
// checkpoint of the earlier epoch.
func TestRepeatedSwitchovers(t *testing.T) {
	cs := []*Cluster{startCluster(t, Options{ClusterID: "a"}), startCluster(t, Options{ClusterID: "b"}), startCluster(t, Options{ClusterID: "c"})}
	join(t, cs[0], cs[1], cs[2])
	clis := []milvuspb.MilvusServiceClient{rawClient(t, cs[0]), rawClient(t, cs[1]), rawClient(t, cs[2])}
	createCollection(t, clis[0], "sw", 4, 2, commonpb.ConsistencyLevel_Strong, "L2")
	for _, cli := range clis[1:] {
		waitCollection(t, cli, "sw")
	}
	// The calls to the third cluster run in the background; one may wait
	// for good when the configuration it waits for is already superseded
	// (as in Milvus). They end with the test.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader, next := 0, int64(1)
	for round := 0; round < 40; round++ {
		for range 10 {
			insertRange(t, clis[leader], "sw", next, 2)
			next += 2
		}
		to, other := (leader+1)%3, (leader+2)%3
		cfg := ReplicationConfig(cs[to], cs[leader], cs[other])
		for _, i := range []int{leader, to} {
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			err := UpdateReplicateConfiguration(cctx, cs[i].Addr(), "", cfg, false)
			ccancel()
			if err != nil {
				t.Fatalf("round %d: %s: %v\n%+v\n%+v\n%+v", round, cs[i].ID(), err, cs[0].Status(), cs[1].Status(), cs[2].Status())
			}
		}
		wg.Go(func() { _ = UpdateReplicateConfiguration(ctx, cs[other].Addr(), "", cfg, false) })
		leader = to
		insertRange(t, clis[leader], "sw", next, 1)
		next++
		for _, i := range []int{(leader + 1) % 3, (leader + 2) % 3} {
			testutil.EventuallyOr(t, 5*time.Second, fmt.Sprintf("round %d: %s replicating %s's writes", round, cs[i].ID(), cs[leader].ID()), func() bool {
				r, err := clis[i].Query(tctx(t), &milvuspb.QueryRequest{CollectionName: "sw", OutputFields: []string{"count(*)"},
					ConsistencyLevel: commonpb.ConsistencyLevel_Eventually})
				return err == nil && r.GetStatus().GetCode() == 0 && longs(r.GetFieldsData()[0])[0] == next-1
			}, func() string { return fmt.Sprintf("%+v\n%+v\n%+v", cs[0].Status(), cs[1].Status(), cs[2].Status()) })
		}
	}
}
