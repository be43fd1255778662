package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// recorded is one call a fake backend received.
type recorded struct {
	method string
	md     metadata.MD
	req    proto.Message
}

// fakeBackend is a Milvus stand-in that records what it receives. Methods
// it does not override answer Unimplemented, as a real server of an older
// version would.
type fakeBackend struct {
	milvuspb.UnimplementedMilvusServiceServer
	id   string
	tso  *atomic.Uint64 // shared with the fake topology: the leader's clock
	srv  *grpc.Server
	addr string

	mu    sync.Mutex
	calls []recorded
	// fail, when set for a method, is consulted before the handler runs;
	// a non-nil error is returned as the call's gRPC error.
	fail map[string]func() error
	// status, when set for a method, is the Milvus status code its
	// response carries.
	status map[string]int32
	delay  time.Duration
	// Query "sleep" calls that started, and that saw their cancellation.
	sleeping, canceled int
}

func startBackend(t testing.TB, id string, tso *atomic.Uint64) *fakeBackend {
	t.Helper()
	b := &fakeBackend{id: id, tso: tso, fail: map[string]func() error{}, status: map[string]int32{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	b.srv = grpc.NewServer(grpc.UnaryInterceptor(b.intercept), grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	milvuspb.RegisterMilvusServiceServer(b.srv, b)
	go func() { _ = b.srv.Serve(lis) }()
	t.Cleanup(b.srv.Stop)
	return b
}

func (b *fakeBackend) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	name := info.FullMethod[len("/milvus.proto.milvus.MilvusService/"):]
	b.mu.Lock()
	b.calls = append(b.calls, recorded{method: name, md: md, req: proto.Clone(req.(proto.Message))})
	fail := b.fail[name]
	delay := b.delay
	b.mu.Unlock()
	if fail != nil {
		if err := fail(); err != nil {
			return nil, err
		}
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h(ctx, req)
}

func (b *fakeBackend) setFail(method string, f func() error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail[method] = f
}

func (b *fakeBackend) setStatus(method string, code int32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.status[method] = code
}

func (b *fakeBackend) setDelay(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.delay = d
}

func (b *fakeBackend) received(method string) []recorded {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []recorded
	for _, c := range b.calls {
		if c.method == method {
			out = append(out, c)
		}
	}
	return out
}

func (b *fakeBackend) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = nil
}

func (b *fakeBackend) st(method string) *commonpb.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	if code := b.status[method]; code != 0 {
		return &commonpb.Status{ErrorCode: commonpb.ErrorCode_UnexpectedError, Code: code, Reason: b.id + " cannot"}
	}
	return &commonpb.Status{}
}

func (b *fakeBackend) Search(_ context.Context, r *milvuspb.SearchRequest) (*milvuspb.SearchResults, error) {
	return &milvuspb.SearchResults{Status: b.st("Search"), CollectionName: r.GetCollectionName(),
		Results: &schemapb.SearchResultData{NumQueries: r.GetNq(), TopK: 10, Scores: make([]float32, 10),
			Ids: &schemapb.IDs{IdField: &schemapb.IDs_IntId{IntId: &schemapb.LongArray{Data: make([]int64, 10)}}}, Topks: []int64{10}}}, nil
}

func (b *fakeBackend) HybridSearch(_ context.Context, r *milvuspb.HybridSearchRequest) (*milvuspb.SearchResults, error) {
	return &milvuspb.SearchResults{Status: b.st("HybridSearch"), CollectionName: r.GetCollectionName()}, nil
}

// Query answers "big:<n>" expressions with n bytes of field data, and
// "sleep" ones by waiting until the call is canceled.
func (b *fakeBackend) Query(ctx context.Context, r *milvuspb.QueryRequest) (*milvuspb.QueryResults, error) {
	res := &milvuspb.QueryResults{Status: b.st("Query"), CollectionName: r.GetCollectionName()}
	var n int
	if _, err := fmt.Sscanf(r.GetExpr(), "big:%d", &n); err == nil {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i * 13)
		}
		res.FieldsData = []*schemapb.FieldData{{FieldName: "v", Field: &schemapb.FieldData_Vectors{
			Vectors: &schemapb.VectorField{Data: &schemapb.VectorField_BinaryVector{BinaryVector: data}}}}}
	}
	if r.GetExpr() == "sleep" {
		b.mu.Lock()
		b.sleeping++
		b.mu.Unlock()
		<-ctx.Done()
		b.mu.Lock()
		b.canceled++
		b.mu.Unlock()
		return nil, ctx.Err()
	}
	if r.GetExpr() == "deadline" {
		dl, ok := ctx.Deadline()
		if !ok {
			return nil, status.Error(codes.FailedPrecondition, "no deadline reached the backend")
		}
		res.OutputFields = []string{time.Until(dl).Round(time.Second).String()}
	}
	return res, nil
}

func (b *fakeBackend) mutation(method string, n int) *milvuspb.MutationResult {
	ts := b.tso.Add(1 << hybridts.LogicalBits)
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	return &milvuspb.MutationResult{Status: b.st(method), Timestamp: ts, InsertCnt: int64(n),
		IDs: &schemapb.IDs{IdField: &schemapb.IDs_IntId{IntId: &schemapb.LongArray{Data: ids}}}}
}

func (b *fakeBackend) Insert(_ context.Context, r *milvuspb.InsertRequest) (*milvuspb.MutationResult, error) {
	res := b.mutation("Insert", int(r.GetNumRows()))
	// Echo the size of the column data received, so big requests can be
	// checked end to end.
	for _, f := range r.GetFieldsData() {
		res.InsertCnt += int64(len(f.GetVectors().GetBinaryVector()))
	}
	return res, nil
}

func (b *fakeBackend) Upsert(_ context.Context, r *milvuspb.UpsertRequest) (*milvuspb.MutationResult, error) {
	return b.mutation("Upsert", int(r.GetNumRows())), nil
}

func (b *fakeBackend) Delete(_ context.Context, _ *milvuspb.DeleteRequest) (*milvuspb.MutationResult, error) {
	return b.mutation("Delete", 1), nil
}

func (b *fakeBackend) CreateCollection(_ context.Context, _ *milvuspb.CreateCollectionRequest) (*commonpb.Status, error) {
	return b.st("CreateCollection"), nil
}

func (b *fakeBackend) DropCollection(_ context.Context, _ *milvuspb.DropCollectionRequest) (*commonpb.Status, error) {
	return b.st("DropCollection"), nil
}

func (b *fakeBackend) DescribeCollection(_ context.Context, r *milvuspb.DescribeCollectionRequest) (*milvuspb.DescribeCollectionResponse, error) {
	return &milvuspb.DescribeCollectionResponse{Status: b.st("DescribeCollection"), CollectionName: r.GetCollectionName()}, nil
}

func (b *fakeBackend) Connect(_ context.Context, _ *milvuspb.ConnectRequest) (*milvuspb.ConnectResponse, error) {
	return &milvuspb.ConnectResponse{Status: &commonpb.Status{}, Identifier: 4242}, nil
}

func (b *fakeBackend) DumpMessages(r *milvuspb.DumpMessagesRequest, ss milvuspb.MilvusService_DumpMessagesServer) error {
	b.mu.Lock()
	md, _ := metadata.FromIncomingContext(ss.Context())
	b.calls = append(b.calls, recorded{method: "DumpMessages", md: md, req: proto.Clone(r)})
	b.mu.Unlock()
	_ = ss.SendHeader(metadata.Pairs("backend-header", b.id))
	for i := 0; i < 3; i++ {
		msg := &milvuspb.DumpMessagesResponse{Response: &milvuspb.DumpMessagesResponse_Message{
			Message: &commonpb.ImmutableMessage{Payload: []byte{byte(i)}}}}
		if err := ss.Send(msg); err != nil {
			return err
		}
	}
	ss.SetTrailer(metadata.Pairs("backend-trailer", b.id))
	return nil
}

// CreateReplicateStream confirms each message's payload length as a time
// tick and, when the client half-closes, ends with FailedPrecondition and
// a trailer: a bidirectional stream whose outcome is an error.
func (b *fakeBackend) CreateReplicateStream(ss milvuspb.MilvusService_CreateReplicateStreamServer) error {
	b.mu.Lock()
	md, _ := metadata.FromIncomingContext(ss.Context())
	b.calls = append(b.calls, recorded{method: "CreateReplicateStream", md: md})
	b.mu.Unlock()
	_ = ss.SendHeader(metadata.Pairs("backend-header", b.id))
	for {
		req, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			ss.SetTrailer(metadata.Pairs("backend-trailer", b.id))
			return status.Error(codes.FailedPrecondition, "replicate stream ended by the source")
		}
		if err != nil {
			return err
		}
		n := len(req.GetReplicateMessage().GetMessage().GetPayload())
		if err := ss.Send(&milvuspb.ReplicateResponse{Response: &milvuspb.ReplicateResponse_ReplicateConfirmedMessageInfo{
			ReplicateConfirmedMessageInfo: &milvuspb.ReplicateConfirmedMessageInfo{ConfirmedTimeTick: uint64(n)}}}); err != nil {
			return err
		}
	}
}

// fakeTopo is an in-memory Topology over fake backends.
type fakeTopo struct {
	snap    atomic.Pointer[topology.Snapshot]
	tso     *atomic.Uint64
	leadNow atomic.Uint64 // 0: use tso

	mu          sync.Mutex
	changed     chan struct{}
	open        map[string]bool
	colls       map[string]topology.CollectionInfo
	cached      map[string]bool // collections Collection was asked about
	collCalls   int
	invalidated []string
	allocs      int
	allocErr    error
	leaderWait  chan struct{} // when set, WaitLeader blocks on it while there is no leader
	onAllow     func(id string)
	failures    map[string]int              // done(false) per cluster: what the breaker would count
	waits       map[*topology.WriteWait]int // WaitWritable calls per write
}

func newFakeTopo(tso *atomic.Uint64) *fakeTopo {
	return &fakeTopo{tso: tso, changed: make(chan struct{}), open: map[string]bool{},
		colls: map[string]topology.CollectionInfo{}, cached: map[string]bool{}}
}

func (f *fakeTopo) Snapshot() *topology.Snapshot { return f.snap.Load() }

func (f *fakeTopo) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// publish stores a modified copy of the snapshot and wakes Changed.
func (f *fakeTopo) publish(mut func(s *topology.Snapshot)) {
	old := f.snap.Load()
	s := &topology.Snapshot{PublishedAt: time.Now()}
	if old != nil {
		*s = *old
		s.Clusters = nil
		for _, c := range old.Clusters {
			cc := *c
			cc.Checkpoints = append([]uint64(nil), c.Checkpoints...)
			s.Clusters = append(s.Clusters, &cc)
			if old.Leader == c {
				s.Leader = &cc
			}
		}
	}
	mut(s)
	f.snap.Store(s)
	f.mu.Lock()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// setCheckpoint sets every pchannel checkpoint of cluster id to ts.
func (f *fakeTopo) setCheckpoint(id string, ts uint64) {
	f.publish(func(s *topology.Snapshot) {
		c := s.Cluster(id)
		for i := range c.Checkpoints {
			c.Checkpoints[i] = ts
		}
		c.CheckpointsKnown = true
	})
}

func (f *fakeTopo) WaitLeader(ctx context.Context) (*topology.Cluster, error) {
	for {
		ch := f.Changed()
		if l := f.snap.Load().Leader; l != nil {
			return l, nil
		}
		f.mu.Lock()
		wait := f.leaderWait
		f.mu.Unlock()
		if wait == nil {
			return nil, status.Error(codes.Unavailable, "failover under way: no leader")
		}
		select {
		case <-ch:
		case <-wait:
			return nil, status.Error(codes.Unavailable, "failover under way: write_hold elapsed")
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// WaitWritable hands out the leader as WaitLeader does; a call that comes
// back (its attempt was never sent) waits 5ms, and the fourth time it
// gives up as write_hold running out would.
func (f *fakeTopo) WaitWritable(ctx context.Context, w *topology.WriteWait) (*topology.Cluster, error) {
	f.mu.Lock()
	if f.waits == nil {
		f.waits = map[*topology.WriteWait]int{}
	}
	n := f.waits[w]
	f.waits[w] = n + 1
	f.mu.Unlock()
	if n >= 4 {
		return nil, status.Errorf(codes.Unavailable, "no writable leader within write_hold (last attempt: %v)", w.LastNotSent())
	}
	if n > 0 {
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return f.WaitLeader(ctx)
}

// setOnAllow installs a hook Allow calls (outside mu) before it decides;
// tests set it while calls are in flight, so it is read under mu.
func (f *fakeTopo) setOnAllow(hook func(id string)) {
	f.mu.Lock()
	f.onAllow = hook
	f.mu.Unlock()
}

func (f *fakeTopo) Allow(id string) (func(bool), error) {
	f.mu.Lock()
	hook := f.onAllow
	f.mu.Unlock()
	if hook != nil {
		hook(id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open[id] {
		return nil, errors.New("breaker open")
	}
	return func(ok bool) {
		if !ok {
			f.mu.Lock()
			if f.failures == nil {
				f.failures = map[string]int{}
			}
			f.failures[id]++
			f.mu.Unlock()
		}
	}, nil
}

// failed returns the breaker failures counted so far, per cluster.
func (f *fakeTopo) failed() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for id, n := range f.failures {
		out[id] = n
	}
	return out
}

func (f *fakeTopo) setOpen(id string, open bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.open[id] = open
}

func (f *fakeTopo) LeaderNow() uint64 {
	if v := f.leadNow.Load(); v != 0 {
		return v
	}
	return f.tso.Load()
}

func (f *fakeTopo) AllocLeaderTimestamp(context.Context) (uint64, error) {
	f.mu.Lock()
	f.allocs++
	err := f.allocErr
	f.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return f.tso.Add(1), nil
}

func (f *fakeTopo) Collection(_ context.Context, db, name string) (topology.CollectionInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.collCalls++
	f.cached[db+"."+name] = true
	return f.collLocked(db, name)
}

func (f *fakeTopo) collLocked(db, name string) (topology.CollectionInfo, error) {
	info, ok := f.colls[db+"."+name]
	if !ok {
		return info, status.Errorf(codes.NotFound, "collection %s.%s not found", db, name)
	}
	return info, nil
}

// CachedCollection behaves like the topology's cache: an answer once
// Collection was asked, until the collection is invalidated.
func (f *fakeTopo) CachedCollection(db, name string) (topology.CollectionInfo, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.cached[db+"."+name] {
		return topology.CollectionInfo{}, false, nil
	}
	info, err := f.collLocked(db, name)
	return info, true, err
}

func (f *fakeTopo) InvalidateCollection(db, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, db+"."+name)
	for k := range f.cached {
		if k == db+"."+name || (name == "" && strings.HasPrefix(k, db+".")) {
			delete(f.cached, k)
		}
	}
}

// env is a proxy in front of fake clusters a (leader), b and c.
type env struct {
	t        *testing.T
	tso      *atomic.Uint64
	backends map[string]*fakeBackend
	topo     *fakeTopo
	srv      *Server
	addr     string
	conn     *grpc.ClientConn
	client   milvuspb.MilvusServiceClient
	events   *eventLog
	start    uint64 // the leader's clock when the env was built
}

type eventLog struct {
	mu sync.Mutex
	ev []CallEvent
}

func (l *eventLog) ObserveCall(_ context.Context, ev CallEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ev = append(l.ev, ev)
}

func (l *eventLog) last() CallEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ev) == 0 {
		return CallEvent{}
	}
	return l.ev[len(l.ev)-1]
}

// firstPick makes the router's power of two choices deterministic: with
// two candidates it picks the first listed unless the second has fewer
// requests in flight.
func firstPick() uint64 { return 0 }

func newEnv(t *testing.T, mut ...func(*Options)) *env {
	t.Helper()
	tso := &atomic.Uint64{}
	start := hybridts.Now()
	tso.Store(start)
	e := &env{t: t, tso: tso, backends: map[string]*fakeBackend{}, topo: newFakeTopo(tso), events: &eventLog{}, start: start}
	snap := &topology.Snapshot{PublishedAt: time.Now()}
	for i, id := range []string{"a", "b", "c"} {
		b := startBackend(t, id, tso)
		e.backends[id] = b
		conn, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := &topology.Cluster{ID: id, URI: b.addr, Role: topology.RoleAlternative, Order: i, Healthy: true,
			Breaker: topology.BreakerClosed, Checkpoints: []uint64{0, 0}, CheckpointsKnown: true,
			Conn: conn, Outstanding: &atomic.Int64{}, Served: &atomic.Int64{}}
		if id == "a" {
			c.Role = topology.RoleLeader
			c.Checkpoints, c.CheckpointsKnown = nil, false
			snap.Leader = c
		}
		snap.Clusters = append(snap.Clusters, c)
	}
	e.topo.snap.Store(snap)
	e.topo.colls["default.coll"] = topology.CollectionInfo{DB: "default", Name: "coll",
		ConsistencyLevel: int32(commonpb.ConsistencyLevel_Bounded), PChannels: []int{0, 1}}
	e.topo.colls["default.sessioncoll"] = topology.CollectionInfo{DB: "default", Name: "sessioncoll",
		ConsistencyLevel: int32(commonpb.ConsistencyLevel_Session), PChannels: []int{1}}

	engine := EngineGRPC
	if strings.Contains(t.Name(), "/relay") {
		engine = EngineRelay
	}
	opts := Options{
		Engine:   engine,
		Topology: e.topo,
		Router:   router.New(router.Options{LeaderNow: e.topo.LeaderNow, Rand: firstPick}),
		Observer: e.events,
	}
	for _, m := range mut {
		m(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.conn = conn
	e.client = milvuspb.NewMilvusServiceClient(conn)
	return e
}

// bothEngines runs a test against each engine; newEnv picks the engine
// from the subtest's name.
func bothEngines(t *testing.T, f func(t *testing.T)) {
	t.Run("relay", f)
	t.Run("grpc", f)
}

// ctx returns a context carrying the metadata an SDK sends.
func (e *env) ctx(kv ...string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	e.t.Cleanup(cancel)
	if len(kv) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	return ctx
}

// totalReceived counts the calls of method over all backends.
func (e *env) totalReceived(method string) int {
	n := 0
	for _, b := range e.backends {
		n += len(b.received(method))
	}
	return n
}

func (e *env) resetBackends() {
	for _, b := range e.backends {
		b.reset()
	}
}
