package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// troubledBackend is a Milvus API server whose DescribeCollection fails
// with a gRPC error (as a backend that is overloaded, restarting, or does
// not implement it) while Search answers.
type troubledBackend struct {
	milvuspb.UnimplementedMilvusServiceServer
	describeErr   error
	describeCalls atomic.Int64
	searches      atomic.Int64
}

func (b *troubledBackend) CheckHealth(context.Context, *milvuspb.CheckHealthRequest) (*milvuspb.CheckHealthResponse, error) {
	return &milvuspb.CheckHealthResponse{Status: &commonpb.Status{}, IsHealthy: true}, nil
}

func (b *troubledBackend) AllocTimestamp(context.Context, *milvuspb.AllocTimestampRequest) (*milvuspb.AllocTimestampResponse, error) {
	return &milvuspb.AllocTimestampResponse{Status: &commonpb.Status{}, Timestamp: hybridts.Now()}, nil
}

func (b *troubledBackend) DescribeCollection(context.Context, *milvuspb.DescribeCollectionRequest) (*milvuspb.DescribeCollectionResponse, error) {
	b.describeCalls.Add(1)
	return nil, b.describeErr
}

func (b *troubledBackend) Search(_ context.Context, req *milvuspb.SearchRequest) (*milvuspb.SearchResults, error) {
	b.searches.Add(1)
	// The backend's own answer, recognisable by the client.
	return &milvuspb.SearchResults{Status: &commonpb.Status{}, CollectionName: "answered:" + req.GetCollectionName()}, nil
}

// TestCollectionLookupFailuresCached: while the leader's DescribeCollection
// fails with a gRPC error, reads still reach the leader and get its own
// answer, and the leader sees one DescribeCollection per failure TTL, not
// one per read, on both engines and from concurrent clients.
func TestCollectionLookupFailuresCached(t *testing.T) {
	for _, engine := range []Engine{EngineRelay, EngineGRPC} {
		t.Run(string(engine), func(t *testing.T) {
			be := &troubledBackend{describeErr: status.Error(codes.Unimplemented, "unknown method DescribeCollection")}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer()
			milvuspb.RegisterMilvusServiceServer(gs, be)
			go func() { _ = gs.Serve(lis) }()
			t.Cleanup(gs.Stop)

			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			m, err := topology.New(topology.Options{
				Discovery: topology.DiscoveryStatic,
				Clusters:  []topology.ClusterOptions{{ID: "a", URI: lis.Addr().String(), Role: topology.RoleLeader}},
				// Longer than the test: every read after the first within it.
				CollectionFailureTTL: time.Hour,
				DialOptions:          BackendDialOptions(),
				Logger:               quiet,
			})
			if err != nil {
				t.Fatal(err)
			}
			m.Start()
			t.Cleanup(func() { _ = m.Close() })
			srv, err := New(Options{Engine: engine, Topology: m, Logger: quiet,
				Router: router.New(router.Options{LeaderNow: m.LeaderNow})})
			if err != nil {
				t.Fatal(err)
			}
			plis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = srv.Serve(plis) }()
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(ctx)
			})
			conn, err := grpc.NewClient(plis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			client := milvuspb.NewMilvusServiceClient(conn)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const clients, perClient = 8, 25
			var wg sync.WaitGroup
			var failed atomic.Int64
			for range clients {
				wg.Go(func() {
					for range perClient {
						resp, err := client.Search(ctx, &milvuspb.SearchRequest{CollectionName: "docs",
							ConsistencyLevel: commonpb.ConsistencyLevel_Bounded})
						if err != nil || resp.GetCollectionName() != "answered:docs" {
							failed.Add(1)
							t.Errorf("Search: %v, %v; want the backend's own answer", resp, err)
						}
					}
				})
			}
			wg.Wait()
			if failed.Load() != 0 {
				t.Fatalf("%d of %d reads failed", failed.Load(), clients*perClient)
			}
			if n := be.searches.Load(); n != clients*perClient {
				t.Errorf("backend served %d searches, want %d", n, clients*perClient)
			}
			if n := be.describeCalls.Load(); n != 1 {
				t.Errorf("%d DescribeCollection calls for %d reads within the failure TTL, want 1", n, clients*perClient)
			}
		})
	}
}
