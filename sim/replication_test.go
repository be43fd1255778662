package sim

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/msgpb"
	"google.golang.org/protobuf/proto"
)

func join(t testing.TB, source *Cluster, targets ...*Cluster) {
	t.Helper()
	if err := JoinReplication(tctx(t), source, targets...); err != nil {
		t.Fatal(err)
	}
}

func replInfo(t testing.TB, cli milvuspb.MilvusServiceClient, source, targetPch string) *milvuspb.GetReplicateInfoResponse {
	t.Helper()
	info, err := cli.GetReplicateInfo(tctx(t), &milvuspb.GetReplicateInfoRequest{SourceClusterId: source, TargetPchannel: targetPch})
	if err != nil {
		t.Fatalf("GetReplicateInfo(%s, %s): %v", source, targetPch, err)
	}
	return info
}

// count runs count(*) with the given consistency.
func count(t testing.TB, cli milvuspb.MilvusServiceClient, coll string, level commonpb.ConsistencyLevel, g uint64) int64 {
	t.Helper()
	res := resp(t)(cli.Query(tctx(t), &milvuspb.QueryRequest{CollectionName: coll, OutputFields: []string{"count(*)"},
		ConsistencyLevel: level, GuaranteeTimestamp: g})).(*milvuspb.QueryResults)
	return longs(res.GetFieldsData()[0])[0]
}

func sessionCount(t testing.TB, cli milvuspb.MilvusServiceClient, coll string, ts uint64) int64 {
	t.Helper()
	return count(t, cli, coll, commonpb.ConsistencyLevel_Session, ts)
}

func insertRange(t testing.TB, cli milvuspb.MilvusServiceClient, coll string, first int64, n int) *milvuspb.MutationResult {
	t.Helper()
	return insertRows(t, cli, coll, genRows(n, 4, first, first), 4)
}

// waitCollection waits until coll exists on a target and is loaded there.
// Like Milvus, a read checks existence and load state before it waits for its
// guarantee timestamp, so a read racing the replicated DDL gets "not found"
// or "not loaded".
func waitCollection(t testing.TB, cli milvuspb.MilvusServiceClient, coll string) *milvuspb.DescribeCollectionResponse {
	t.Helper()
	var desc *milvuspb.DescribeCollectionResponse
	testutil.Eventually(t, 5*time.Second, "collection "+coll+" to replicate and load", func() bool {
		d, err := cli.DescribeCollection(tctx(t), &milvuspb.DescribeCollectionRequest{CollectionName: coll})
		desc = d
		if err != nil || d.GetStatus().GetCode() != 0 {
			return false
		}
		st, err := cli.GetLoadState(tctx(t), &milvuspb.GetLoadStateRequest{CollectionName: coll})
		return err == nil && st.GetState() == commonpb.LoadState_LoadStateLoaded
	})
	return desc
}

// TestReplicationDDLAndData: DDL and data written on the source appear on
// the target with the source's ids and timestamps, mapped onto the target's
// pchannels; the checkpoint advances with time ticks even without data.
func TestReplicationDDLAndData(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	join(t, a, b)
	ca, cb := rawClient(t, a), rawClient(t, b)
	for _, cli := range []milvuspb.MilvusServiceClient{ca, cb} {
		cfg := resp(t)(cli.GetReplicateConfiguration(tctx(t), &milvuspb.GetReplicateConfigurationRequest{})).(*milvuspb.GetReplicateConfigurationResponse)
		if !proto.Equal(cfg.GetConfiguration(), ReplicationConfig(a, b)) {
			t.Fatalf("configuration: %v", cfg.GetConfiguration())
		}
	}
	if a.Role() != "primary" || b.Role() != "secondary" {
		t.Fatalf("roles %s %s", a.Role(), b.Role())
	}
	createCollection(t, ca, "rep", 4, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	res := insertRange(t, ca, "rep", 1, 50)
	descA := resp(t)(ca.DescribeCollection(tctx(t), &milvuspb.DescribeCollectionRequest{CollectionName: "rep"})).(*milvuspb.DescribeCollectionResponse)
	descB := waitCollection(t, cb, "rep")
	if descB.GetCollectionID() != descA.GetCollectionID() || descB.GetCreatedTimestamp() != descA.GetCreatedTimestamp() {
		t.Fatalf("target collection id/ts %d/%d, source %d/%d", descB.GetCollectionID(), descB.GetCreatedTimestamp(), descA.GetCollectionID(), descA.GetCreatedTimestamp())
	}
	for i, p := range descB.GetPhysicalChannelNames() {
		if want := strings.Replace(descA.GetPhysicalChannelNames()[i], "a-", "b-", 1); p != want {
			t.Fatalf("target pchannel %d: %s, want %s", i, p, want)
		}
	}
	// A Session read on the target with the source's write timestamp sees
	// the write (index and load replicated too).
	if n := sessionCount(t, cb, "rep", res.Timestamp); n != 50 {
		t.Fatalf("target count %d", n)
	}
	sr := resp(t)(cb.Search(tctx(t), searchReq("rep", 3, "L2", "", nil, genRows(50, 4, 1, 1).vecs[6]))).(*milvuspb.SearchResults)
	if ids := sr.GetResults().GetIds().GetIntId().GetData(); len(ids) != 3 || ids[0] != 7 {
		t.Fatalf("target search %v", ids)
	}
	// Checkpoints: source ids, source pchannel names, advancing with ticks.
	first := replInfo(t, cb, "a", b.PChannels()[0])
	ck := first.GetCheckpoint()
	if ck.GetClusterId() != "a" || ck.GetPchannel() != a.PChannels()[0] || ck.GetMessageId() == nil || ck.GetTimeTick() == 0 {
		t.Fatalf("checkpoint %v", ck)
	}
	testutil.Eventually(t, 2*time.Second, "checkpoint to advance with time ticks", func() bool {
		return replInfo(t, cb, "a", b.PChannels()[0]).GetCheckpoint().GetTimeTick() > ck.GetTimeTick()
	})
	// Deletes and drops replicate.
	del := resp(t)(ca.Delete(tctx(t), &milvuspb.DeleteRequest{CollectionName: "rep", Expr: "id < 11"})).(*milvuspb.MutationResult)
	if n := sessionCount(t, cb, "rep", del.GetTimestamp()); n != 40 {
		t.Fatalf("target count after delete %d", n)
	}
	ok(t)(ca.ReleaseCollection(tctx(t), &milvuspb.ReleaseCollectionRequest{CollectionName: "rep"}))
	ok(t)(ca.DropCollection(tctx(t), &milvuspb.DropCollectionRequest{CollectionName: "rep"}))
	testutil.Eventually(t, 5*time.Second, "drop to replicate", func() bool {
		has := resp(t)(cb.HasCollection(tctx(t), &milvuspb.HasCollectionRequest{CollectionName: "rep"})).(*milvuspb.BoolResponse)
		return !has.GetValue()
	})
}

// TestReplicationPauseAndSessionRead: paused replication freezes the
// checkpoint; a Session read on the target with the source's write
// timestamp waits until the write has replicated, then sees it.
func TestReplicationPauseAndSessionRead(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b", GuaranteeTimeout: 10 * time.Second})
	join(t, a, b)
	ca, cb := rawClient(t, a), rawClient(t, b)
	createCollection(t, ca, "p", 4, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	res := insertRange(t, ca, "p", 1, 10)
	waitCollection(t, cb, "p")
	if n := sessionCount(t, cb, "p", res.Timestamp); n != 10 {
		t.Fatalf("count %d", n)
	}
	b.PauseReplication()
	time.Sleep(50 * time.Millisecond) // let an apply in progress finish
	frozen := replInfo(t, cb, "a", b.PChannels()[1]).GetCheckpoint().GetTimeTick()
	res = insertRange(t, ca, "p", 100, 10)
	time.Sleep(150 * time.Millisecond) // several time ticks on a
	if got := replInfo(t, cb, "a", b.PChannels()[1]).GetCheckpoint().GetTimeTick(); got != frozen {
		t.Fatalf("checkpoint moved while paused: %d -> %d", frozen, got)
	}
	if n := count(t, cb, "p", commonpb.ConsistencyLevel_Eventually, 0); n != 10 {
		t.Fatalf("eventually read on paused target saw %d rows", n)
	}
	done := make(chan int64, 1)
	go func() { done <- sessionCount(t, cb, "p", res.Timestamp) }()
	select {
	case n := <-done:
		t.Fatalf("session read returned %d while replication is paused", n)
	case <-time.After(100 * time.Millisecond):
	}
	b.ResumeReplication()
	if n := <-done; n != 20 {
		t.Fatalf("session read after resume saw %d rows", n)
	}
	if got := replInfo(t, cb, "a", b.PChannels()[1]).GetCheckpoint().GetTimeTick(); got < res.Timestamp {
		t.Fatalf("checkpoint %d behind the write %d after resume", got, res.Timestamp)
	}
}

// TestReplicationDelay: with a replication delay the target applies each
// message only after it; a Session read waits accordingly.
func TestReplicationDelay(t *testing.T) {
	const delay = 300 * time.Millisecond
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	join(t, a, b)
	ca, cb := rawClient(t, a), rawClient(t, b)
	createCollection(t, ca, "d", 4, 1, commonpb.ConsistencyLevel_Bounded, "L2")
	waitCollection(t, cb, "d")
	b.SetReplicationDelay(delay)
	res := insertRange(t, ca, "d", 1, 5)
	start := time.Now()
	if n := sessionCount(t, cb, "d", res.Timestamp); n != 5 {
		t.Fatalf("count %d", n)
	}
	if el := time.Since(start); el < delay/2 {
		t.Fatalf("session read returned after %v with a %v replication delay", el, delay)
	}
	ck := replInfo(t, cb, "a", b.PChannels()[0]).GetCheckpoint().GetTimeTick()
	if lag := time.Since(PhysicalTime(ck)); lag < delay/2 {
		t.Fatalf("checkpoint lag %v with a %v delay", lag, delay)
	}
}

// srcIDs lists, per pchannel of target, the source message ids it applied
// from source, in order.
func srcIDs(target *Cluster, source string) [][]int64 {
	out := make([][]int64, len(target.wals))
	for p, w := range target.wals {
		for id := int64(1); ; id++ {
			e, _ := w.get(id)
			if e == nil {
				break
			}
			if e.src == source {
				out[p] = append(out[p], e.srcID)
			}
		}
	}
	return out
}

// TestDropStreamResumesWithoutLossOrDuplication breaks the incoming streams
// repeatedly while the source writes; the source's CDC reconnects, resumes
// from the checkpoint, and the target ends with every message exactly once.
func TestDropStreamResumesWithoutLossOrDuplication(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	join(t, a, b)
	ca, cb := rawClient(t, a), rawClient(t, b)
	createCollection(t, ca, "drop", 4, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	waitCollection(t, cb, "drop")
	before := b.inboundStreams.Load()
	var last *milvuspb.MutationResult
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
				b.DropStream()
			}
		}
	}()
	const batches, per = 60, 5
	for i := 0; i < batches; i++ {
		last = insertRange(t, ca, "drop", int64(1+i*per), per)
		if i%12 == 11 {
			// The ticker alone may not fire before a fast machine has
			// written every batch: also drop on a schedule of our own and
			// wait for the source's CDC to reconnect before writing on.
			n := b.inboundStreams.Load()
			b.DropStream()
			deadline := time.Now().Add(10 * time.Second)
			for b.inboundStreams.Load() == n && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	close(stop)
	wg.Wait()
	if n := sessionCount(t, cb, "drop", last.Timestamp); n != batches*per {
		t.Fatalf("target has %d rows, want %d", n, batches*per)
	}
	if got := b.inboundStreams.Load() - before; got < 4 {
		t.Fatalf("only %d streams accepted: the drops did not force reconnects", got)
	}
	// Every source message after the configuration message, exactly once and
	// in order, on every pchannel.
	for p, ids := range srcIDs(b, "a") {
		if len(ids) == 0 {
			t.Fatalf("pchannel %d: nothing replicated", p)
		}
		for i := 1; i < len(ids); i++ {
			if ids[i] != ids[i-1]+1 {
				t.Fatalf("pchannel %d: source ids %d then %d (gap or duplicate)", p, ids[i-1], ids[i])
			}
		}
		var inserts int
		for _, id := range ids {
			e, _ := a.wals[p].get(id)
			if e.kind == kindInsert {
				inserts++
			}
		}
		var want int
		for id := ids[0]; id <= a.wals[p].lastID(); id++ {
			if e, _ := a.wals[p].get(id); e.kind == kindInsert && e.ts <= last.Timestamp {
				want++
			}
		}
		if inserts < want {
			t.Fatalf("pchannel %d: %d inserts replicated, source has %d", p, inserts, want)
		}
	}
}

// TestTargetRefusesWrites: a replication target refuses writes and DDL with
// a Milvus error that says it is a replication target, and serves reads.
func TestTargetRefusesWrites(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	join(t, a, b)
	ca, cb := rawClient(t, a), rawClient(t, b)
	createCollection(t, ca, "ro", 4, 1, commonpb.ConsistencyLevel_Bounded, "L2")
	res := insertRange(t, ca, "ro", 1, 3)
	waitCollection(t, cb, "ro")
	check := func(name string, st *commonpb.Status, err error) {
		t.Helper()
		reason := failedSt(t, codeUnexpected)(st, err)
		if !strings.Contains(reason, "replication target") || !strings.Contains(reason, "secondary") || !strings.Contains(reason, "REPLICATE_VIOLATION") {
			t.Fatalf("%s refused with %q", name, reason)
		}
	}
	r := genRows(2, 4, 500, 1)
	ins, err := cb.Insert(tctx(t), &milvuspb.InsertRequest{CollectionName: "ro", FieldsData: r.fieldData(4), NumRows: 2})
	check("insert", ins.GetStatus(), err)
	up, err := cb.Upsert(tctx(t), &milvuspb.UpsertRequest{CollectionName: "ro", FieldsData: r.fieldData(4), NumRows: 2})
	check("upsert", up.GetStatus(), err)
	del, err := cb.Delete(tctx(t), &milvuspb.DeleteRequest{CollectionName: "ro", Expr: "id in [1]"})
	check("delete", del.GetStatus(), err)
	schema, _ := proto.Marshal(testSchema("x", 4, false))
	st, err := cb.CreateCollection(tctx(t), &milvuspb.CreateCollectionRequest{CollectionName: "x", Schema: schema})
	check("create collection", st, err)
	st, err = cb.DropCollection(tctx(t), &milvuspb.DropCollectionRequest{CollectionName: "ro"})
	check("drop collection", st, err)
	st, err = cb.CreateIndex(tctx(t), &milvuspb.CreateIndexRequest{CollectionName: "ro", FieldName: "age"})
	check("create index", st, err)
	st, err = cb.CreateDatabase(tctx(t), &milvuspb.CreateDatabaseRequest{DbName: "d"})
	check("create database", st, err)
	if n := sessionCount(t, cb, "ro", res.Timestamp); n != 3 {
		t.Fatalf("target read %d", n)
	}
}

func forcePromote(ctx context.Context, c *Cluster, cfg *commonpb.ReplicateConfiguration) error {
	return UpdateReplicateConfiguration(ctx, c.Addr(), c.tokenFor(), cfg, true)
}

// TestForcePromoteEmptyShape: a cluster behaving as later Milvus sources
// do takes force_promote with an empty configuration (it builds the
// standalone one from its own entry) and refuses the one-cluster shape
// with the message a client switches shapes on.
func TestForcePromoteEmptyShape(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b", ForcePromoteShape: ForcePromoteEmpty})
	join(t, a, b)
	ctx := tctx(t)
	onlyB := &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{b.Config()}}
	if err := forcePromote(ctx, b, onlyB); err == nil || !strings.Contains(err.Error(), "force promote requires empty cluster and topology fields") {
		t.Fatalf("one-cluster shape: %v", err)
	}
	if err := forcePromote(ctx, b, ReplicationConfig(a, b)); err == nil || !strings.Contains(err.Error(), "empty cluster and topology") {
		t.Fatalf("current configuration: %v", err)
	}
	if b.Role() != "secondary" {
		t.Fatal("a refused force promote changed the role")
	}
	if err := forcePromote(ctx, b, &commonpb.ReplicateConfiguration{}); err != nil {
		t.Fatalf("empty shape: %v", err)
	}
	if b.Role() != "primary" {
		t.Fatalf("b is %s after force promote", b.Role())
	}
	if n := b.Status().ForcePromotions; n != 1 {
		t.Fatalf("force promotions counted = %d after one (refused ones do not count)", n)
	}
	cfg := b.repl.config()
	if len(cfg.GetClusters()) != 1 || cfg.GetClusters()[0].GetClusterId() != "b" || len(cfg.GetCrossClusterTopology()) != 0 {
		t.Fatalf("configuration after the promotion %v", cfg)
	}
	if _, err := Start(ctx, Options{ClusterID: "x", ForcePromoteShape: "both"}); err == nil || !strings.Contains(err.Error(), "ForcePromoteShape") {
		t.Fatalf("bad shape option: %v", err)
	}
}

// TestForcePromote: force promotion is refused on a primary, with other
// clusters and with a topology; on a secondary it records the salvage
// checkpoint and makes it a writable primary. The old source, sent the new
// configuration, becomes a target that refuses writes and receives the new
// primary's data, and DumpMessages on it shows what never replicated.
func TestForcePromote(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	join(t, a, b)
	ca, cb := rawClient(t, a), rawClient(t, b)
	createCollection(t, ca, "fp", 4, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	res := insertRange(t, ca, "fp", 1, 20)
	waitCollection(t, cb, "fp")
	if n := sessionCount(t, cb, "fp", res.Timestamp); n != 20 {
		t.Fatalf("count %d", n)
	}
	ctx := tctx(t)
	onlyB := &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{b.Config()}}
	for _, tc := range []struct {
		name string
		on   *Cluster
		cfg  *commonpb.ReplicateConfiguration
		want string
	}{
		{"on the primary", a, &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{a.Config()}}, "secondary"},
		{"with other clusters", b, &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{a.Config(), b.Config()}}, "cluster"},
		{"with another cluster only", b, &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{a.Config()}}, "cluster"},
		{"with a topology", b, &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{b.Config()},
			CrossClusterTopology: []*commonpb.CrossClusterTopology{{SourceClusterId: "a", TargetClusterId: "b"}}}, "topology"},
		// Validated before the "same configuration" no-op, as Milvus does.
		{"with the current configuration", b, ReplicationConfig(a, b), "exactly one cluster"},
		{"empty (the other shape)", b, &commonpb.ReplicateConfiguration{}, "exactly one cluster"},
	} {
		err := forcePromote(ctx, tc.on, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("force promote %s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	if b.Role() != "secondary" {
		t.Fatal("a refused force promote changed the role")
	}
	// Writes the target never receives.
	b.PauseReplication()
	time.Sleep(50 * time.Millisecond)
	lost := insertRange(t, ca, "fp", 1000, 10)
	if err := forcePromote(ctx, b, onlyB); err != nil {
		t.Fatal(err)
	}
	// b is a primary now: the same request again is refused, not a no-op.
	if err := forcePromote(ctx, b, onlyB); err == nil || !strings.Contains(err.Error(), "can only be used on secondary clusters") {
		t.Fatalf("repeating the same force promote: %v", err)
	}
	b.ResumeReplication()
	if b.Role() != "primary" {
		t.Fatal("b is not primary after force promote")
	}
	// Everything a wrote on its own lies before this timestamp.
	end := resp(t)(ca.AllocTimestamp(ctx, &milvuspb.AllocTimestampRequest{})).(*milvuspb.AllocTimestampResponse).GetTimestamp()
	if n := count(t, cb, "fp", commonpb.ConsistencyLevel_Strong, 0); n != 20 {
		t.Fatalf("promoted cluster has %d rows, want the 20 replicated", n)
	}
	salvage := map[int]*commonpb.ReplicateCheckpoint{}
	for p, pch := range b.PChannels() {
		info := replInfo(t, cb, "a", pch)
		sc := info.GetSalvageCheckpoint()
		if sc == nil || sc.GetClusterId() != "a" || sc.GetPchannel() != a.PChannels()[p] || sc.GetMessageId() == nil {
			t.Fatalf("salvage checkpoint on %s: %v", pch, sc)
		}
		if sc.GetTimeTick() >= lost.Timestamp {
			t.Fatalf("salvage checkpoint %d is after the unreplicated write %d", sc.GetTimeTick(), lost.Timestamp)
		}
		salvage[p] = sc
	}
	// b takes writes.
	after := insertRange(t, cb, "fp", 2000, 5)
	if after.GetTimestamp() <= lost.Timestamp {
		t.Fatalf("new primary's timestamp %d not after everything it saw", after.GetTimestamp())
	}
	// a is told it is now a target of b.
	cfg := ReplicationConfig(b, a)
	if err := UpdateReplicateConfiguration(ctx, a.Addr(), "", cfg, false); err != nil {
		t.Fatal(err)
	}
	if err := UpdateReplicateConfiguration(ctx, b.Addr(), "", cfg, false); err != nil {
		t.Fatal(err)
	}
	if a.Role() != "secondary" {
		t.Fatal("old source is not secondary")
	}
	r := genRows(1, 4, 3000, 1)
	ins, err := ca.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "fp", FieldsData: r.fieldData(4), NumRows: 1})
	if reason := failedSt(t, codeUnexpected)(ins.GetStatus(), err); !strings.Contains(reason, "replication target") {
		t.Fatalf("old source refused with %q", reason)
	}
	// It receives the new primary's writes from now on.
	later := insertRange(t, cb, "fp", 4000, 3)
	testutil.Eventually(t, 5*time.Second, "new primary's write on the old source", func() bool {
		res := resp(t)(ca.Query(ctx, &milvuspb.QueryRequest{CollectionName: "fp", Expr: "id >= 4000", OutputFields: []string{"count(*)"},
			ConsistencyLevel: commonpb.ConsistencyLevel_Session, GuaranteeTimestamp: later.Timestamp})).(*milvuspb.QueryResults)
		return longs(res.GetFieldsData()[0])[0] == 3
	})
	// What a holds past the salvage checkpoints: the lost rows.
	var dumped []int64
	for p, sc := range salvage {
		stream, err := ca.DumpMessages(ctx, &milvuspb.DumpMessagesRequest{Pchannel: a.PChannels()[p], StartMessageId: sc.GetMessageId(), EndTimetick: end})
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			msg := m.GetMessage()
			if msg.GetProperties()[propType] != kindInsert || msg.GetProperties()[propPChannel] != a.PChannels()[p] {
				continue
			}
			var ir msgpb.InsertRequest
			if err := proto.Unmarshal(msg.GetPayload(), &ir); err != nil {
				t.Fatal(err)
			}
			if ir.GetCollectionName() != "fp" {
				t.Fatalf("dumped insert of %s", ir.GetCollectionName())
			}
			for _, fd := range ir.GetFieldsData() {
				if fd.GetFieldName() == "id" {
					dumped = append(dumped, longs(fd)...)
				}
			}
		}
	}
	for id := int64(1000); id < 1010; id++ {
		if !slices.Contains(dumped, id) {
			t.Fatalf("DumpMessages from the salvage checkpoints misses lost row %d (dumped %v)", id, dumped)
		}
	}
	for _, id := range dumped {
		if id >= 2000 {
			t.Fatalf("DumpMessages returned row %d the new primary wrote", id)
		}
	}
}

// TestSwitchover follows Milvus's planned switchover: the same new
// configuration goes to both clusters; the new primary's call waits until the
// old primary's configuration message (behind all its data) arrives; no write
// is lost and roles flip.
func TestSwitchover(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	join(t, a, b)
	ca, cb := rawClient(t, a), rawClient(t, b)
	createCollection(t, ca, "sw", 4, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	waitCollection(t, cb, "sw")
	b.SetReplicationDelay(100 * time.Millisecond) // data still in flight at the switch
	insertRange(t, ca, "sw", 1, 30)
	cfg := ReplicationConfig(b, a)
	ctx := tctx(t)
	// The new primary first: it must wait for the old primary.
	bDone := make(chan error, 1)
	go func() { bDone <- UpdateReplicateConfiguration(ctx, b.Addr(), "", cfg, false) }()
	select {
	case err := <-bDone:
		t.Fatalf("the secondary answered before the primary was told: %v", err)
	case <-time.After(150 * time.Millisecond):
	}
	if err := UpdateReplicateConfiguration(ctx, a.Addr(), "", cfg, false); err != nil {
		t.Fatal(err)
	}
	if a.Role() != "secondary" {
		t.Fatal("old primary still primary")
	}
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}
	if b.Role() != "primary" {
		t.Fatal("new primary is not primary")
	}
	b.SetReplicationDelay(0)
	// Everything a acknowledged is on b, before b's first write.
	if n := count(t, cb, "sw", commonpb.ConsistencyLevel_Strong, 0); n != 30 {
		t.Fatalf("new primary has %d of 30 rows", n)
	}
	res := insertRange(t, cb, "sw", 100, 5)
	if n := sessionCount(t, ca, "sw", res.Timestamp); n != 35 {
		t.Fatalf("old primary (now target) has %d rows", n)
	}
	r := genRows(1, 4, 999, 1)
	ins, err := ca.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "sw", FieldsData: r.fieldData(4), NumRows: 1})
	failedSt(t, codeUnexpected)(ins.GetStatus(), err)
	// Retrying either call is safe.
	if err := UpdateReplicateConfiguration(ctx, a.Addr(), "", cfg, false); err != nil {
		t.Fatal(err)
	}
	if err := UpdateReplicateConfiguration(ctx, b.Addr(), "", cfg, false); err != nil {
		t.Fatal(err)
	}
	// a's CDC to b stopped after draining: b's checkpoint from a sits on a's
	// configuration message.
	for p := range b.PChannels() {
		ck, ok := b.repl.checkpoint("a", p)
		if !ok {
			t.Fatalf("pchannel %d: no checkpoint from a", p)
		}
		e, _ := a.wals[p].get(ck.msgID)
		if e == nil || e.kind != kindAlterReplicaConfig {
			t.Fatalf("pchannel %d: last message from a is %v, want the configuration message", p, e)
		}
	}
}

// TestSecondaryUpdateWaitsForPrimary: a secondary answers
// UpdateReplicateConfiguration only once the configuration arrives from its
// primary; until then the call blocks until the client gives up.
func TestSecondaryUpdateWaitsForPrimary(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	c := startCluster(t, Options{ClusterID: "c"})
	join(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := UpdateReplicateConfiguration(ctx, b.Addr(), "", ReplicationConfig(a, b, c), false)
	if err == nil || !strings.Contains(err.Error(), "DeadlineExceeded") && !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("secondary answered without its primary: %v", err)
	}
}

// TestFailoverReattachesOtherTargets: a -> {b, c}; a is lost; b is force
// promoted; c is attached to b with an ordinary configuration update and
// follows b.
func TestFailoverReattachesOtherTargets(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	c := startCluster(t, Options{ClusterID: "c"})
	join(t, a, b, c)
	ca, cb, cc := rawClient(t, a), rawClient(t, b), rawClient(t, c)
	createCollection(t, ca, "fo", 4, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	res := insertRange(t, ca, "fo", 1, 10)
	waitCollection(t, cb, "fo")
	waitCollection(t, cc, "fo")
	if sessionCount(t, cb, "fo", res.Timestamp) != 10 || sessionCount(t, cc, "fo", res.Timestamp) != 10 {
		t.Fatal("targets did not catch up")
	}
	a.Crash()
	ctx := tctx(t)
	if err := forcePromote(ctx, b, &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{b.Config()}}); err != nil {
		t.Fatal(err)
	}
	if err := JoinReplication(ctx, b, c); err != nil {
		t.Fatal(err)
	}
	if c.Role() != "secondary" || c.Status().Source != "b" {
		t.Fatalf("c: %+v", c.Status())
	}
	res = insertRange(t, cb, "fo", 100, 7)
	if n := sessionCount(t, cc, "fo", res.Timestamp); n != 17 {
		t.Fatalf("c has %d rows after following b", n)
	}
	ck := replInfo(t, cc, "b", c.PChannels()[0]).GetCheckpoint()
	if ck.GetClusterId() != "b" || ck.GetPchannel() != b.PChannels()[0] {
		t.Fatalf("c's checkpoint from b: %v", ck)
	}
}

// TestReplicationWithAuth: CDC authenticates to the target with the token in
// the configuration.
func TestReplicationWithAuth(t *testing.T) {
	users := map[string]string{"root": "Milvus"}
	a := startCluster(t, Options{ClusterID: "a", Users: users})
	b := startCluster(t, Options{ClusterID: "b", Users: users})
	join(t, a, b)
	if b.Role() != "secondary" {
		t.Fatal("join failed")
	}
	testutil.Eventually(t, 5*time.Second, "checkpoint on authenticated target", func() bool {
		ck, ok := b.repl.checkpoint("a", 0)
		return ok && ck.ts > 0
	})
}

// TestSwitchoverWithLaggingThirdCluster: a -> {b, c} switches to b -> {a, c}
// while c lags far behind a (paused, its incoming queues and the gRPC flow
// control full). c must not apply b's messages on a pchannel before a's
// remaining ones: every pchannel of c stays in timestamp order and ends with
// every row exactly once.
func TestSwitchoverWithLaggingThirdCluster(t *testing.T) {
	a := startCluster(t, Options{ClusterID: "a"})
	b := startCluster(t, Options{ClusterID: "b"})
	c := startCluster(t, Options{ClusterID: "c"})
	join(t, a, b, c)
	ca, cb, cc := rawClient(t, a), rawClient(t, b), rawClient(t, c)
	createCollection(t, ca, "lag", 4, 2, commonpb.ConsistencyLevel_Bounded, "L2")
	waitCollection(t, cc, "lag")
	c.PauseReplication()
	const writes = 400
	for i := 0; i < writes; i++ {
		insertRange(t, ca, "lag", int64(1+i), 1)
	}
	cfg := ReplicationConfig(b, a, c)
	ctx := tctx(t)
	cDone := make(chan error, 1)
	go func() { cDone <- UpdateReplicateConfiguration(ctx, c.Addr(), "", cfg, false) }()
	for _, cl := range []*Cluster{a, b} {
		if err := UpdateReplicateConfiguration(ctx, cl.Addr(), "", cfg, false); err != nil {
			t.Fatal(err)
		}
	}
	res := insertRange(t, cb, "lag", 1000, 20)
	time.Sleep(100 * time.Millisecond) // b's CDC reaches c and queues up behind the pause
	c.ResumeReplication()
	if err := <-cDone; err != nil {
		t.Fatal(err)
	}
	if n := sessionCount(t, cc, "lag", res.Timestamp); n != writes+20 {
		t.Fatalf("c has %d rows, want %d", n, writes+20)
	}
	if n := sessionCount(t, ca, "lag", res.Timestamp); n != writes+20 {
		t.Fatalf("a has %d rows, want %d", n, writes+20)
	}
	for p, w := range c.wals {
		var prev uint64
		for id := int64(1); id <= w.lastID(); id++ {
			e, _ := w.get(id)
			if e.src == "" {
				continue // c's own configuration message from the join
			}
			if e.ts < prev {
				t.Fatalf("c pchannel %d: message %d (%s from %s) has ts %d after %d", p, id, e.kind, e.src, e.ts, prev)
			}
			prev = e.ts
		}
	}
	for _, src := range []string{"a", "b"} {
		for p, ids := range srcIDs(c, src) {
			for i := 1; i < len(ids); i++ {
				if ids[i] != ids[i-1]+1 {
					t.Fatalf("c pchannel %d from %s: ids %d then %d", p, src, ids[i-1], ids[i])
				}
			}
		}
	}
}
