package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus/client/v2/entity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

// TestSessionReadYourWrites: 1,000 rounds of insert then Session search by
// the same client, with replication delayed by 300 ms. Every search must
// see its own write; reads made after the alternatives caught up are still
// served by them.
func TestSessionReadYourWrites(t *testing.T) {
	rounds := 1000
	if testing.Short() {
		rounds = 200
	}
	e := startEnv(t, envOptions{alternatives: 2, delay: 300 * time.Millisecond})
	c, rec := e.client(t)
	testenv.MakeCollection(t, c, "ryw")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	violations, byAlt, caughtUpReads := 0, 0, 0
	servedBy := map[string]int{}
	for i := 0; i < rounds; i++ {
		id := int64(i)
		if err := testenv.Insert(ctx, c, "ryw", id); err != nil {
			t.Fatal(err)
		}
		if writer := rec.served("Insert"); writer != "a" {
			t.Fatalf("round %d: insert served by %q, want the leader a", i, writer)
		}
		// Every 50th round waits out the replication delay: the session's
		// write is then on the alternatives, which must take the read.
		waited := i%50 == 49
		if waited {
			time.Sleep(450 * time.Millisecond)
		}
		found, err := testenv.SearchID(ctx, c, "ryw", id, entity.ClSession)
		if err != nil {
			t.Fatalf("round %d: session search: %v", i, err)
		}
		if !found {
			violations++
		}
		who := rec.served("Search")
		servedBy[who]++
		if who != "a" {
			byAlt++
		}
		if waited {
			caughtUpReads++
		}
	}
	t.Logf("rounds %d, violations %d, served by %v", rounds, violations, servedBy)
	if violations != 0 {
		t.Fatalf("%d of %d Session searches missed the client's own write", violations, rounds)
	}
	// The reads that waited out the delay should mostly go to alternatives
	// (p2c includes the leader as leader_serves_reads is on): at least a
	// third of them.
	if byAlt < caughtUpReads/3 {
		t.Fatalf("only %d reads served by alternatives (of %d made after catch-up); served by %v", byAlt, caughtUpReads, servedBy)
	}
}

// TestEventuallySpread: Eventually reads are spread over b and c, each
// getting at least a quarter.
func TestEventuallySpread(t *testing.T) {
	e := startEnv(t, envOptions{alternatives: 2})
	c, rec := e.client(t)
	testenv.MakeCollection(t, c, "spread")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testenv.Insert(ctx, c, "spread", 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	const n = 300
	servedBy := map[string]int{}
	for i := 0; i < n; i++ {
		if _, err := testenv.SearchID(ctx, c, "spread", 1, entity.ClEventually); err != nil {
			t.Fatal(err)
		}
		servedBy[rec.served("Search")]++
	}
	t.Logf("served by %v", servedBy)
	for _, id := range []string{"b", "c"} {
		if servedBy[id] < n/4 {
			t.Errorf("alternative %s served %d of %d Eventually reads, want at least %d (%v)", id, servedBy[id], n, n/4, servedBy)
		}
	}
}

// TestBoundedFollowsLag: Bounded reads go to alternatives while their lag
// is under bounded_staleness and to the leader once replication has been
// paused for longer.
func TestBoundedFollowsLag(t *testing.T) {
	e := startEnv(t, envOptions{alternatives: 2, tune: func(c *config.Config) {
		c.Consistency.BoundedStaleness = config.Duration(time.Second)
		c.Read.LeaderServesReads = false
	}})
	c, rec := e.client(t)
	testenv.MakeCollection(t, c, "bounded")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testenv.Insert(ctx, c, "bounded", 7); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	count := func(n int) map[string]int {
		by := map[string]int{}
		for i := 0; i < n; i++ {
			if _, err := testenv.SearchID(ctx, c, "bounded", 7, entity.ClBounded); err != nil {
				t.Fatal(err)
			}
			by[rec.served("Search")]++
		}
		return by
	}
	if by := count(40); by["a"] != 0 || by["b"]+by["c"] != 40 {
		t.Fatalf("caught-up alternatives: Bounded reads served by %v, want only b and c", by)
	}
	e.clusters["b"].PauseReplication()
	e.clusters["c"].PauseReplication()
	time.Sleep(1500 * time.Millisecond) // longer than bounded_staleness
	if by := count(40); by["a"] != 40 {
		t.Fatalf("replication paused past bounded_staleness: Bounded reads served by %v, want only the leader a", by)
	}
	e.clusters["b"].ResumeReplication()
	e.clusters["c"].ResumeReplication()
	testutil.EventuallyWhy(t, 5*time.Second, "Bounded reads back on the alternatives after resume", func() (bool, string) {
		by := count(10)
		return by["a"] == 0, fmt.Sprintf("served by %v", by)
	})
}

// TestStrongAndWritesGoToLeader: Strong reads (strong_reads: leader), every
// write and every DDL reach the leader a; none reaches an alternative, which
// would refuse it.
func TestStrongAndWritesGoToLeader(t *testing.T) {
	e := startEnv(t, envOptions{alternatives: 2})
	c, rec := e.client(t)
	testenv.MakeCollection(t, c, "strong")
	for _, m := range []string{"CreateCollection", "CreateIndex", "LoadCollection"} {
		if got := rec.served(m); got != "a" {
			t.Errorf("%s served by %q, want a", m, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := int64(0); i < 50; i++ {
		if err := testenv.Insert(ctx, c, "strong", i); err != nil {
			t.Fatal(err)
		}
		if got := rec.served("Insert"); got != "a" {
			t.Fatalf("insert %d served by %q, want a", i, got)
		}
		found, err := testenv.SearchID(ctx, c, "strong", i, entity.ClStrong)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			t.Fatalf("Strong search missed row %d written just before", i)
		}
		if got := rec.served("Search"); got != "a" {
			t.Fatalf("Strong search %d served by %q, want a", i, got)
		}
	}

	// The alternatives refuse writes: asked directly, b says so. Through
	// the proxy every write above succeeded, so none went there.
	conn, err := grpc.NewClient(e.clusters["b"].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := milvuspb.NewMilvusServiceClient(conn).Delete(ctx, &milvuspb.DeleteRequest{CollectionName: "strong", Expr: "id in [1]"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus().GetCode() == 0 {
		t.Fatal("alternative b accepted a direct write; the test's premise is broken")
	}
}

// TestUnimplementedPassThrough: a method the backend does not implement
// comes back as the backend's Unimplemented (with the serving cluster's
// header), and a method the proxy does not know as the proxy's own.
func TestUnimplementedPassThrough(t *testing.T) {
	e := startEnv(t, envOptions{alternatives: 1})
	conn, err := grpc.NewClient(e.app.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var md metadata.MD
	_, err = milvuspb.NewMilvusServiceClient(conn).CreateResourceGroup(ctx, &milvuspb.CreateResourceGroupRequest{ResourceGroup: "rg"}, grpc.Header(&md))
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("CreateResourceGroup: got %v, want the backend's Unimplemented", err)
	}
	if got := md.Get(clusterHeader); len(got) != 1 || got[0] != "a" {
		t.Fatalf("CreateResourceGroup answered without the leader's header: %v", md)
	}

	var out milvuspb.GetVersionResponse
	err = conn.Invoke(ctx, "/milvus.proto.milvus.MilvusService/NoSuchMethod", &milvuspb.GetVersionRequest{}, &out)
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method: got %v, want Unimplemented", err)
	}
	if !strings.Contains(status.Convert(err).Message(), "NoSuchMethod") {
		t.Fatalf("unknown method error does not name the method: %v", err)
	}
}
