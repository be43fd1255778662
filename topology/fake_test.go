package topology

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fakeMilvus is a scripted Milvus backend: the topology manager's calls
// answer from fields the test sets.
type fakeMilvus struct {
	milvuspb.UnimplementedMilvusServiceServer
	id string

	mu          sync.Mutex
	cfg         *commonpb.ReplicateConfiguration
	noReplicate bool              // replication API answers Unimplemented
	cps         map[string]uint64 // target pchannel -> time tick
	infoErr     error
	infoDelay   time.Duration
	infoSources map[string]bool // source_cluster_id values seen
	healthy     bool
	healthErr   error
	noHealth    bool          // CheckHealth answers Unimplemented
	tsoOffset   time.Duration // leader clock = local clock + offset
	colls       map[string]*milvuspb.DescribeCollectionResponse
	lastMD      map[string]metadata.MD // by method

	describeCalls atomic.Int32
	describeDelay time.Duration
	describeErr   error // a gRPC error DescribeCollection fails with

	addr string
	srv  *grpc.Server
}

func startFake(t *testing.T, id string) *fakeMilvus {
	t.Helper()
	f := &fakeMilvus{id: id, healthy: true, cps: map[string]uint64{}, infoSources: map[string]bool{},
		colls: map[string]*milvuspb.DescribeCollectionResponse{}, lastMD: map[string]metadata.MD{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	f.serve(lis)
	t.Cleanup(f.stop)
	return f
}

func (f *fakeMilvus) serve(lis net.Listener) {
	srv := grpc.NewServer()
	milvuspb.RegisterMilvusServiceServer(srv, f)
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
}

// stop kills the server (connections refused afterwards).
func (f *fakeMilvus) stop() {
	f.mu.Lock()
	srv := f.srv
	f.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// restart serves again on the same address.
func (f *fakeMilvus) restart(t *testing.T) {
	t.Helper()
	var lis net.Listener
	var err error
	for range 50 {
		if lis, err = net.Listen("tcp", f.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("re-listening on %s: %v", f.addr, err)
	}
	f.serve(lis)
}

func (f *fakeMilvus) set(fn func(f *fakeMilvus)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeMilvus) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.lastMD[method] = md
	f.mu.Unlock()
}

func (f *fakeMilvus) md(method string) metadata.MD {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastMD[method]
}

var okStatus = &commonpb.Status{}

func (f *fakeMilvus) GetReplicateConfiguration(ctx context.Context, _ *milvuspb.GetReplicateConfigurationRequest) (*milvuspb.GetReplicateConfigurationResponse, error) {
	f.record(ctx, "GetReplicateConfiguration")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noReplicate {
		return nil, status.Error(codes.Unimplemented, "unknown method GetReplicateConfiguration")
	}
	return &milvuspb.GetReplicateConfigurationResponse{Status: okStatus, Configuration: f.cfg}, nil
}

func (f *fakeMilvus) GetReplicateInfo(ctx context.Context, req *milvuspb.GetReplicateInfoRequest) (*milvuspb.GetReplicateInfoResponse, error) {
	f.record(ctx, "GetReplicateInfo")
	f.mu.Lock()
	delay, err, noRep := f.infoDelay, f.infoErr, f.noReplicate
	f.infoSources[req.GetSourceClusterId()] = true
	tt, ok := f.cps[req.GetTargetPchannel()]
	f.mu.Unlock()
	if noRep {
		return nil, status.Error(codes.Unimplemented, "unknown method GetReplicateInfo")
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no replication on pchannel %s", req.GetTargetPchannel())
	}
	return &milvuspb.GetReplicateInfoResponse{Checkpoint: &commonpb.ReplicateCheckpoint{
		ClusterId: req.GetSourceClusterId(), TimeTick: tt,
	}}, nil
}

func (f *fakeMilvus) CheckHealth(ctx context.Context, _ *milvuspb.CheckHealthRequest) (*milvuspb.CheckHealthResponse, error) {
	f.record(ctx, "CheckHealth")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noHealth {
		return nil, status.Error(codes.Unimplemented, "unknown method CheckHealth")
	}
	if f.healthErr != nil {
		return nil, f.healthErr
	}
	resp := &milvuspb.CheckHealthResponse{Status: okStatus, IsHealthy: f.healthy}
	if !f.healthy {
		resp.Reasons = []string{"querynode down"}
	}
	return resp, nil
}

func (f *fakeMilvus) AllocTimestamp(ctx context.Context, _ *milvuspb.AllocTimestampRequest) (*milvuspb.AllocTimestampResponse, error) {
	f.record(ctx, "AllocTimestamp")
	f.mu.Lock()
	off := f.tsoOffset
	f.mu.Unlock()
	ms := time.Now().Add(off).UnixMilli()
	return &milvuspb.AllocTimestampResponse{Status: okStatus, Timestamp: hybridts.Compose(ms, 7)}, nil
}

func (f *fakeMilvus) DescribeCollection(ctx context.Context, req *milvuspb.DescribeCollectionRequest) (*milvuspb.DescribeCollectionResponse, error) {
	f.record(ctx, "DescribeCollection")
	f.describeCalls.Add(1)
	f.mu.Lock()
	delay, failWith := f.describeDelay, f.describeErr
	resp, ok := f.colls[req.GetDbName()+"/"+req.GetCollectionName()]
	f.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	if failWith != nil {
		return nil, failWith
	}
	if !ok {
		return &milvuspb.DescribeCollectionResponse{Status: &commonpb.Status{
			Code: 100, ErrorCode: commonpb.ErrorCode_CollectionNotExists,
			Reason: fmt.Sprintf("collection not found[database=%s][collection=%s]", req.GetDbName(), req.GetCollectionName()),
		}}, nil
	}
	return resp, nil
}

// starConfig builds the replicate configuration of a star topology with
// n pchannels per cluster.
func starConfig(source string, n int, targets ...string) *commonpb.ReplicateConfiguration {
	cfg := &commonpb.ReplicateConfiguration{}
	for _, id := range append([]string{source}, targets...) {
		c := &commonpb.MilvusCluster{ClusterId: id, ConnectionParam: &commonpb.ConnectionParam{Uri: id}}
		for i := range n {
			c.Pchannels = append(c.Pchannels, fmt.Sprintf("%s-rootcoord-dml_%d", id, i))
		}
		cfg.Clusters = append(cfg.Clusters, c)
	}
	for _, tgt := range targets {
		cfg.CrossClusterTopology = append(cfg.CrossClusterTopology, &commonpb.CrossClusterTopology{SourceClusterId: source, TargetClusterId: tgt})
	}
	return cfg
}

// testOptions returns fast timings for tests.
func testOptions(discovery string, clusters ...ClusterOptions) Options {
	return Options{
		Clusters:          clusters,
		Discovery:         discovery,
		PollInterval:      20 * time.Millisecond,
		PollTimeout:       200 * time.Millisecond,
		DiscoveryInterval: 50 * time.Millisecond,
		ProbeInterval:     20 * time.Millisecond,
		ProbeTimeout:      200 * time.Millisecond,
		DetectAfter:       300 * time.Millisecond,
		WriteHold:         300 * time.Millisecond,
		BreakerOpenFor:    150 * time.Millisecond,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func startManager(t *testing.T, opts Options) *Manager {
	t.Helper()
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(func() { m.Close() })
	return m
}

// waitFor waits until cond holds on a published snapshot. The deadline
// is generous: it only bounds a broken test, it is not a speed assertion.
func waitFor(t *testing.T, m *Manager, what string, cond func(s *Snapshot) bool) *Snapshot {
	t.Helper()
	return testutil.WaitPublished(t, m, 10*time.Second, what, cond, describe)
}

func describe(s *Snapshot) string {
	out := fmt.Sprintf("epoch=%d failingOver=%v discoveryErr=%q", s.Epoch, s.FailingOver, s.DiscoveryError)
	if s.Leader != nil {
		out += " leader=" + s.Leader.ID
	}
	for _, c := range s.Clusters {
		out += fmt.Sprintf(" [%s %s healthy=%v(%s) breaker=%s known=%v cps=%v lag=%q q=%v]",
			c.ID, c.Role, c.Healthy, c.HealthReason, c.Breaker, c.CheckpointsKnown, c.Checkpoints, c.LagReason, c.Quarantined)
	}
	return out
}
