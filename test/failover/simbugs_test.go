package failover_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
)

// Where the simulator differs from Milvus in ways this suite ran into. Each
// test fails on the simulator as it is; they run with MHP_SIM_BUGS=1 so
// `make test` stays green until sim is fixed.

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
	if err := c.CreateCollection(ctx); err != nil {
		t.Fatal(err)
	}
}

func writeOn(t *testing.T, c *client, upsert bool, pk, val int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, _, err := c.Write(ctx, upsert, pk, val)
	testproc.MustOK(t, "write", res.GetStatus(), err)
}

// TestSimRepeatedSwitchovers: switchovers a -> b -> c -> a ... done by the
// protocol (the same configuration to the old primary first, then the new
// one, then the other secondary), with writes between them. Every
// secondary must keep replicating its primary. In the simulator one
// pchannel of a secondary sometimes stops for good after a few rounds:
// its checkpoint of the new source is one left from that source's earlier
// epoch (older than the configuration message that handed the pchannel
// over), so the source's CDC resumes from there and the pchannel never
// advances. (Three other deviations this suite found — non-atomic upsert,
// DDL applied out of order, a stream taken from a non-source — were fixed
// in sim with regression tests there.)
func TestSimRepeatedSwitchovers(t *testing.T) {
	simBugsOnly(t)
	ctx := context.Background()
	cs := []*sim.Cluster{startInProcess(t, "a", "", "127.0.0.1:0"), startInProcess(t, "b", "", "127.0.0.1:0"), startInProcess(t, "c", "", "127.0.0.1:0")}
	if err := sim.JoinReplication(ctx, cs[0], cs[1], cs[2]); err != nil {
		t.Fatal(err)
	}
	createOn(t, dialProxy(t, cs[0].Addr()))
	clients := []*client{dialProxy(t, cs[0].Addr()), dialProxy(t, cs[1].Addr()), dialProxy(t, cs[2].Addr())}
	leader := 0
	pk := int64(0)
	for round := range 40 {
		for range 50 {
			pk++
			writeOn(t, clients[leader], false, pk, pk)
		}
		next, other := (leader+1)%3, (leader+2)%3
		cfg := sim.ReplicationConfig(cs[next], cs[leader], cs[other])
		for _, i := range []int{leader, next} {
			if err := sim.UpdateReplicateConfiguration(ctx, cs[i].Addr(), "", cfg, false); err != nil {
				t.Fatalf("round %d: %s: %v", round, cs[i].ID(), err)
			}
		}
		go func() { _ = sim.UpdateReplicateConfiguration(ctx, cs[other].Addr(), "", cfg, false) }()
		leader = next
		pk++
		writeOn(t, clients[leader], false, pk, pk)
		for _, i := range []int{(leader + 1) % 3, (leader + 2) % 3} {
			testutil.EventuallyOr(t, 3*time.Second, fmt.Sprintf("round %d: write %d replicated from %s to %s", round, pk, cs[leader].ID(), cs[i].ID()),
				func() bool {
					rows, _ := clients[i].Keys(commonpb.ConsistencyLevel_Eventually, pk)
					return len(rows) == 1
				},
				func() string { return fmt.Sprintf("%s stopped replicating; status %+v", cs[i].ID(), cs[i].Status()) })
		}
	}
}
