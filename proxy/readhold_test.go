package proxy

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestReadHeldDuringLeaderLoss: Strong and Session reads that only the
// leader may serve, sent while the leader's process is gone, wait for the
// new leader and are answered by it with what they were planned with; a
// Session read carried across a forced failover to a leader whose salvage
// checkpoint is below its session's write fails with FailedPrecondition,
// while a Strong read under strong_reads: wait, whose required timestamp
// is the old leader's "now", is served.
func TestReadHeldDuringLeaderLoss(t *testing.T) { bothEngines(t, testReadHeldDuringLeaderLoss) }

func testReadHeldDuringLeaderLoss(t *testing.T) {
	for _, tc := range []struct {
		name       string
		salvage    func(w uint64) []uint64 // b's salvage checkpoints once promoted
		session    codes.Code              // the Session read's outcome
		strongWait bool                    // consistency.strong_reads: wait
	}{
		{"switchover", func(uint64) []uint64 { return nil }, codes.OK, false},
		{"forced, salvage covers the write", func(w uint64) []uint64 { return []uint64{w, w + 5} }, codes.OK, false},
		{"forced, the write was lost", func(w uint64) []uint64 { return []uint64{w + 5, w - 1} }, codes.FailedPrecondition, false},
		{"forced, the write was lost, strong_reads wait", func(w uint64) []uint64 { return []uint64{w - 1, w - 1} }, codes.FailedPrecondition, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) {
				if tc.strongWait {
					o.StrongReads = StrongWait
				}
			})
			e.topo.setCheckpoint("b", e.start)
			e.topo.setCheckpoint("c", e.start)
			sess := e.ctx("identifier", "7")
			res, err := e.client.Insert(sess, &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
			if err != nil || res.GetStatus().GetCode() != 0 {
				t.Fatalf("insert: %v %v", res, err)
			}
			w := res.GetTimestamp()

			// The leader's process ends; the first attempt at it is the
			// moment the failover starts (no leader, reads of the leader
			// held), which makes the sequence deterministic.
			never := make(chan struct{})
			e.topo.mu.Lock()
			e.topo.leaderWait = never
			e.topo.mu.Unlock()
			var lost sync.Once
			e.topo.setOnAllow(func(id string) {
				if id == "a" {
					lost.Do(func() {
						e.topo.publish(func(s *topology.Snapshot) { s.Leader, s.FailingOver = nil, true })
					})
				}
			})
			e.backends["a"].srv.Stop()

			type answer struct {
				cluster string
				err     error
			}
			read := func(ctx context.Context, req *milvuspb.SearchRequest) <-chan answer {
				ch := make(chan answer, 1)
				go func() {
					var hdr metadata.MD
					_, err := e.client.Search(ctx, req, grpc.Header(&hdr))
					a := answer{err: err}
					if got := hdr.Get(HeaderCluster); len(got) == 1 {
						a.cluster = got[0]
					}
					ch <- a
				}()
				return ch
			}
			strong := read(e.ctx("identifier", "8"), search("coll", Strong, 0, false))
			session := read(sess, search("coll", Session, 0, false))

			select {
			case a := <-strong:
				t.Fatalf("Strong read answered while there is no leader: cluster %q, %v", a.cluster, a.err)
			case a := <-session:
				t.Fatalf("Session read answered while there is no leader: cluster %q, %v", a.cluster, a.err)
			case <-time.After(300 * time.Millisecond):
			}
			if n := len(e.backends["b"].received("Search")) + len(e.backends["c"].received("Search")); n != 0 {
				t.Fatalf("lagging alternatives got %d Searches", n)
			}
			// The held reads do not hold their connection: an Eventually
			// read on the same client connection is served by an
			// alternative meanwhile (on the relay engine the connection's
			// reader goroutine handed the held calls to workers).
			ev := read(e.ctx("identifier", "9"), search("coll", Eventually, 0, false))
			select {
			case a := <-ev:
				if a.err != nil || (a.cluster != "b" && a.cluster != "c") {
					t.Fatalf("Eventually read beside the held ones: served by %q, %v", a.cluster, a.err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Eventually read on the same connection not answered while others are held")
			}
			for _, id := range []string{"b", "c"} {
				e.backends[id].reset()
			}

			// b is promoted.
			e.topo.publish(func(s *topology.Snapshot) {
				for _, c := range s.Clusters {
					switch c.ID {
					case "a":
						c.Role, c.Healthy = topology.RoleAlternative, false
					case "b":
						c.Role, c.Salvage = topology.RoleLeader, tc.salvage(w)
						s.Leader = c
					}
				}
				s.FailingOver = false
				s.Epoch++
			})
			wait := func(ch <-chan answer) answer {
				select {
				case a := <-ch:
					return a
				case <-time.After(5 * time.Second):
					t.Fatal("read still held 5s after the new leader was installed")
					return answer{}
				}
			}
			if a := wait(strong); a.err != nil || a.cluster != "b" {
				t.Fatalf("Strong read: served by %q, %v; want b", a.cluster, a.err)
			}
			a := wait(session)
			if status.Code(a.err) != tc.session {
				t.Fatalf("Session read: %v, want %v", a.err, tc.session)
			}
			if tc.session != codes.OK {
				if msg := status.Convert(a.err).Message(); !strings.Contains(msg, "promoted by force") || !strings.Contains(msg, "former leader") {
					t.Fatalf("Session read refusal does not name the cause: %q", msg)
				}
			} else if a.cluster != "b" {
				t.Fatalf("Session read served by %q, want b", a.cluster)
			}

			// What b received: the Strong read as sent (the new leader
			// resolves "now"), the Session read bound to the session's
			// write as it was planned under a.
			var levels []commonpb.ConsistencyLevel
			for _, r := range e.backends["b"].received("Search") {
				l, g, _ := forwarded(r)
				levels = append(levels, l)
				if l == Customized && g != w && !tc.strongWait {
					t.Fatalf("Session read reached b with guarantee %d, want %d", g, w)
				}
			}
			want := 2
			if tc.session != codes.OK {
				want = 1
			}
			if len(levels) != want {
				t.Fatalf("b received %d Searches (%v), want %d", len(levels), levels, want)
			}
		})
	}
}

// TestEventuallyReadsServedDuringFailover: with no leader (a failover under
// way), Eventually and Bounded reads keep going to alternatives without
// waiting.
func TestEventuallyReadsServedDuringFailover(t *testing.T) {
	bothEngines(t, testEventuallyReadsServedDuringFailover)
}

func testEventuallyReadsServedDuringFailover(t *testing.T) {
	e := newEnv(t)
	never := make(chan struct{})
	e.topo.mu.Lock()
	e.topo.leaderWait = never
	e.topo.mu.Unlock()
	now := e.tso.Load()
	e.topo.setCheckpoint("b", now)
	e.topo.setCheckpoint("c", now)
	e.backends["a"].srv.Stop()
	e.topo.publish(func(s *topology.Snapshot) {
		s.Leader, s.FailingOver = nil, true
		s.Cluster("a").Role, s.Cluster("a").Healthy = topology.RoleAlternative, false
	})
	for _, level := range []commonpb.ConsistencyLevel{Eventually, Bounded} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var hdr metadata.MD
		_, err := e.client.Search(ctx, search("coll", level, 0, false), grpc.Header(&hdr))
		cancel()
		if err != nil {
			t.Fatalf("%v read during the failover: %v", level, err)
		}
		if got := hdr.Get(HeaderCluster); len(got) != 1 || (got[0] != "b" && got[0] != "c") {
			t.Fatalf("%v read served by %v, want an alternative", level, got)
		}
	}
}

// TestReadCarriedToAnInstalledLeader: a read whose leader died after it
// was planned, and whose next pick is a new leader already installed (no
// wait), is judged like a held one: a Session read past the forced
// failover's salvage checkpoint is refused, a Strong read is served.
func TestReadCarriedToAnInstalledLeader(t *testing.T) {
	bothEngines(t, testReadCarriedToAnInstalledLeader)
}

func testReadCarriedToAnInstalledLeader(t *testing.T) {
	e := newEnv(t)
	e.topo.setCheckpoint("b", e.start)
	e.topo.setCheckpoint("c", e.start)
	sess := e.ctx("identifier", "7")
	res, err := e.client.Insert(sess, &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
	if err != nil || res.GetStatus().GetCode() != 0 {
		t.Fatalf("insert: %v %v", res, err)
	}
	w := res.GetTimestamp()
	// The first attempt at a is when b, promoted by force without the
	// session's write, is installed.
	var promoted sync.Once
	e.topo.setOnAllow(func(id string) {
		if id != "a" {
			return
		}
		promoted.Do(func() {
			e.topo.publish(func(s *topology.Snapshot) {
				for _, c := range s.Clusters {
					switch c.ID {
					case "a":
						c.Role, c.Healthy = topology.RoleAlternative, false
					case "b":
						c.Role, c.Salvage = topology.RoleLeader, []uint64{w - 1, w - 1}
						s.Leader = c
					}
				}
				s.Epoch++
			})
		})
	})
	e.backends["a"].srv.Stop()

	_, err = e.client.Search(sess, search("coll", Session, 0, false))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "promoted by force") {
		t.Fatalf("Session read carried past the salvage checkpoint: %v, want FailedPrecondition", err)
	}
	var hdr metadata.MD
	if _, err := e.client.Search(e.ctx("identifier", "8"), search("coll", Strong, 0, false), grpc.Header(&hdr)); err != nil {
		t.Fatalf("Strong read after the promotion: %v", err)
	}
	if got := hdr.Get(HeaderCluster); len(got) != 1 || got[0] != "b" {
		t.Fatalf("Strong read served by %v, want b", got)
	}
	if n := len(e.backends["b"].received("Search")); n != 1 {
		t.Fatalf("b received %d Searches, want 1 (the Strong read)", n)
	}
}
