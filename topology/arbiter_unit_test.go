package topology

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestChoose(t *testing.T) {
	cand := func(id string, ticks ...uint64) candidate { return candidate{id: id, ticks: ticks} }
	tests := []struct {
		name  string
		cands []candidate
		want  []string // preference order
	}{
		{"one", []candidate{cand("b", 5, 5)}, []string{"b"}},
		{"dominant wins", []candidate{cand("b", 5, 5), cand("c", 6, 7)}, []string{"c", "b"}},
		{"equal: config order", []candidate{cand("b", 5, 5), cand("c", 5, 5)}, []string{"b", "c"}},
		{"dominant by one pchannel", []candidate{cand("b", 5, 5), cand("c", 5, 6)}, []string{"c", "b"}},
		// No one dominates: the highest minimum.
		{"highest minimum", []candidate{cand("b", 9, 3), cand("c", 4, 5), cand("d", 2, 10)}, []string{"c", "b", "d"}},
		{"highest minimum tie: config order", []candidate{cand("b", 9, 4), cand("c", 4, 5)}, []string{"b", "c"}},
		{"unknown pchannel counts as zero", []candidate{cand("b", 5), cand("c", 4, 1)}, []string{"c", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, c := range preference(tt.cands) {
				got = append(got, c.id)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("preference = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCompareSalvage(t *testing.T) {
	tests := []struct {
		name          string
		cps, salvage  []uint64
		ahead, behind int
	}{
		{"equal", []uint64{5, 6}, []uint64{5, 6}, -1, -1},
		{"behind", []uint64{4, 6}, []uint64{5, 6}, -1, 0},
		{"ahead", []uint64{5, 7}, []uint64{5, 6}, 1, -1},
		{"both", []uint64{4, 7}, []uint64{5, 6}, 1, 0},
		{"no salvage on a pchannel it has", []uint64{1, 0}, []uint64{0, 0}, 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := compareSalvage(tt.cps, tt.salvage)
			if a != tt.ahead || b != tt.behind {
				t.Fatalf("compareSalvage = %d, %d; want %d, %d", a, b, tt.ahead, tt.behind)
			}
		})
	}
}

func entry(id string) *commonpb.MilvusCluster {
	return &commonpb.MilvusCluster{ClusterId: id, ConnectionParam: &commonpb.ConnectionParam{Uri: id + ":19530"},
		Pchannels: []string{id + "-rootcoord-dml_0"}}
}

func edges(cfg *commonpb.ReplicateConfiguration) string {
	var out []string
	for _, e := range cfg.GetCrossClusterTopology() {
		out = append(out, e.GetSourceClusterId()+">"+e.GetTargetClusterId())
	}
	return strings.Join(out, ",")
}

func clusterIDs(cfg *commonpb.ReplicateConfiguration) string {
	var out []string
	for _, c := range cfg.GetClusters() {
		out = append(out, c.GetClusterId())
	}
	return strings.Join(out, ",")
}

func TestConfigBuilders(t *testing.T) {
	abc := star(entry("a"), entry("b"), entry("c"))
	if edges(abc) != "a>b,a>c" || clusterIDs(abc) != "a,b,c" {
		t.Fatalf("star: %s / %s", clusterIDs(abc), edges(abc))
	}
	rev := reverseConfig(abc, "b")
	if edges(rev) != "b>a,b>c" || clusterIDs(rev) != "a,b,c" {
		t.Fatalf("reverse keeps the cluster order and reverses the star: %s / %s", clusterIDs(rev), edges(rev))
	}
	// Reversing the reversed configuration again is the same request (a
	// retried switchover).
	if again := reverseConfig(rev, "b"); edges(again) != edges(rev) || clusterIDs(again) != clusterIDs(rev) {
		t.Fatalf("reverse is not idempotent: %s", edges(again))
	}
	bc := star(entry("b"), entry("c"))
	with := withTarget(bc, "b", entry("a"))
	if edges(with) != "b>c,b>a" || clusterIDs(with) != "b,c,a" {
		t.Fatalf("withTarget: %s / %s", clusterIDs(with), edges(with))
	}
	if again := withTarget(with, "b", entry("a")); edges(again) != "b>c,b>a" {
		t.Fatalf("withTarget twice: %s", edges(again))
	}
	alone := &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{entry("b")}}
	if !standaloneOf(alone, "b") || standaloneOf(alone, "a") || standaloneOf(bc, "b") {
		t.Fatal("standaloneOf")
	}
	if w := withTarget(alone, "b", entry("a")); edges(w) != "b>a" || clusterIDs(w) != "b,a" {
		t.Fatalf("withTarget on a standalone leader: %s / %s", clusterIDs(w), edges(w))
	}
}

func TestMessageKind(t *testing.T) {
	for in, want := range map[string]string{
		"Insert": "insert", "2": "insert", "Delete": "delete", "3": "delete",
		"TimeTick": "", "1": "", "AlterReplicateConfig": "", "CreateCollection": "ddl", "5": "ddl",
	} {
		if got := messageKind(in); got != want {
			t.Errorf("messageKind(%q) = %q, want %q", in, got, want)
		}
	}
	u := Unreplicated{Inserts: 2, DDL: 1, FirstTS: hts(1_700_000_000_000), LastTS: hts(1_700_000_001_500)}
	if s := u.String(); !strings.Contains(s, "2 insert, 0 delete, 1 DDL") || !strings.Contains(s, "2023-11-14T22:13:20.000Z") {
		t.Fatalf("String: %s", s)
	}
}

// TestFenceDrain: a fenced cluster refuses new requests at once with
// ErrFenced (not the breaker's error), a write waits in WaitWritable until
// the fence lifts, and drain waits exactly for the requests admitted
// before.
func TestFenceDrain(t *testing.T) {
	a := startFake(t, "a")
	a.cfg = star(entry("a"))
	m, err := New(Options{Discovery: DiscoveryStatic, Clusters: []ClusterOptions{cluster(a, RoleLeader)}, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	done, err := m.Allow("a")
	if err != nil {
		t.Fatal(err)
	}
	m.setFenced("a", true)
	if _, err := m.Allow("a"); !errors.Is(err, ErrFenced) || errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("fenced Allow: %v", err)
	}
	// A write waits for the change to end...
	got := make(chan error, 1)
	go func() {
		var w WriteWait
		defer w.End(context.Background())
		cl, err := m.WaitWritable(context.Background(), &w)
		if err == nil && cl.ID != "a" {
			err = fmt.Errorf("writable leader %s", cl.ID)
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("WaitWritable returned while the leader was fenced: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if n := m.drain(context.Background(), "a", 20*time.Millisecond); n != 1 {
		t.Fatalf("drain with one request in flight returned %d", n)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(10 * time.Millisecond)
		done(true)
	})
	if n := m.drain(context.Background(), "a", 5*time.Second); n != 0 {
		t.Fatalf("drain after the request finished: %d", n)
	}
	wg.Wait()
	// ...and goes on once the fence lifts (an abandoned change).
	m.setFenced("a", false)
	if err := <-got; err != nil {
		t.Fatalf("WaitWritable after the fence lifted: %v", err)
	}
	d, err := m.Allow("a")
	if err != nil {
		t.Fatalf("unfenced: %v", err)
	}
	d(true)
}

// TestWaitWritableNotSent: after an attempt that never reached the
// leader, the same leader is handed out again only after a backoff, and
// the wait gives up WriteHold after it began with the leader named and
// the last error in the message; a new leader ends the wait at once.
func TestWaitWritableNotSent(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	m, err := New(Options{Discovery: DiscoveryStatic, WriteHold: 600 * time.Millisecond, Logger: discard(),
		Clusters: []ClusterOptions{cluster(a, RoleLeader), cluster(b, RoleAlternative)}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	var w WriteWait
	w.NotSent("a", status.Error(codes.Unavailable, "connection refused"))
	start := time.Now()
	if cl, err := m.WaitWritable(ctx, &w); err != nil || cl.ID != "a" {
		t.Fatalf("after one refused attempt: %v, %v", cl, err)
	}
	if d := time.Since(start); d < notSentBackoffMin/2 {
		t.Fatalf("handed the refusing leader out again after %v", d)
	}
	var err2 error
	for range 100 {
		w.NotSent("a", status.Error(codes.Unavailable, "connection refused"))
		if _, err2 = m.WaitWritable(ctx, &w); err2 != nil {
			break
		}
	}
	if status.Code(err2) != codes.Unavailable || !strings.Contains(err2.Error(), "leader a could not be reached") ||
		!strings.Contains(err2.Error(), "connection refused") {
		t.Fatalf("gave up with %v", err2)
	}
	if d := time.Since(start); d < 500*time.Millisecond || d > 5*time.Second {
		t.Fatalf("gave up after %v with write_hold 600ms", d)
	}

	// A new leader ends the wait at once.
	var w2 WriteWait
	w2.NotSent("a", errors.New("refused"))
	for range 3 {
		w2.NotSent("a", errors.New("refused"))
	}
	res := make(chan *Cluster, 1)
	go func() {
		cl, _ := m.WaitWritable(ctx, &w2)
		w2.End(ctx)
		res <- cl
	}()
	if err := m.InstallLeader(Promotion{Leader: "b"}); err != nil {
		t.Fatal(err)
	}
	if cl := <-res; cl == nil || cl.ID != "b" {
		t.Fatalf("after the new leader: %v", cl)
	}
}

// holdRecorder records HoldObserver calls.
type holdRecorder struct {
	mu       sync.Mutex
	started  int
	outcomes []string
}

func (h *holdRecorder) WriteHoldStarted(context.Context) { h.mu.Lock(); h.started++; h.mu.Unlock() }
func (h *holdRecorder) WriteHoldEnded(_ context.Context, outcome string, _ time.Duration) {
	h.mu.Lock()
	h.outcomes = append(h.outcomes, outcome)
	h.mu.Unlock()
}

func TestWaitLeaderReportsHolds(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	rec := &holdRecorder{}
	m, err := New(Options{Discovery: DiscoveryStatic, WriteHold: 50 * time.Millisecond, HoldObserver: rec, Logger: discard(),
		Clusters: []ClusterOptions{cluster(a, RoleLeader), cluster(b, RoleAlternative)}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.WaitLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.HoldWrites("test"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitLeader(context.Background()); err == nil {
		t.Fatal("held write got a leader")
	}
	got := make(chan error, 1)
	go func() { _, err := m.WaitLeader(context.Background()); got <- err }()
	time.Sleep(10 * time.Millisecond)
	if err := m.InstallLeader(Promotion{Leader: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("released write: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.started != 2 || strings.Join(rec.outcomes, ",") != HoldTimedOut+","+HoldReleased {
		t.Fatalf("holds: started %d, outcomes %v", rec.started, rec.outcomes)
	}
	if m.holdsStarted.Load() != 2 {
		t.Fatalf("holdsStarted %d", m.holdsStarted.Load())
	}
}

// TestReadHoldNotAWriteHold: a read's wait (WriteWait.Read) waits and
// gives up as a write's does, but it is not reported as a held write and
// its error says "read held".
func TestReadHoldNotAWriteHold(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	rec := &holdRecorder{}
	m, err := New(Options{Discovery: DiscoveryStatic, WriteHold: 50 * time.Millisecond, HoldObserver: rec, Logger: discard(),
		Clusters: []ClusterOptions{cluster(a, RoleLeader), cluster(b, RoleAlternative)}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.HoldWrites("test"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w := WriteWait{Read: true}
	_, err = m.WaitWritable(ctx, &w)
	w.End(ctx)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "read held for") || strings.Contains(err.Error(), "write held for") {
		t.Fatalf("held read gave up with %v", err)
	}
	got := make(chan error, 1)
	go func() {
		w := WriteWait{Read: true}
		_, err := m.WaitWritable(ctx, &w)
		w.End(ctx)
		got <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := m.InstallLeader(Promotion{Leader: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("released read: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.started != 0 || len(rec.outcomes) != 0 || m.holdsStarted.Load() != 0 {
		t.Fatalf("reads reported as held writes: started %d, outcomes %v, holdsStarted %d", rec.started, rec.outcomes, m.holdsStarted.Load())
	}
}

func TestObserveWrite(t *testing.T) {
	a := startFake(t, "a")
	m, err := New(Options{Discovery: DiscoveryStatic, Clusters: []ClusterOptions{cluster(a, RoleLeader)}, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.ObserveWrite("a", hts(2000))
	m.ObserveWrite("a", hts(1000))
	m.ObserveWrite("nope", hts(3000))
	if got := m.members["a"].ackedWrite.Load(); got != hts(2000) {
		t.Fatalf("acked write %d", got)
	}
	if m.LeaderNow() < hts(2000) {
		t.Fatal("the leader clock is below an acknowledged write")
	}
}

func TestNewArbiterMode(t *testing.T) {
	a := startFake(t, "a")
	m, err := New(Options{Discovery: DiscoveryStatic, Clusters: []ClusterOptions{cluster(a, RoleLeader)}, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := NewArbiter(m, ArbiterOptions{Mode: "sometimes"}); err == nil {
		t.Fatal("unknown mode accepted")
	}
	arb, err := NewArbiter(m, ArbiterOptions{})
	if err != nil || arb.Status().Mode != ModeAuto || arb.Status().Phase != PhaseSteady {
		t.Fatalf("default arbiter: %v %+v", err, arb.Status())
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestCredentialsInConfigs: Milvus returns configurations without tokens;
// the proxy fills in its own token per cluster where an entry has none,
// keeps any token given, and compares configurations without tokens.
func TestCredentialsInConfigs(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	m, err := New(Options{Discovery: DiscoveryStatic, Logger: discard(), Clusters: []ClusterOptions{
		{ID: "a", URI: a.addr, Role: RoleLeader, Token: "root:secret"},
		{ID: "b", URI: b.addr, Role: RoleAlternative},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := star(entry("a"), entry("b"), entry("c"))
	cfg.Clusters[2].ConnectionParam.Token = "given"
	got := m.withCredentials(cfg)
	if tok := got.GetClusters()[0].GetConnectionParam().GetToken(); tok != "root:secret" {
		t.Fatalf("a's token %q", tok)
	}
	if tok := got.GetClusters()[1].GetConnectionParam().GetToken(); tok != "" {
		t.Fatalf("b has no proxy token, got %q", tok)
	}
	if tok := got.GetClusters()[2].GetConnectionParam().GetToken(); tok != "given" {
		t.Fatalf("a given token was replaced: %q", tok)
	}
	if cfg.GetClusters()[0].GetConnectionParam().GetToken() != "" {
		t.Fatal("withCredentials changed its input")
	}
	if !sameConfig(cfg, got) || sameConfig(cfg, star(entry("a"), entry("b"))) {
		t.Fatal("sameConfig")
	}
}

// TestViewLagUnknownAtZero: a checkpoint of 0 on some pchannel (nothing
// replicated there yet) shows as an unknown lag with a reason, not as the
// whole hybrid clock (hundreds of thousands of hours).
func TestViewLagUnknownAtZero(t *testing.T) {
	ms := time.Now().UnixMilli()
	now := hts(ms)
	leader := &Cluster{ID: "a", Role: RoleLeader}
	s := &Snapshot{Leader: leader, Clusters: []*Cluster{leader,
		{ID: "b", Role: RoleAlternative, CheckpointsKnown: true, Checkpoints: []uint64{now, 0}},
		{ID: "c", Role: RoleAlternative, CheckpointsKnown: true, Checkpoints: []uint64{hts(ms - 2000), now}},
	}}
	v := ViewOf(s, DiscoveryReplicate, now)
	if b := v.Clusters[1]; b.LagSeconds != nil || !strings.Contains(b.LagReason, "no checkpoint yet") {
		t.Fatalf("b: lag %v reason %q", b.LagSeconds, b.LagReason)
	}
	if c := v.Clusters[2]; c.LagSeconds == nil || *c.LagSeconds < 1.9 || *c.LagSeconds > 2.1 {
		t.Fatalf("c: lag %v", c.LagSeconds)
	}
}

// TestAttachSafe: what the clusters' own configurations allow attaching.
func TestAttachSafe(t *testing.T) {
	leaderCfg := star(entry("a"), entry("b"))
	for _, tc := range []struct {
		name string
		own  *commonpb.ReplicateConfiguration
		want string // "" = allowed
	}{
		{"never configured", &commonpb.ReplicateConfiguration{}, ""},
		{"standing alone", star(entry("d")), ""},
		{"primary with targets", star(entry("d"), entry("x")), "a primary with targets of its own"},
		{"already follows the leader", star(entry("a"), entry("b"), entry("d")), "already replicates from a"},
		{"follows another cluster", star(entry("x"), entry("d")), "replicates from x, not from the leader a"},
	} {
		err := attachSafe(tc.own, leaderCfg, "d", "a")
		if (tc.want == "") != (err == nil) || (err != nil && (!strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrRefused))) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := attachSafe(&commonpb.ReplicateConfiguration{}, star(entry("b"), entry("a")), "d", "a"); err == nil {
		t.Error("attached to a leader that is not a primary in its own configuration")
	}
}

// TestPrimaryInOwnEyes: which own configurations leave a cluster taking
// writes.
func TestPrimaryInOwnEyes(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *commonpb.ReplicateConfiguration
		want bool
	}{
		{"never configured", &commonpb.ReplicateConfiguration{}, false},
		{"the source", star(entry("d"), entry("a")), true},
		{"standing alone", star(entry("d")), true},
		{"a target", star(entry("a"), entry("d")), false},
		{"left out of the configuration", star(entry("a"), entry("b")), true},
	} {
		if got := primaryInOwnEyes(tc.cfg, "d"); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
