package topology

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func hts(ms int64) uint64 { return hybridts.Compose(ms, 0) }

func cluster(f *fakeMilvus, role Role) ClusterOptions {
	return ClusterOptions{ID: f.id, URI: f.addr, Role: role, Token: "root:Milvus"}
}

func TestOptionsValidation(t *testing.T) {
	ok := ClusterOptions{ID: "a", URI: "127.0.0.1:1", Role: RoleLeader}
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no clusters", Options{}, "no clusters"},
		{"bad mode", Options{Discovery: "dns", Clusters: []ClusterOptions{ok}}, "unknown discovery mode"},
		{"duplicate id", Options{Clusters: []ClusterOptions{ok, ok}}, `duplicate cluster id "a"`},
		{"empty uri", Options{Clusters: []ClusterOptions{{ID: "a"}}}, "empty uri"},
		{"bad role", Options{Clusters: []ClusterOptions{{ID: "a", URI: "x", Role: "boss"}}}, "unknown role"},
		{"static without leader", Options{Discovery: DiscoveryStatic, Clusters: []ClusterOptions{{ID: "a", URI: "x"}}}, "exactly one leader"},
		{"static with two leaders", Options{Discovery: DiscoveryStatic, Clusters: []ClusterOptions{ok, {ID: "b", URI: "x", Role: RoleLeader}}}, "exactly one leader"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New() error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestDiscoveryReplicate(t *testing.T) {
	a, b, c := startFake(t, "a"), startFake(t, "b"), startFake(t, "c")
	cfg := starConfig("a", 2, "b", "c")
	for _, f := range []*fakeMilvus{a, b, c} {
		f.set(func(f *fakeMilvus) { f.cfg = cfg })
	}
	// c is configured as a standby: it replicates but takes no reads.
	m := startManager(t, testOptions(DiscoveryReplicate, cluster(a, ""), cluster(b, ""), cluster(c, RoleStandby)))

	s := waitFor(t, m, "leader a", func(s *Snapshot) bool { return s.Leader != nil })
	if s.Leader.ID != "a" || s.Epoch != 0 {
		t.Fatalf("leader %s epoch %d, want a, 0", s.Leader.ID, s.Epoch)
	}
	roles := map[string]Role{}
	for _, x := range s.Clusters {
		roles[x.ID] = x.Role
	}
	if want := map[string]Role{"a": RoleLeader, "b": RoleAlternative, "c": RoleStandby}; !mapsEqual(roles, want) {
		t.Fatalf("roles %v, want %v", roles, want)
	}
	if !slices.Equal(s.LeaderPChannels, []string{"a-rootcoord-dml_0", "a-rootcoord-dml_1"}) {
		t.Fatalf("leader pchannels %v", s.LeaderPChannels)
	}
	if got := s.Cluster("b").PChannels; !slices.Equal(got, []string{"b-rootcoord-dml_0", "b-rootcoord-dml_1"}) {
		t.Fatalf("b pchannels %v", got)
	}
	if s.Leader.Conn == nil || s.Leader.Outstanding == nil {
		t.Fatal("leader has no connection or counters")
	}
	// The topology calls carry the proxy's token the way the SDKs send it.
	if got := a.md("GetReplicateConfiguration").Get("authorization"); len(got) != 1 || got[0] != base64.StdEncoding.EncodeToString([]byte("root:Milvus")) {
		t.Fatalf("authorization metadata %q", got)
	}

	// A planned switchover done behind the proxy: every cluster now says b.
	cfgB := starConfig("b", 2, "a", "c")
	for _, f := range []*fakeMilvus{a, b, c} {
		f.set(func(f *fakeMilvus) { f.cfg = cfgB })
	}
	m.Rediscover()
	s = waitFor(t, m, "leader b", func(s *Snapshot) bool { return s.Leader != nil && s.Leader.ID == "b" })
	if s.Epoch != 1 || s.Cluster("a").Role != RoleAlternative {
		t.Fatalf("after switchover: %s", describe(s))
	}

	// a comes back claiming to lead (its old configuration), b still leads
	// its star: b stays leader, a gets no traffic.
	a.set(func(f *fakeMilvus) { f.cfg = starConfig("a", 2, "b", "c") })
	b.set(func(f *fakeMilvus) { f.cfg = starConfig("b", 2, "c") })
	c.set(func(f *fakeMilvus) { f.cfg = starConfig("b", 2, "c") })
	m.Rediscover()
	s = waitFor(t, m, "a fenced", func(s *Snapshot) bool { return s.Cluster("a").Role == RoleStandby })
	if s.Leader.ID != "b" || s.Epoch != 1 || !strings.Contains(s.Cluster("a").LagReason, "claims to be a replication source") {
		t.Fatalf("returning old leader not fenced: %s", describe(s))
	}
}

func TestDiscoveryReplicateUnimplemented(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	for _, f := range []*fakeMilvus{a, b} {
		f.set(func(f *fakeMilvus) { f.noReplicate = true })
	}
	m := startManager(t, testOptions(DiscoveryReplicate, cluster(a, ""), cluster(b, "")))
	s := waitFor(t, m, "discovery error", func(s *Snapshot) bool { return s.DiscoveryError != "" })
	if s.Leader != nil || !strings.Contains(s.DiscoveryError, "GetReplicateConfiguration unimplemented") {
		t.Fatalf("unexpected: %s", describe(s))
	}
	_, err := m.WaitLeader(context.Background())
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "GetReplicateConfiguration unimplemented") {
		t.Fatalf("WaitLeader error %v", err)
	}
}

func TestDiscoveryStatic(t *testing.T) {
	t.Run("pchannels from the leader's configuration", func(t *testing.T) {
		a, b := startFake(t, "a"), startFake(t, "b")
		a.set(func(f *fakeMilvus) { f.cfg = starConfig("a", 3, "b") })
		b.set(func(f *fakeMilvus) {
			// Static roles win even though b's configuration is empty.
			f.cps = map[string]uint64{"b-rootcoord-dml_0": hts(10), "b-rootcoord-dml_1": hts(11), "b-rootcoord-dml_2": hts(12)}
		})
		m := startManager(t, testOptions(DiscoveryStatic, cluster(a, RoleLeader), cluster(b, RoleAlternative)))
		if s := m.Snapshot(); s.Leader == nil || s.Leader.ID != "a" {
			t.Fatalf("static leader not set at construction: %s", describe(s))
		}
		s := waitFor(t, m, "checkpoints", func(s *Snapshot) bool { return s.Cluster("b").CheckpointsKnown })
		if got := s.Cluster("b").Checkpoints; !slices.Equal(got, []uint64{hts(10), hts(11), hts(12)}) {
			t.Fatalf("checkpoints %v", got)
		}
	})
	t.Run("backend without replication API", func(t *testing.T) {
		a, b := startFake(t, "a"), startFake(t, "b")
		for _, f := range []*fakeMilvus{a, b} {
			f.set(func(f *fakeMilvus) { f.noReplicate = true })
		}
		m := startManager(t, testOptions(DiscoveryStatic, cluster(a, RoleLeader), cluster(b, RoleAlternative)))
		s := waitFor(t, m, "lag and discovery reasons", func(s *Snapshot) bool {
			return s.Cluster("b").LagReason == reasonNoReplicateInfo && s.DiscoveryError != ""
		})
		if s.Leader == nil || s.Leader.ID != "a" || s.Cluster("b").CheckpointsKnown || !strings.Contains(s.DiscoveryError, "unimplemented") {
			t.Fatalf("unexpected: %s", describe(s))
		}
		if _, ok := s.Cluster("b").ReplicatedFor(nil); ok {
			t.Fatal("a backend without replication must not look caught up")
		}
	})
}

func TestCheckpointTracking(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	cfg := starConfig("a", 2, "b")
	a.set(func(f *fakeMilvus) { f.cfg = cfg })
	setCps := func(x, y uint64) {
		b.set(func(f *fakeMilvus) {
			f.cfg = cfg
			f.cps = map[string]uint64{"b-rootcoord-dml_0": x, "b-rootcoord-dml_1": y}
		})
	}
	setCps(hts(100), hts(200))
	m := startManager(t, testOptions(DiscoveryReplicate, cluster(a, ""), cluster(b, "")))

	s := waitFor(t, m, "checkpoints", func(s *Snapshot) bool { return s.Cluster("b").CheckpointsKnown })
	if got := s.Cluster("b").Checkpoints; !slices.Equal(got, []uint64{hts(100), hts(200)}) {
		t.Fatalf("checkpoints %v", got)
	}
	if ts, _ := s.Cluster("b").ReplicatedFor([]int{1}); ts != hts(200) {
		t.Fatalf("ReplicatedFor(1) = %d", ts)
	}
	b.mu.Lock()
	sources := b.infoSources
	b.mu.Unlock()
	if !sources["a"] || len(sources) != 1 {
		t.Fatalf("GetReplicateInfo asked with sources %v, want only the leader a", sources)
	}

	// A failing poll makes the lag unknown at once.
	b.set(func(f *fakeMilvus) { f.infoErr = status.Error(codes.Unavailable, "cdc restarting") })
	s = waitFor(t, m, "stale", func(s *Snapshot) bool { return !s.Cluster("b").CheckpointsKnown })
	if r := s.Cluster("b").LagReason; !strings.Contains(r, "cdc restarting") {
		t.Fatalf("lag reason %q", r)
	}
	// It stays unknown while polls keep failing: watch several rounds.
	assertStaysStale(t, m, "b", 10)

	// A poll that times out counts the same.
	b.set(func(f *fakeMilvus) { f.infoErr = nil; f.infoDelay = time.Second })
	s = waitFor(t, m, "timeout reason", func(s *Snapshot) bool { return strings.Contains(s.Cluster("b").LagReason, "timed out") })
	if s.Cluster("b").CheckpointsKnown {
		t.Fatal("timed-out poll counted as known")
	}
	assertStaysStale(t, m, "b", 3)

	// Readmission only on a fresh successful poll, with fresh values.
	setCps(hts(300), hts(400))
	b.set(func(f *fakeMilvus) { f.infoDelay = 0 })
	s = waitFor(t, m, "readmitted", func(s *Snapshot) bool { return s.Cluster("b").CheckpointsKnown })
	if got := s.Cluster("b").Checkpoints; !slices.Equal(got, []uint64{hts(300), hts(400)}) || s.Cluster("b").LagReason != "" {
		t.Fatalf("readmitted with %v (%q)", got, s.Cluster("b").LagReason)
	}
}

// assertStaysStale watches n publications and fails if any shows the
// cluster's checkpoints as known.
func assertStaysStale(t *testing.T, m *Manager, id string, n int) {
	t.Helper()
	for range n {
		ch := m.Changed()
		if m.Snapshot().Cluster(id).CheckpointsKnown {
			t.Fatalf("%s flapped back to known while polls fail", id)
		}
		select {
		case <-ch:
		case <-time.After(200 * time.Millisecond):
			// Nothing published: fine, nothing could have flapped.
		}
	}
	if m.Snapshot().Cluster(id).CheckpointsKnown {
		t.Fatalf("%s flapped back to known while polls fail", id)
	}
}

func TestBreaker(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	opts := testOptions(DiscoveryStatic, cluster(a, RoleLeader), cluster(b, RoleAlternative))
	m := startManager(t, opts)
	waitFor(t, m, "b healthy", func(s *Snapshot) bool { return s.Cluster("b").Healthy })

	// Data-path failures open the breaker even though probes succeed.
	for i := range 50 {
		done, err := m.Allow("b")
		if err != nil {
			if !errors.Is(err, ErrBreakerOpen) {
				t.Fatalf("Allow: %v", err)
			}
			break
		}
		done(false)
		if i == 49 {
			t.Fatal("breaker never opened")
		}
	}
	waitFor(t, m, "breaker open", func(s *Snapshot) bool { return s.Cluster("b").Breaker == BreakerOpen })
	if _, err := m.Allow("b"); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("open breaker let a request through: %v", err)
	}
	// The cluster is fine, so after BreakerOpenFor the probes readmit it.
	waitFor(t, m, "breaker closed", func(s *Snapshot) bool { return s.Cluster("b").Breaker == BreakerClosed })

	// A dead cluster: probes alone open the breaker and mark it unhealthy.
	b.set(func(f *fakeMilvus) { f.healthErr = status.Error(codes.Unavailable, "down") })
	s := waitFor(t, m, "breaker open by probes", func(s *Snapshot) bool {
		return s.Cluster("b").Breaker == BreakerOpen && !s.Cluster("b").Healthy
	})
	if !strings.Contains(s.Cluster("b").HealthReason, "down") {
		t.Fatalf("health reason %q", s.Cluster("b").HealthReason)
	}
	b.set(func(f *fakeMilvus) { f.healthErr = nil })
	waitFor(t, m, "recovered", func(s *Snapshot) bool {
		return s.Cluster("b").Breaker == BreakerClosed && s.Cluster("b").Healthy
	})
}

func TestHealthVerdicts(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	m := startManager(t, testOptions(DiscoveryStatic, cluster(a, RoleLeader), cluster(b, RoleAlternative)))
	b.set(func(f *fakeMilvus) { f.healthy = false })
	s := waitFor(t, m, "b unhealthy", func(s *Snapshot) bool {
		return !s.Cluster("b").Healthy && s.Cluster("b").HealthReason != "not probed yet"
	})
	if !strings.Contains(s.Cluster("b").HealthReason, "querynode down") {
		t.Fatalf("reason %q", s.Cluster("b").HealthReason)
	}
	// A backend without CheckHealth answered: that is reachable.
	b.set(func(f *fakeMilvus) { f.noHealth = true })
	waitFor(t, m, "b healthy", func(s *Snapshot) bool { return s.Cluster("b").Healthy })
}

func TestWaitLeader(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	opts := testOptions(DiscoveryStatic, cluster(a, RoleLeader), cluster(b, RoleAlternative))
	opts.WriteHold = 200 * time.Millisecond
	m := startManager(t, opts)
	ctx := context.Background()

	if c, err := m.WaitLeader(ctx); err != nil || c.ID != "a" {
		t.Fatalf("WaitLeader = %v, %v", c, err)
	}

	if err := m.HoldWrites("leader lost: no contact for 1s"); err != nil {
		t.Fatal(err)
	}
	if s := m.Snapshot(); s.Leader != nil || !s.FailingOver || s.LostLeader != "a" {
		t.Fatalf("hold not published: %s", describe(s))
	}
	start := time.Now()
	_, err := m.WaitLeader(ctx)
	if time.Since(start) < opts.WriteHold {
		t.Fatalf("WaitLeader gave up after %v, before the write hold", time.Since(start))
	}
	st, _ := status.FromError(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "no writable leader: writes held for") ||
		!strings.Contains(st.Message(), "write held for") || !strings.Contains(st.Message(), `leader "a"`) {
		t.Fatalf("WaitLeader error = %v", err)
	}

	// A leader installed while a write waits releases it.
	got := make(chan *Cluster, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := m.WaitLeader(ctx)
		if err != nil {
			t.Errorf("WaitLeader: %v", err)
		}
		got <- c
	})
	time.Sleep(50 * time.Millisecond) // let it block; not a correctness bound
	if err := m.InstallLeader(Promotion{Leader: "b", Salvage: []uint64{hts(5)}}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if c := <-got; c == nil || c.ID != "b" {
		t.Fatalf("released to %v, want b", c)
	}
	s := m.Snapshot()
	if s.Epoch != 1 || s.FailingOver || s.Cluster("a").Role != RoleStandby || !slices.Equal(s.Leader.Salvage, []uint64{hts(5)}) {
		t.Fatalf("after promotion: %s", describe(s))
	}

	// A cancelled caller gets its own error.
	m.HoldWrites("switchover")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.WaitLeader(cctx); status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled WaitLeader = %v", err)
	}
}

func TestLeaderLossDetection(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	m := startManager(t, testOptions(DiscoveryStatic, cluster(a, RoleLeader), cluster(b, RoleAlternative)))
	waitFor(t, m, "a healthy", func(s *Snapshot) bool { return s.Leader.Healthy })
	if ok, why := m.Ready(); !ok {
		t.Fatalf("not ready with a healthy leader: %s", why)
	}
	select {
	case ev := <-m.LeaderLost():
		t.Fatalf("healthy leader reported lost: %+v", ev)
	default:
	}
	a.stop()
	select {
	case ev := <-m.LeaderLost():
		if ev.ClusterID != "a" || ev.DetectedAt.Sub(ev.LastContact) < m.opts.DetectAfter {
			t.Fatalf("loss event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("leader loss not detected")
	}
	s := m.Snapshot()
	if s.LeaderLostAt.IsZero() || s.Leader == nil {
		t.Fatalf("loss must be reported, the leader kept until a failover acts: %s", describe(s))
	}
	if ok, why := m.Ready(); ok || !strings.Contains(why, "leader a lost") {
		t.Fatalf("Ready() = %v, %q with the leader lost", ok, why)
	}
	a.restart(t)
	waitFor(t, m, "contact restored", func(s *Snapshot) bool { return s.LeaderLostAt.IsZero() })
}

func TestLeaderClock(t *testing.T) {
	t.Run("calibrated against the leader", func(t *testing.T) {
		a, b := startFake(t, "a"), startFake(t, "b")
		a.set(func(f *fakeMilvus) { f.tsoOffset = 10 * time.Second })
		m := startManager(t, testOptions(DiscoveryStatic, cluster(a, RoleLeader), cluster(b, RoleAlternative)))
		ts, err := m.AllocLeaderTimestamp(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !m.LeaderClockCalibrated() {
			t.Fatal("clock not calibrated after AllocLeaderTimestamp")
		}
		var prev uint64
		for range 1000 {
			now := m.LeaderNow()
			if now < prev || now < ts {
				t.Fatalf("LeaderNow went back: %d after %d (leader ts %d)", now, prev, ts)
			}
			prev = now
		}
		// The estimate follows the leader's clock (10s ahead of ours), not ours.
		local := time.Now().UnixMilli()
		if d := hybridts.Physical(prev) - local; d < 9000 || d > 11000 {
			t.Fatalf("estimate is %dms ahead of the local clock, want about 10000", d)
		}
		m.ObserveLeaderTimestamp(prev + hts(60_000))
		if m.LeaderNow() < prev+hts(60_000) {
			t.Fatal("LeaderNow below an observed leader timestamp")
		}
	})
	t.Run("upper bound and reset", func(t *testing.T) {
		var c leaderClock
		t0 := time.Unix(1000, 0)
		// The leader answered with 5000ms while our call took 100ms: its
		// clock at t0+100ms is at most 5100ms.
		c.calibrate(0, t0, hts(1_000_000))
		if got := hybridts.Physical(c.now(t0.Add(100 * time.Millisecond))); got != 1_000_100 {
			t.Fatalf("estimate %d, want 1000100", got)
		}
		if got := hybridts.Physical(c.now(t0)); got != 1_000_100 {
			t.Fatalf("estimate went back to %d", got)
		}
		c.calibrate(7, t0, hts(5)) // a sample from another epoch is ignored
		if got := hybridts.Physical(c.now(t0.Add(200 * time.Millisecond))); got != 1_000_200 {
			t.Fatalf("stale-epoch sample used: %d", got)
		}
		c.reset(1)
		c.calibrate(1, t0, hts(500))
		if got := hybridts.Physical(c.now(t0.Add(time.Millisecond))); got != 501 {
			t.Fatalf("after reset: %d, want 501", got)
		}
	})
}

func TestCollectionCache(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	a.set(func(f *fakeMilvus) {
		f.cfg = starConfig("a", 4, "b")
		f.describeDelay = 50 * time.Millisecond
		f.colls["db1/docs"] = &milvuspb.DescribeCollectionResponse{
			Status:               okStatus,
			ConsistencyLevel:     commonpb.ConsistencyLevel_Session,
			PhysicalChannelNames: []string{"a-rootcoord-dml_3", "a-rootcoord-dml_1"},
		}
	})
	b.set(func(f *fakeMilvus) { f.cfg = starConfig("a", 4, "b") })
	m := startManager(t, testOptions(DiscoveryReplicate, cluster(a, ""), cluster(b, "")))
	waitFor(t, m, "leader pchannels", func(s *Snapshot) bool { return len(s.LeaderPChannels) == 4 })
	ctx := context.Background()

	var wg sync.WaitGroup
	infos := make([]CollectionInfo, 16)
	for i := range infos {
		wg.Go(func() {
			info, err := m.Collection(ctx, "db1", "docs")
			if err != nil {
				t.Errorf("Collection: %v", err)
			}
			infos[i] = info
		})
	}
	wg.Wait()
	if n := a.describeCalls.Load(); n != 1 {
		t.Fatalf("%d DescribeCollection calls for 16 concurrent lookups, want 1", n)
	}
	info := infos[0]
	if info.ConsistencyLevel != int32(commonpb.ConsistencyLevel_Session) || !slices.Equal(info.PChannels, []int{1, 3}) || info.DB != "db1" {
		t.Fatalf("info %+v", info)
	}
	md := a.md("DescribeCollection")
	if md.Get("dbname")[0] != "db1" || len(md.Get("authorization")) != 1 {
		t.Fatalf("metadata %v", md)
	}
	if _, err := m.Collection(ctx, "db1", "docs"); err != nil || a.describeCalls.Load() != 1 {
		t.Fatalf("cache miss on a hit: %v, calls %d", err, a.describeCalls.Load())
	}
	m.InvalidateCollection("db1", "docs")
	if _, err := m.Collection(ctx, "db1", "docs"); err != nil || a.describeCalls.Load() != 2 {
		t.Fatalf("invalidate did not refetch: %v, calls %d", err, a.describeCalls.Load())
	}
	m.InvalidateCollection("db1", "") // the whole database
	if _, err := m.Collection(ctx, "db1", "docs"); err != nil || a.describeCalls.Load() != 3 {
		t.Fatalf("database invalidate did not refetch: %v, calls %d", err, a.describeCalls.Load())
	}

	// A Milvus error comes back as a status the proxy can pass on, and is
	// remembered for CollectionFailureTTL (default 1s: both lookups fall
	// well within it).
	for range 2 {
		_, err := m.Collection(ctx, "", "missing")
		var se *StatusError
		if !errors.As(err, &se) || se.Status.GetCode() != 100 || !strings.Contains(se.Status.GetReason(), "database=default") {
			t.Fatalf("missing collection: %v", err)
		}
		if a.describeCalls.Load() != 4 {
			t.Fatalf("error was not cached: %d calls, want 4", a.describeCalls.Load())
		}
	}
}

// TestCollectionCacheFailures: failed look-ups of every kind are cached
// for CollectionFailureTTL and shared by concurrent callers, so a leader
// in trouble gets one DescribeCollection per period, not one per read.
func TestCollectionCacheFailures(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration
		err  error                                // gRPC error of DescribeCollection
		st   *milvuspb.DescribeCollectionResponse // else this answer
	}{
		{name: "unavailable", ttl: time.Hour, err: status.Error(codes.Unavailable, "overloaded")},
		{name: "unimplemented", ttl: time.Hour, err: status.Error(codes.Unimplemented, "unknown method")},
		{name: "not found status", ttl: time.Hour, st: &milvuspb.DescribeCollectionResponse{Status: &commonpb.Status{Code: 100, Reason: "collection not found"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startFake(t, "a"), startFake(t, "b")
			a.set(func(f *fakeMilvus) {
				f.cfg = starConfig("a", 2, "b")
				f.describeDelay = 20 * time.Millisecond
				f.describeErr = tc.err
				if tc.st != nil {
					f.colls["default/docs"] = tc.st
				}
			})
			b.set(func(f *fakeMilvus) { f.cfg = starConfig("a", 2, "b") })
			opts := testOptions(DiscoveryReplicate, cluster(a, ""), cluster(b, ""))
			opts.CollectionFailureTTL = tc.ttl
			m := startManager(t, opts)
			waitFor(t, m, "a leader", func(s *Snapshot) bool { return s.Leader != nil && s.Leader.ID == "a" })
			ctx := context.Background()
			if _, ok, _ := m.CachedCollection("", "docs"); ok {
				t.Fatal("CachedCollection hit before any look-up")
			}
			var wg sync.WaitGroup
			for range 32 {
				wg.Go(func() {
					if _, err := m.Collection(ctx, "", "docs"); err == nil {
						t.Error("Collection succeeded on a failing backend")
					}
				})
			}
			wg.Wait()
			for range 100 {
				if _, err := m.Collection(ctx, "default", "docs"); err == nil {
					t.Fatal("Collection succeeded on a failing backend")
				}
				_, ok, err := m.CachedCollection("", "docs")
				if !ok || err == nil {
					t.Fatalf("CachedCollection = ok %v, err %v; want the cached failure", ok, err)
				}
			}
			if n := a.describeCalls.Load(); n != 1 {
				t.Fatalf("%d DescribeCollection calls for 232 look-ups within the failure TTL, want 1", n)
			}
			if tc.err != nil {
				if _, err := m.Collection(ctx, "", "docs"); status.Code(err) != status.Code(tc.err) {
					t.Fatalf("cached error %v, want code %v", err, status.Code(tc.err))
				}
			}
			// The backend recovers; the invalidation a DDL triggers (or the
			// TTL) lets the next look-up see it.
			a.set(func(f *fakeMilvus) {
				f.describeErr = nil
				f.colls["default/docs"] = &milvuspb.DescribeCollectionResponse{Status: okStatus}
			})
			m.InvalidateCollection("", "docs")
			if _, err := m.Collection(ctx, "", "docs"); err != nil || a.describeCalls.Load() != 2 {
				t.Fatalf("after recovery: %v, %d calls", err, a.describeCalls.Load())
			}
		})
	}

	t.Run("expiry", func(t *testing.T) {
		for _, tc := range []struct {
			ttl       time.Duration
			wantCalls int32
		}{
			{time.Millisecond, 3}, // expires between look-ups
			{-1, 3},               // failures not cached
		} {
			a, b := startFake(t, "a"), startFake(t, "b")
			a.set(func(f *fakeMilvus) {
				f.cfg = starConfig("a", 2, "b")
				f.describeErr = status.Error(codes.Unavailable, "restarting")
			})
			b.set(func(f *fakeMilvus) { f.cfg = starConfig("a", 2, "b") })
			opts := testOptions(DiscoveryReplicate, cluster(a, ""), cluster(b, ""))
			opts.CollectionFailureTTL = tc.ttl
			m := startManager(t, opts)
			waitFor(t, m, "a leader", func(s *Snapshot) bool { return s.Leader != nil && s.Leader.ID == "a" })
			for range 3 {
				if _, err := m.Collection(context.Background(), "", "docs"); err == nil {
					t.Fatal("Collection succeeded on a failing backend")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if n := a.describeCalls.Load(); n != tc.wantCalls {
				t.Errorf("failure ttl %v: %d DescribeCollection calls for 3 look-ups 10ms apart, want %d", tc.ttl, n, tc.wantCalls)
			}
		}
	})
}

func TestPChannelIndexes(t *testing.T) {
	leader := []string{"a-rootcoord-dml_0", "a-rootcoord-dml_1", "custom"}
	cases := []struct {
		names []string
		want  []int
	}{
		{nil, nil},
		{[]string{"a-rootcoord-dml_1", "a-rootcoord-dml_0", "a-rootcoord-dml_1"}, []int{0, 1}},
		{[]string{"custom"}, []int{2}},
		{[]string{"b-rootcoord-dml_7"}, []int{7}}, // asked of an alternative
		{[]string{"a-rootcoord-dml_1", "weird"}, nil},
	}
	for _, c := range cases {
		if got := pchannelIndexes(c.names, leader); !slices.Equal(got, c.want) {
			t.Errorf("pchannelIndexes(%v) = %v, want %v", c.names, got, c.want)
		}
	}
}

func TestViewJSON(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	cfg := starConfig("a", 1, "b")
	a.set(func(f *fakeMilvus) { f.cfg = cfg })
	nowMs := time.Now().UnixMilli()
	b.set(func(f *fakeMilvus) { f.cfg = cfg; f.cps = map[string]uint64{"b-rootcoord-dml_0": hts(nowMs - 3000)} })
	m := startManager(t, testOptions(DiscoveryReplicate, cluster(a, ""), cluster(b, "")))
	waitFor(t, m, "b known", func(s *Snapshot) bool { return s.Cluster("b").CheckpointsKnown })
	m.Snapshot().Cluster("b").Served.Add(3)
	raw, err := json.Marshal(m.View())
	if err != nil {
		t.Fatal(err)
	}
	var v View
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if v.Leader != "a" || v.Discovery != DiscoveryReplicate || len(v.Clusters) != 2 {
		t.Fatalf("view %s", raw)
	}
	cb := v.Clusters[1]
	if cb.ID != "b" || cb.Role != RoleAlternative || cb.RequestsServed != 3 || cb.LagSeconds == nil || *cb.LagSeconds < 2.9 || cb.ReplicatedTS != hts(nowMs-3000) {
		t.Fatalf("b view %s", raw)
	}
	if v.Clusters[0].LagSeconds != nil {
		t.Fatalf("leader has a lag: %s", raw)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	m, err := New(testOptions(DiscoveryStatic, cluster(a, RoleLeader), cluster(b, RoleAlternative)))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	m.Start() // idempotent
	waitFor(t, m, "probed", func(s *Snapshot) bool { return s.Leader.Healthy })
	m.Close()
	m.Close()
	if _, err := m.Collection(context.Background(), "", "x"); status.Code(err) != codes.Unavailable {
		t.Fatalf("Collection after Close: %v", err)
	}
	if m.Snapshot() == nil {
		t.Fatal("snapshot gone after Close")
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestDiscoveryReplicateStandalone: one cluster never joined by replication
// answers an empty configuration; it is the only place writes can go, so
// it leads. Two such clusters do not: nothing says which is the source.
func TestDiscoveryReplicateStandalone(t *testing.T) {
	a := startFake(t, "a")
	a.set(func(f *fakeMilvus) { f.cfg = &commonpb.ReplicateConfiguration{} })
	m := startManager(t, testOptions(DiscoveryReplicate, cluster(a, "")))
	s := waitFor(t, m, "leader a", func(s *Snapshot) bool { return s.Leader != nil })
	if s.Leader.ID != "a" {
		t.Fatalf("leader %s, want a: %s", s.Leader.ID, describe(s))
	}

	x, y := startFake(t, "x"), startFake(t, "y")
	for _, f := range []*fakeMilvus{x, y} {
		f.set(func(f *fakeMilvus) { f.cfg = &commonpb.ReplicateConfiguration{} })
	}
	m2 := startManager(t, testOptions(DiscoveryReplicate, cluster(x, ""), cluster(y, "")))
	s2 := waitFor(t, m2, "discovery error", func(s *Snapshot) bool { return s.DiscoveryError != "" })
	if s2.Leader != nil {
		t.Fatalf("two unjoined clusters got a leader: %s", describe(s2))
	}
}

// TestDiscoveryFollowsInstalledLeader: a proxy that follows another's
// decisions (the etcd arbiter's followers) keeps the leader it was given
// when the clusters' configurations name another, and records the claims;
// once it decides itself, discovery moves the leader again.
func TestDiscoveryFollowsInstalledLeader(t *testing.T) {
	a, b, c := startFake(t, "a"), startFake(t, "b"), startFake(t, "c")
	for _, f := range []*fakeMilvus{a, b, c} {
		f.set(func(f *fakeMilvus) { f.cfg = starConfig("a", 2, "b", "c") })
	}
	var following atomic.Bool
	following.Store(true)
	opts := testOptions(DiscoveryReplicate, cluster(a, ""), cluster(b, ""), cluster(c, ""))
	opts.FollowsLeader = following.Load
	m := startManager(t, opts)
	waitFor(t, m, "leader a (a proxy with no leader still discovers its first)", func(s *Snapshot) bool { return s.Leader != nil && s.Leader.ID == "a" })

	// A switchover the decider ran: the clusters say b before this proxy
	// has read the decider's document.
	for _, f := range []*fakeMilvus{a, b, c} {
		f.set(func(f *fakeMilvus) { f.cfg = starConfig("b", 2, "a", "c") })
	}
	m.Rediscover()
	s := waitFor(t, m, "b's claim recorded", func(s *Snapshot) bool { return s.Cluster("b").ClaimsPrimary })
	if s.Leader.ID != "a" || s.Epoch != 0 {
		t.Fatalf("a follower moved its leader by discovery: %s", describe(s))
	}
	// The decider's document arrives.
	if err := m.InstallLeader(Promotion{Leader: "b"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, "leader b installed", func(s *Snapshot) bool { return s.Leader != nil && s.Leader.ID == "b" })

	// Deciding itself, discovery moves the leader as without an arbiter.
	following.Store(false)
	for _, f := range []*fakeMilvus{a, b, c} {
		f.set(func(f *fakeMilvus) { f.cfg = starConfig("c", 2, "a", "b") })
	}
	m.Rediscover()
	s = waitFor(t, m, "leader c discovered", func(s *Snapshot) bool { return s.Leader != nil && s.Leader.ID == "c" })
	if s.Epoch <= 1 {
		t.Fatalf("epoch %d after two leader changes", s.Epoch)
	}
}

// TestReconnectAfterLongOutage: a cluster that was down for a while is
// used again soon after it is back. gRPC's default reconnect backoff
// (1s doubling by 1.6 up to 120s) would leave a cluster that was down for
// 10s unconnected for about 5s more (attempts near 9.3s and 15.8s).
func TestReconnectAfterLongOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("keeps a cluster down for 10s")
	}
	a, b := startFake(t, "a"), startFake(t, "b")
	m := startManager(t, testOptions(DiscoveryStatic, cluster(a, RoleLeader), cluster(b, RoleAlternative)))
	waitFor(t, m, "b healthy", func(s *Snapshot) bool { return s.Cluster("b").Healthy })
	b.stop()
	waitFor(t, m, "b down", func(s *Snapshot) bool { return !s.Cluster("b").Healthy })
	time.Sleep(10 * time.Second)
	b.restart(t)
	back := time.Now()
	deadline := back.Add(10 * time.Second)
	for !m.Snapshot().Cluster("b").Healthy {
		if time.Now().After(deadline) {
			t.Fatal("b not healthy 10s after it came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The backoff is at most reconnectBackoffMax (1s, +20% jitter); the
	// bound leaves room for a loaded machine and stays under the ~4.5s
	// the default backoff needs at the least.
	if took := time.Since(back); took > 3500*time.Millisecond {
		t.Fatalf("b healthy only %s after it came back", took)
	} else {
		t.Logf("b healthy %s after it came back", took)
	}
}
