package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/consistency"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

const (
	Strong     = commonpb.ConsistencyLevel_Strong
	Session    = commonpb.ConsistencyLevel_Session
	Bounded    = commonpb.ConsistencyLevel_Bounded
	Eventually = commonpb.ConsistencyLevel_Eventually
	Customized = commonpb.ConsistencyLevel_Customized
)

func search(coll string, level commonpb.ConsistencyLevel, g uint64, udc bool) *milvuspb.SearchRequest {
	return &milvuspb.SearchRequest{CollectionName: coll, ConsistencyLevel: level, GuaranteeTimestamp: g,
		UseDefaultConsistency: udc, Nq: 1, Dsl: "",
		SearchInput: &milvuspb.SearchRequest_PlaceholderGroup{PlaceholderGroup: make([]byte, 4*128+16)}}
}

// served returns the backend that got the last Search-like call, and what
// it received.
func (e *env) lastRead(method string) (string, recorded) {
	e.t.Helper()
	for id, b := range e.backends {
		if got := b.received(method); len(got) > 0 {
			return id, got[len(got)-1]
		}
	}
	e.t.Fatalf("no backend received %s", method)
	return "", recorded{}
}

// forwarded returns the consistency fields a backend received.
func forwarded(r recorded) (commonpb.ConsistencyLevel, uint64, bool) {
	switch q := r.req.(type) {
	case *milvuspb.SearchRequest:
		return q.GetConsistencyLevel(), q.GetGuaranteeTimestamp(), q.GetUseDefaultConsistency()
	case *milvuspb.QueryRequest:
		return q.GetConsistencyLevel(), q.GetGuaranteeTimestamp(), q.GetUseDefaultConsistency()
	case *milvuspb.HybridSearchRequest:
		return q.GetConsistencyLevel(), q.GetGuaranteeTimestamp(), q.GetUseDefaultConsistency()
	}
	panic("not a read")
}

func TestReadRouting(t *testing.T) { bothEngines(t, testReadRouting) }

func testReadRouting(t *testing.T) {
	e := newEnv(t)
	now := e.tso.Load()
	bounded := hybridts.SubDuration(now, 5*time.Second)
	type want struct {
		cluster   string
		level     commonpb.ConsistencyLevel
		guarantee uint64
		udc       bool
		reason    string
	}
	tests := []struct {
		name string
		ckpt uint64 // checkpoint of b and c
		req  *milvuspb.SearchRequest
		want want
	}{
		{"Go Eventually goes to an alternative as Eventually/1", 0,
			search("coll", Eventually, 0, false), want{"b", Eventually, 1, false, "alternative"}},
		{"pymilvus Eventually", 0,
			search("coll", Eventually, 1, false), want{"b", Eventually, 1, false, "alternative"}},
		{"Strong goes to the leader unchanged", now,
			search("coll", Strong, 0, false), want{"a", Strong, 0, false, "leader_strong"}},
		{"Bounded on a caught-up alternative", now,
			search("coll", Bounded, 0, false), want{"b", Customized, bounded, false, "alternative"}},
		{"pymilvus Bounded (Strong level + GT 2 is Bounded too)", now,
			search("coll", Strong, 2, false), want{"b", Customized, bounded, false, "alternative"}},
		{"Bounded with lagging alternatives goes to the leader", hybridts.SubDuration(now, 10*time.Second),
			search("coll", Bounded, 2, false), want{"a", Customized, bounded, false, "leader_lag"}},
		{"collection default (Bounded) via use_default", now,
			search("coll", Bounded, 0, true), want{"b", Customized, bounded, false, "alternative"}},
		{"Session without writes waits for nothing", 0,
			search("coll", Session, 1, false), want{"b", Eventually, 1, false, "alternative"}},
		{"Go Session (GT 0) without writes", 0,
			search("coll", Session, 0, false), want{"b", Eventually, 1, false, "alternative"}},
		{"Session with the client's own bound, lagging", now - 100,
			search("coll", Session, now, false), want{"a", Customized, now, false, "leader_lag"}},
		{"Session with the client's own bound, caught up", now,
			search("coll", Session, now, false), want{"b", Customized, now, false, "alternative"}},
		{"Customized with a sentinel is never forwarded as Customized 0", 0,
			search("coll", Customized, 0, false), want{"b", Eventually, 1, false, "alternative"}},
		{"Customized with a timestamp", now,
			search("coll", Customized, now-5, false), want{"b", Customized, now - 5, false, "alternative"}},
		{"iterator page is pinned and forwarded unchanged", now,
			func() *milvuspb.SearchRequest {
				r := search("coll", Bounded, now-7, true)
				r.SearchParams = []*commonpb.KeyValuePair{{Key: "iterator", Value: "true"}}
				return r
			}(), want{"b", Bounded, now - 7, true, "alternative"}},
		{"unknown collection goes to the leader unchanged", now,
			search("nosuch", Eventually, 0, false), want{"a", Eventually, 0, false, ReasonLeaderNoCollInfo}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.resetBackends()
			e.topo.setCheckpoint("b", tc.ckpt)
			e.topo.setCheckpoint("c", tc.ckpt)
			var hdr metadata.MD
			if _, err := e.client.Search(e.ctx(), tc.req, grpc.Header(&hdr)); err != nil {
				t.Fatal(err)
			}
			id, rec := e.lastRead("Search")
			level, g, udc := forwarded(rec)
			got := want{id, level, g, udc, e.events.last().Reason}
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			if h := hdr.Get(HeaderCluster); len(h) != 1 || h[0] != tc.want.cluster {
				t.Fatalf("header %s = %v, want %s", HeaderCluster, h, tc.want.cluster)
			}
			if e.totalReceived("Search") != 1 {
				t.Fatalf("%d backends got the Search", e.totalReceived("Search"))
			}
		})
	}
}

func TestQueryAndHybridSearchRewrite(t *testing.T) { bothEngines(t, testQueryAndHybridSearchRewrite) }

func testQueryAndHybridSearchRewrite(t *testing.T) {
	e := newEnv(t)
	now := e.tso.Load()
	e.topo.setCheckpoint("b", now)
	e.topo.setCheckpoint("c", now)
	bounded := hybridts.SubDuration(now, 5*time.Second)
	if _, err := e.client.Query(e.ctx(), &milvuspb.QueryRequest{CollectionName: "coll", ConsistencyLevel: Bounded}); err != nil {
		t.Fatal(err)
	}
	id, rec := e.lastRead("Query")
	if l, g, udc := forwarded(rec); id != "b" || l != Customized || g != bounded || udc {
		t.Fatalf("Query: %s %v %d %v", id, l, g, udc)
	}
	if _, err := e.client.HybridSearch(e.ctx(), &milvuspb.HybridSearchRequest{CollectionName: "coll", UseDefaultConsistency: true,
		Requests: []*milvuspb.SearchRequest{search("coll", Strong, 0, false)}}); err != nil {
		t.Fatal(err)
	}
	id, rec = e.lastRead("HybridSearch")
	if l, g, udc := forwarded(rec); id != "b" || l != Customized || g != bounded || udc {
		t.Fatalf("HybridSearch: %s %v %d %v", id, l, g, udc)
	}
	// Sub-requests are forwarded as sent: Milvus reads the outer fields.
	if sub := rec.req.(*milvuspb.HybridSearchRequest).GetRequests()[0]; sub.GetConsistencyLevel() != Strong {
		t.Fatalf("sub-request changed: %v", sub)
	}
}

// TestSessionReadYourWrites: a Session read after a write through the proxy
// demands the write's timestamp; alternatives serve it once they have
// replicated that far. Another session is not held back.
func TestSessionReadYourWrites(t *testing.T) { bothEngines(t, testSessionReadYourWrites) }

func testSessionReadYourWrites(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx("identifier", "7")
	e.topo.setCheckpoint("b", e.start)
	e.topo.setCheckpoint("c", e.start)
	res, err := e.client.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 3})
	if err != nil || res.GetStatus().GetCode() != 0 {
		t.Fatalf("insert: %v %v", res, err)
	}
	w := res.GetTimestamp()
	if w <= e.start || len(res.GetIDs().GetIntId().GetData()) != 3 {
		t.Fatalf("insert result not passed through: %v", res)
	}
	if got := e.srv.sessions.LastWrite("id:7", "", "coll"); got != w {
		t.Fatalf("session write = %d, want %d", got, w)
	}

	for _, step := range []struct {
		ctx     context.Context
		ckpt    uint64
		cluster string
		level   commonpb.ConsistencyLevel
		g       uint64
	}{
		{ctx, e.start, "a", Customized, w},                      // lagging: the leader, bound to w
		{ctx, w, "b", Customized, w},                            // caught up
		{e.ctx("identifier", "8"), e.start, "b", Eventually, 1}, // another session wrote nothing
	} {
		e.resetBackends()
		e.topo.setCheckpoint("b", step.ckpt)
		e.topo.setCheckpoint("c", step.ckpt)
		if _, err := e.client.Search(step.ctx, search("coll", Session, 0, false)); err != nil {
			t.Fatal(err)
		}
		id, rec := e.lastRead("Search")
		if l, g, _ := forwarded(rec); id != step.cluster || l != step.level || g != step.g {
			t.Fatalf("ckpt %d: served by %s with %v/%d, want %s %v/%d", step.ckpt, id, l, g, step.cluster, step.level, step.g)
		}
	}

	// use_default on a Session collection counts the session too.
	e.resetBackends()
	e.topo.setCheckpoint("b", e.start)
	e.topo.setCheckpoint("c", e.start)
	res, err = e.client.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "sessioncoll", NumRows: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Search(ctx, search("sessioncoll", Bounded, 0, true)); err != nil {
		t.Fatal(err)
	}
	if id, rec := e.lastRead("Search"); id != "a" {
		t.Fatalf("use_default Session read served by %s: %v", id, rec.req)
	} else if _, g, _ := forwarded(rec); g != res.GetTimestamp() {
		t.Fatalf("use_default Session guarantee %d, want %d", g, res.GetTimestamp())
	}
}

func TestMetadataPassesThrough(t *testing.T) { bothEngines(t, testMetadataPassesThrough) }

func testMetadataPassesThrough(t *testing.T) {
	e := newEnv(t)
	e.topo.mu.Lock()
	e.topo.colls["db1.coll"] = e.topo.colls["default.coll"]
	e.topo.mu.Unlock()
	kv := []string{
		"authorization", "dXNlcjpwYXNz",
		"dbname", "db1",
		"identifier", "99",
		"client-request-id", "req-1",
		"client-request-unixmsec", "1700000000000",
		"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"x-custom", "v",
	}
	var hdr metadata.MD
	if _, err := e.client.Search(e.ctx(kv...), search("coll", Eventually, 0, false), grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	_, rec := e.lastRead("Search")
	for i := 0; i < len(kv); i += 2 {
		if got := rec.md.Get(kv[i]); len(got) != 1 || got[0] != kv[i+1] {
			t.Errorf("backend metadata %s = %v, want %q", kv[i], got, kv[i+1])
		}
	}
	if got := rec.md.Get(HeaderCluster); len(got) != 0 {
		t.Errorf("backend got %s", HeaderCluster)
	}
	if got := hdr.Get(HeaderCluster); len(got) != 1 || got[0] != "b" {
		t.Errorf("response header = %v", got)
	}
	// The dbname header selects the database when the request names
	// none: default.coll would do too, but db2.coll is unknown.
	e.resetBackends()
	if _, err := e.client.Search(e.ctx("dbname", "db2"), search("coll", Eventually, 0, false)); err != nil {
		t.Fatal(err)
	}
	if ev := e.events.last(); ev.Reason != ReasonLeaderNoCollInfo || ev.Cluster != "a" {
		t.Fatalf("db2.coll: event %+v", ev)
	}
}

func TestReadRetriesAfterTransportFailure(t *testing.T) {
	bothEngines(t, testReadRetriesAfterTransportFailure)
}

func testReadRetriesAfterTransportFailure(t *testing.T) {
	e := newEnv(t)
	unavailable := func() error { return status.Error(codes.Unavailable, "connection reset") }
	e.backends["b"].setFail("Search", unavailable)
	var hdr metadata.MD
	if _, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false), grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(HeaderCluster); len(got) != 1 || got[0] != "c" {
		t.Fatalf("served by %v, want c", got)
	}
	if n := len(e.backends["b"].received("Search")); n != 1 {
		t.Fatalf("b got %d", n)
	}
	if ev := e.events.last(); ev.Attempts != 2 || ev.Cluster != "c" {
		t.Fatalf("event %+v", ev)
	}

	// Both alternatives down: finally the leader.
	e.backends["c"].setFail("Search", unavailable)
	e.resetBackends()
	if _, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false), grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(HeaderCluster); got[0] != "a" {
		t.Fatalf("served by %v, want a", got)
	}
	if e.events.last().Attempts != 3 {
		t.Fatalf("attempts %d", e.events.last().Attempts)
	}

	// Everything down: the client sees the failure.
	e.backends["a"].setFail("Search", unavailable)
	if _, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false)); status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v", err)
	}

	// A refusal is an answer, not a transport failure: not retried.
	e.backends["b"].setFail("Search", func() error { return status.Error(codes.PermissionDenied, "no") })
	e.resetBackends()
	if _, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("err = %v", err)
	}
	if e.totalReceived("Search") != 1 {
		t.Fatalf("PermissionDenied retried: %d calls", e.totalReceived("Search"))
	}
}

func TestReadFallsBackWhenAlternativeCannotServe(t *testing.T) {
	bothEngines(t, testReadFallsBackWhenAlternativeCannotServe)
}

func testReadFallsBackWhenAlternativeCannotServe(t *testing.T) {
	e := newEnv(t)
	for _, code := range []int32{100, 101, 800} {
		e.resetBackends()
		e.backends["b"].setStatus("Search", code)
		var hdr metadata.MD
		res, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false), grpc.Header(&hdr))
		if err != nil || res.GetStatus().GetCode() != 0 {
			t.Fatalf("code %d: %v %v", code, res.GetStatus(), err)
		}
		if got := hdr.Get(HeaderCluster)[0]; got != "a" || e.events.last().Reason != ReasonLeaderFallback {
			t.Fatalf("code %d: served by %s (%s)", code, got, e.events.last().Reason)
		}
	}
	// Other Milvus errors are the answer.
	e.backends["b"].setStatus("Search", 1100)
	res, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false))
	if err != nil || res.GetStatus().GetCode() != 1100 || e.totalReceived("Search") == 0 {
		t.Fatalf("invalid-parameter answer not passed through: %v %v", res.GetStatus(), err)
	}
}

func TestWriteRules(t *testing.T) { bothEngines(t, testWriteRules) }

func testWriteRules(t *testing.T) {
	t.Run("insert with unknown outcome is not retried", func(t *testing.T) {
		e := newEnv(t)
		e.backends["a"].setFail("Insert", func() error { return status.Error(codes.Unavailable, "connection reset") })
		res, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
		if err != nil {
			t.Fatalf("want a Milvus status, not a gRPC error an SDK would retry: %v", err)
		}
		if res.GetStatus().GetCode() != codeOutcomeUnknown || !strings.Contains(res.GetStatus().GetReason(), "outcome unknown") {
			t.Fatalf("status %v", res.GetStatus())
		}
		if n := e.totalReceived("Insert"); n != 1 {
			t.Fatalf("insert sent %d times", n)
		}
		for _, id := range []string{"b", "c"} {
			if n := len(e.backends[id].received("Insert")); n != 0 {
				t.Fatalf("write reached alternative %s", id)
			}
		}
	})
	t.Run("upsert and delete are retried once", func(t *testing.T) {
		e := newEnv(t)
		var n atomic.Int32
		e.backends["a"].setFail("Upsert", func() error {
			if n.Add(1) == 1 {
				return status.Error(codes.Unavailable, "connection reset")
			}
			return nil
		})
		res, err := e.client.Upsert(e.ctx(), &milvuspb.UpsertRequest{CollectionName: "coll", NumRows: 1})
		if err != nil || res.GetStatus().GetCode() != 0 {
			t.Fatalf("%v %v", res, err)
		}
		if got := len(e.backends["a"].received("Upsert")); got != 2 {
			t.Fatalf("upsert sent %d times, want 2", got)
		}
		e.backends["a"].setFail("Delete", func() error { return status.Error(codes.Unavailable, "down") })
		if _, err := e.client.Delete(e.ctx(), &milvuspb.DeleteRequest{CollectionName: "coll"}); status.Code(err) != codes.Unavailable {
			t.Fatalf("delete err %v", err)
		}
		if got := len(e.backends["a"].received("Delete")); got != 2 {
			t.Fatalf("delete sent %d times, want 2", got)
		}
	})
	t.Run("breaker refusal is never sent and may be retried", func(t *testing.T) {
		e := newEnv(t)
		e.topo.setOpen("a", true)
		_, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "circuit breaker") {
			t.Fatalf("err %v", err)
		}
		if n := e.totalReceived("Insert"); n != 0 {
			t.Fatalf("sent %d", n)
		}
		if ev := e.events.last(); ev.Attempts != 0 {
			t.Fatalf("attempts %d", ev.Attempts)
		}
	})
	t.Run("never sent: retried on the new leader", func(t *testing.T) {
		e := newEnv(t)
		dead, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer dead.Close()
		good, goodURI := e.topo.Snapshot().Leader.Conn, e.topo.Snapshot().Leader.URI
		e.topo.publish(func(s *topology.Snapshot) { s.Leader.Conn, s.Leader.URI = dead, "127.0.0.1:1" })
		var once sync.Once
		e.topo.setOnAllow(func(id string) {
			once.Do(func() {
				// After the first (failed) attempt, the leader is
				// reachable again.
				go func() {
					time.Sleep(5 * time.Millisecond)
					e.topo.publish(func(s *topology.Snapshot) { s.Leader.Conn, s.Leader.URI = good, goodURI })
				}()
			})
		})
		res, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
		if err != nil || res.GetStatus().GetCode() != 0 {
			t.Fatalf("%v %v", res.GetStatus(), err)
		}
		if n := e.totalReceived("Insert"); n != 1 {
			t.Fatalf("insert reached backends %d times", n)
		}
		if ev := e.events.last(); ev.Attempts < 2 {
			t.Fatalf("attempts %d", ev.Attempts)
		}
	})
	t.Run("no leader: unavailable, nothing sent", func(t *testing.T) {
		e := newEnv(t)
		e.topo.publish(func(s *topology.Snapshot) { s.Leader, s.FailingOver = nil, true })
		_, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll"})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "failover") {
			t.Fatalf("err %v", err)
		}
		if e.totalReceived("Insert") != 0 {
			t.Fatal("sent")
		}
	})
}

func TestDDLRecordsSessionAndInvalidates(t *testing.T) {
	bothEngines(t, testDDLRecordsSessionAndInvalidates)
}

func testDDLRecordsSessionAndInvalidates(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx("identifier", "5")
	e.topo.setCheckpoint("b", e.start)
	e.topo.setCheckpoint("c", e.start)
	st, err := e.client.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{CollectionName: "newcoll"})
	if err != nil || st.GetCode() != 0 {
		t.Fatalf("%v %v", st, err)
	}
	ddl := e.srv.sessions.LastDDL("id:5", "default")
	if ddl <= e.start {
		t.Fatalf("DDL ts %d not recorded (start %d)", ddl, e.start)
	}
	e.topo.mu.Lock()
	allocs, inval := e.topo.allocs, append([]string(nil), e.topo.invalidated...)
	e.topo.mu.Unlock()
	if allocs != 1 || len(inval) != 1 || inval[0] != "default.newcoll" {
		t.Fatalf("allocs %d invalidated %v", allocs, inval)
	}
	// The same session's metadata read must see the DDL: leader until an
	// alternative has replicated it.
	for _, step := range []struct {
		ctx     context.Context
		ckpt    uint64
		cluster string
	}{
		{ctx, e.start, "a"},
		{ctx, ddl, "b"},
		{e.ctx("identifier", "6"), e.start, "b"},
	} {
		e.topo.setCheckpoint("b", step.ckpt)
		e.topo.setCheckpoint("c", step.ckpt)
		var hdr metadata.MD
		if _, err := e.client.DescribeCollection(step.ctx, &milvuspb.DescribeCollectionRequest{CollectionName: "newcoll"}, grpc.Header(&hdr)); err != nil {
			t.Fatal(err)
		}
		if got := hdr.Get(HeaderCluster)[0]; got != step.cluster {
			t.Fatalf("ckpt %d: DescribeCollection served by %s, want %s", step.ckpt, got, step.cluster)
		}
	}
	// A failed DDL records nothing.
	e.backends["a"].setStatus("DropCollection", 100)
	if _, err := e.client.DropCollection(e.ctx("identifier", "9"), &milvuspb.DropCollectionRequest{CollectionName: "x"}); err != nil {
		t.Fatal(err)
	}
	if got := e.srv.sessions.LastDDL("id:9", ""); got != 0 {
		t.Fatalf("failed DDL recorded %d", got)
	}
}

func TestUnimplemented(t *testing.T) { bothEngines(t, testUnimplemented) }

func testUnimplemented(t *testing.T) {
	e := newEnv(t)
	var hdr metadata.MD
	_, err := e.client.GetReplicas(e.ctx(), &milvuspb.GetReplicasRequest{}, grpc.Header(&hdr))
	if status.Code(err) != codes.Unimplemented || strings.Contains(err.Error(), "milvus-ha-proxy") {
		t.Fatalf("backend's Unimplemented not passed through: %v", err)
	}
	if got := hdr.Get(HeaderCluster); len(got) != 1 || got[0] != "a" {
		t.Fatalf("header %v", got)
	}
	for _, name := range []string{"/milvus.proto.milvus.MilvusService/NoSuchMethod", "/other.Service/Method"} {
		err := e.conn.Invoke(e.ctx(), name, &emptypb.Empty{}, &emptypb.Empty{})
		if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "milvus-ha-proxy: unknown method") {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if n := e.totalReceived("NoSuchMethod"); n != 0 {
		t.Fatal("unknown method forwarded")
	}
}

func TestCheckHealthIsLocal(t *testing.T) { bothEngines(t, testCheckHealthIsLocal) }

func testCheckHealthIsLocal(t *testing.T) {
	e := newEnv(t)
	var hdr metadata.MD
	res, err := e.client.CheckHealth(e.ctx(), &milvuspb.CheckHealthRequest{}, grpc.Header(&hdr))
	if err != nil || !res.GetIsHealthy() {
		t.Fatalf("%v %v", res, err)
	}
	if got := hdr.Get(HeaderCluster); len(got) != 1 || got[0] != LocalCluster {
		t.Fatalf("header %v", got)
	}
	if e.totalReceived("CheckHealth") != 0 {
		t.Fatal("forwarded")
	}
	e.topo.publish(func(s *topology.Snapshot) { s.Leader, s.FailingOver = nil, true })
	res, err = e.client.CheckHealth(e.ctx(), &milvuspb.CheckHealthRequest{})
	if err != nil || res.GetIsHealthy() || !strings.Contains(strings.Join(res.GetReasons(), ";"), "failover") {
		t.Fatalf("%v %v", res, err)
	}
}

func TestHealthServiceFollowsLeader(t *testing.T) { bothEngines(t, testHealthServiceFollowsLeader) }

func testHealthServiceFollowsLeader(t *testing.T) {
	e := newEnv(t)
	hc := healthpb.NewHealthClient(e.conn)
	waitFor := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		testutil.EventuallyWhy(t, 5*time.Second, "health "+want.String(), func() (bool, string) {
			res, err := hc.Check(e.ctx(), &healthpb.HealthCheckRequest{Service: milvusServiceName})
			return err == nil && res.GetStatus() == want, fmt.Sprintf("%v %v", res, err)
		})
	}
	waitFor(healthpb.HealthCheckResponse_SERVING)
	leader := e.topo.Snapshot().Leader
	e.topo.publish(func(s *topology.Snapshot) { s.Leader = nil })
	waitFor(healthpb.HealthCheckResponse_NOT_SERVING)
	e.topo.publish(func(s *topology.Snapshot) { s.Leader = s.Cluster(leader.ID) })
	waitFor(healthpb.HealthCheckResponse_SERVING)
}

// TestBidiStreamProxied: a client-streaming call (CreateReplicateStream)
// carries the client's messages to the leader and the leader's answers
// back, large messages included (flow-control credit returned), and the
// backend's error outcome reaches the client with its trailer.
func TestBidiStreamProxied(t *testing.T) { bothEngines(t, testBidiStreamProxied) }

func testBidiStreamProxied(t *testing.T) {
	e := newEnv(t)
	st, err := e.client.CreateReplicateStream(e.ctx("authorization", "tok"))
	if err != nil {
		t.Fatal(err)
	}
	// More than the 64 KiB initial window in total: the relay must return
	// credit as it sends messages on.
	sizes := []int{1, 1 << 10, 100 << 10, 300 << 10, 7}
	for _, n := range sizes {
		if err := st.Send(&milvuspb.ReplicateRequest{Request: &milvuspb.ReplicateRequest_ReplicateMessage{ReplicateMessage: &milvuspb.ReplicateMessage{
			SourceClusterId: "src", Message: &commonpb.ImmutableMessage{Payload: make([]byte, n)}}}}); err != nil {
			t.Fatalf("Send %d bytes: %v", n, err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("Recv after %d bytes: %v", n, err)
		}
		if got := resp.GetReplicateConfirmedMessageInfo().GetConfirmedTimeTick(); got != uint64(n) {
			t.Fatalf("confirmed %d, want %d", got, n)
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "ended by the source") {
		t.Fatalf("outcome %v, want the backend's FailedPrecondition", err)
	}
	if hdr, _ := st.Header(); hdr.Get(HeaderCluster)[0] != "a" || hdr.Get("backend-header")[0] != "a" {
		t.Fatalf("header %v", hdr)
	}
	if tr := st.Trailer(); len(tr.Get(HeaderCluster)) == 0 || tr.Get(HeaderCluster)[0] != "a" || tr.Get("backend-trailer")[0] != "a" {
		t.Fatalf("trailer %v", tr)
	}
	if r := e.backends["a"].received("CreateReplicateStream"); len(r) != 1 || r[0].md.Get("authorization")[0] != "tok" {
		t.Fatalf("backend got %v", r)
	}
}

func TestStreamProxied(t *testing.T) { bothEngines(t, testStreamProxied) }

func testStreamProxied(t *testing.T) {
	e := newEnv(t)
	st, err := e.client.DumpMessages(e.ctx("authorization", "tok"), &milvuspb.DumpMessagesRequest{Pchannel: "a-rootcoord-dml_0"})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		m, err := st.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
		got = append(got, m.GetMessage().GetPayload()...)
	}
	if string(got) != "\x00\x01\x02" {
		t.Fatalf("messages %v", got)
	}
	hdr, _ := st.Header()
	if hdr.Get(HeaderCluster)[0] != "a" || hdr.Get("backend-header")[0] != "a" {
		t.Fatalf("header %v", hdr)
	}
	if tr := st.Trailer(); tr.Get(HeaderCluster)[0] != "a" || tr.Get("backend-trailer")[0] != "a" {
		t.Fatalf("trailer %v", tr)
	}
	if r := e.backends["a"].received("DumpMessages"); len(r) != 1 || r[0].md.Get("authorization")[0] != "tok" {
		t.Fatalf("backend got %v", r)
	}
}

func TestShutdownDrainsInFlightCalls(t *testing.T) { bothEngines(t, testShutdownDrainsInFlightCalls) }

func testShutdownDrainsInFlightCalls(t *testing.T) {
	e := newEnv(t)
	// Warm the backend connections: the relay then answers on its fast
	// path, whose answers wait in the client connection's buffer for the
	// backend connection's reader to flush them; a drain that closed the
	// connection once the last call ended lost them (the client saw the
	// connection close before its answer).
	for _, lvl := range []commonpb.ConsistencyLevel{Strong, Eventually} {
		if _, err := e.client.Search(e.ctx(), search("coll", lvl, 0, false)); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range e.backends {
		b.setDelay(300 * time.Millisecond)
	}
	const n = 40
	e.resetBackends()
	done := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			var err error
			if i%4 == 0 {
				_, err = e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
			} else {
				lvl := Strong
				if i%2 == 1 {
					lvl = Eventually
				}
				_, err = e.client.Search(e.ctx(), search("coll", lvl, 0, false))
			}
			done <- err
		}()
	}
	for e.totalReceived("Insert")+e.totalReceived("Search") < n {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for i := 0; i < n; i++ {
		if err := <-done; err != nil {
			t.Errorf("in-flight call cut: %v", err)
		}
	}
	if _, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll"}); err == nil {
		t.Fatal("call accepted after shutdown")
	}
}

func TestShutdownCutsCallsAtDeadline(t *testing.T) { bothEngines(t, testShutdownCutsCallsAtDeadline) }

func testShutdownCutsCallsAtDeadline(t *testing.T) {
	e := newEnv(t)
	e.backends["a"].setDelay(10 * time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
		done <- err
	}()
	for e.totalReceived("Insert") == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-done; err == nil {
		t.Fatal("call survived a hard stop")
	}
}

func TestStrongReadsWait(t *testing.T) { bothEngines(t, testStrongReadsWait) }

func testStrongReadsWait(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.StrongReads, o.MaxWait = StrongWait, 5*time.Second })
	e.topo.setCheckpoint("b", e.start)
	e.topo.setCheckpoint("c", e.start)
	done := make(chan error, 1)
	var hdr metadata.MD
	go func() {
		_, err := e.client.Search(e.ctx(), search("coll", Strong, 0, false), grpc.Header(&hdr))
		done <- err
	}()
	// Wait until the read has taken its timestamp, then let b catch up.
	for {
		e.topo.mu.Lock()
		n := e.topo.allocs
		e.topo.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	e.topo.setCheckpoint("b", e.tso.Load())
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	id, rec := e.lastRead("Search")
	if l, g, _ := forwarded(rec); id != "b" || l != Customized || g <= e.start {
		t.Fatalf("served by %s with %v/%d", id, l, g)
	}

	// With nothing catching up, the leader after max_wait.
	e2 := newEnv(t, func(o *Options) { o.StrongReads, o.MaxWait = StrongWait, 30*time.Millisecond })
	e2.topo.setCheckpoint("b", e2.start-1)
	e2.topo.setCheckpoint("c", e2.start-1)
	if _, err := e2.client.Search(e2.ctx(), search("coll", Strong, 0, false)); err != nil {
		t.Fatal(err)
	}
	if id, _ := e2.lastRead("Search"); id != "a" || e2.events.last().Reason != string(router.ReasonLeaderLag) {
		t.Fatalf("served by %s (%s)", id, e2.events.last().Reason)
	}
}

func TestCountersAndObserver(t *testing.T) { bothEngines(t, testCountersAndObserver) }

func testCountersAndObserver(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 5; i++ {
		if _, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false)); err != nil {
			t.Fatal(err)
		}
	}
	var served int64
	for _, c := range e.topo.Snapshot().Clusters {
		served += c.Served.Load()
		if c.Outstanding.Load() != 0 {
			t.Fatalf("%s outstanding %d", c.ID, c.Outstanding.Load())
		}
	}
	if served != 5 {
		t.Fatalf("served %d", served)
	}
	ev := e.events.last()
	if ev.Method != "Search" || ev.Class != ClassRead || ev.Cluster != "b" || ev.Role != topology.RoleAlternative ||
		ev.Level != consistency.Eventually || ev.Code != codes.OK || ev.Attempts != 1 || ev.Duration <= 0 {
		t.Fatalf("event %+v", ev)
	}
}

func TestSessionKeyFallsBackToConnection(t *testing.T) {
	bothEngines(t, testSessionKeyFallsBackToConnection)
}

func testSessionKeyFallsBackToConnection(t *testing.T) {
	e := newEnv(t)
	e.topo.setCheckpoint("b", e.start)
	e.topo.setCheckpoint("c", e.start)
	res, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Same connection, no identifier: the same session.
	if _, err := e.client.Search(e.ctx(), search("coll", Session, 0, false)); err != nil {
		t.Fatal(err)
	}
	if id, rec := e.lastRead("Search"); id != "a" {
		t.Fatalf("served by %s", id)
	} else if _, g, _ := forwarded(rec); g != res.GetTimestamp() {
		t.Fatalf("guarantee %d want %d", g, res.GetTimestamp())
	}
	// Another connection is another session.
	conn2, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	e.resetBackends()
	if _, err := milvuspb.NewMilvusServiceClient(conn2).Search(e.ctx(), search("coll", Session, 0, false)); err != nil {
		t.Fatal(err)
	}
	if id, _ := e.lastRead("Search"); id == "a" {
		t.Fatal("another connection was held to the first one's write")
	}
}

// ServerOptions (interceptors, stats handlers) belong to the grpc engine.
func TestUnaryInterceptorRuns(t *testing.T) { t.Run("grpc", testUnaryInterceptorRuns) }

func testUnaryInterceptorRuns(t *testing.T) {
	var seen atomic.Value
	e := newEnv(t, func(o *Options) {
		o.ServerOptions = append(o.ServerOptions, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			seen.Store(info.FullMethod)
			return h(ctx, req)
		}))
	})
	if _, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false)); err != nil {
		t.Fatal(err)
	}
	if seen.Load() != "/milvus.proto.milvus.MilvusService/Search" {
		t.Fatalf("interceptor saw %v", seen.Load())
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("no topology accepted")
	}
	tso := &atomic.Uint64{}
	if _, err := New(Options{Topology: newFakeTopo(tso), Router: router.New(router.Options{}), StrongReads: "sometimes"}); err == nil {
		t.Fatal("bad strong_reads accepted")
	}
}
