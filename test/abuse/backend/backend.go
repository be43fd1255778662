// Package backend is a minimal Milvus for the abuse suite (test/abuse):
// enough of MilvusService for the proxy's static discovery (CheckHealth,
// AllocTimestamp, GetReplicateConfiguration), its collection cache
// (DescribeCollection) and the calls the suite's clients make (Search,
// Query, Insert), with large or slow answers on demand. It runs in a
// process of its own (abuse-backend), as Milvus does, so that its work
// never competes with the suite's clients inside the test process.
package backend

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Search parameters the backend understands, so that a probe can ask for
// what real Milvus produces under load: a large answer (a wide output
// field) or a slow one.
const (
	ParamRespBytes = "abuse_response_bytes" // answer with this many bytes of ids
	ParamDelay     = "abuse_delay"          // answer after this duration (Go syntax)
)

// StatsRequest is the GetMetrics request that asks for the counters (Stats
// as JSON in the response).
const StatsRequest = "abuse-backend-stats"

// Stats are the backend's counters.
type Stats struct {
	Calls   map[string]int // method -> calls that reached the handler
	Errors  map[string]int // method -> calls the handler failed
	Unknown map[string]int // methods not implemented
	// Abuse counts, per method, the calls that name AbuseCollection:
	// what a proxy passed on of an abuser's requests.
	Abuse map[string]int
}

// AbuseCollection is the collection the suite's abusers name.
const AbuseCollection = "abuse"

// Server is the backend. Methods it does not implement answer
// Unimplemented and are counted, so that a test can tell when the proxy
// starts to need more.
type Server struct {
	milvuspb.UnimplementedMilvusServiceServer

	srv *grpc.Server
	ts  atomic.Uint64 // last hybrid timestamp handed out
	big sync.Map      // answer size -> string of that many bytes

	mu      sync.Mutex
	calls   map[string]int // method -> calls that reached the backend
	errs    map[string]int // method -> calls the backend failed (gRPC error)
	unknown map[string]int // methods the backend does not implement
	abuse   map[string]int // method -> calls naming AbuseCollection
}

// New returns a backend. Its keepalive enforcement is Milvus's (pings
// every 5 s permitted, with or without calls) and its message limits are
// Milvus's server defaults, so that the proxy meets the limits it meets
// in production.
func New() *Server {
	b := &Server{
		calls:   map[string]int{},
		errs:    map[string]int{},
		unknown: map[string]int{},
		abuse:   map[string]int{},
	}
	b.srv = grpc.NewServer(
		grpc.MaxRecvMsgSize(256<<20),
		grpc.MaxSendMsgSize(256<<20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(b.count),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			m, _ := grpc.MethodFromServerStream(ss)
			b.mu.Lock()
			b.unknown[m]++
			b.mu.Unlock()
			return status.Errorf(codes.Unimplemented, "backend: %s is not implemented", m)
		}),
	)
	milvuspb.RegisterMilvusServiceServer(b.srv, b)
	return b
}

// Serve serves lis until Stop.
func (b *Server) Serve(lis net.Listener) error { return b.srv.Serve(lis) }

// Stop closes every connection and stops serving.
func (b *Server) Stop() { b.srv.Stop() }

// count records every call that reached the backend, and the ones it
// failed; grpc-go calls it only after the request decoded, so a request
// it cannot decode is counted by the error it returns, under "decode".
func (b *Server) count(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	name := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	resp, err := h(ctx, req)
	coll, _ := req.(interface{ GetCollectionName() string })
	b.mu.Lock()
	b.calls[name]++
	if err != nil {
		b.errs[name]++
	}
	if coll != nil && coll.GetCollectionName() == AbuseCollection {
		b.abuse[name]++
	}
	b.mu.Unlock()
	return resp, err
}

// Stats returns copies of the counters.
func (b *Server) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{Calls: maps.Clone(b.calls), Errors: maps.Clone(b.errs), Unknown: maps.Clone(b.unknown), Abuse: maps.Clone(b.abuse)}
}

// GetMetrics answers StatsRequest with Stats as JSON.
func (b *Server) GetMetrics(_ context.Context, req *milvuspb.GetMetricsRequest) (*milvuspb.GetMetricsResponse, error) {
	if req.GetRequest() != StatsRequest {
		return nil, status.Errorf(codes.InvalidArgument, "backend: GetMetrics knows only %q", StatsRequest)
	}
	js, err := json.Marshal(b.Stats())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "backend: %v", err)
	}
	return &milvuspb.GetMetricsResponse{Status: okStatus, Response: string(js)}, nil
}

// now returns a fresh hybrid timestamp (physical ms << 18), strictly
// increasing, as Milvus's TSO does.
func (b *Server) now() uint64 {
	for {
		last := b.ts.Load()
		ts := uint64(time.Now().UnixMilli()) << 18
		if ts <= last {
			ts = last + 1
		}
		if b.ts.CompareAndSwap(last, ts) {
			return ts
		}
	}
}

var okStatus = &commonpb.Status{ErrorCode: commonpb.ErrorCode_Success}

func (b *Server) CheckHealth(context.Context, *milvuspb.CheckHealthRequest) (*milvuspb.CheckHealthResponse, error) {
	return &milvuspb.CheckHealthResponse{Status: okStatus, IsHealthy: true}, nil
}

func (b *Server) AllocTimestamp(context.Context, *milvuspb.AllocTimestampRequest) (*milvuspb.AllocTimestampResponse, error) {
	return &milvuspb.AllocTimestampResponse{Status: okStatus, Timestamp: b.now()}, nil
}

// GetReplicateConfiguration answers as a Milvus that takes part in no
// replication.
func (b *Server) GetReplicateConfiguration(context.Context, *milvuspb.GetReplicateConfigurationRequest) (*milvuspb.GetReplicateConfigurationResponse, error) {
	return &milvuspb.GetReplicateConfigurationResponse{Status: okStatus, Configuration: &commonpb.ReplicateConfiguration{}}, nil
}

func (b *Server) DescribeCollection(_ context.Context, req *milvuspb.DescribeCollectionRequest) (*milvuspb.DescribeCollectionResponse, error) {
	return &milvuspb.DescribeCollectionResponse{
		Status:       okStatus,
		CollectionID: 1,
		Schema: &schemapb.CollectionSchema{
			Name: req.GetCollectionName(),
			Fields: []*schemapb.FieldSchema{
				{FieldID: 100, Name: "id", DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
				{FieldID: 101, Name: "vec", DataType: schemapb.DataType_FloatVector,
					TypeParams: []*commonpb.KeyValuePair{{Key: "dim", Value: "4"}}},
			},
		},
		CollectionName:       req.GetCollectionName(),
		DbName:               req.GetDbName(),
		ShardsNum:            1,
		VirtualChannelNames:  []string{"by-rootcoord-dml_0_1v0"},
		PhysicalChannelNames: []string{"by-rootcoord-dml_0"},
		ConsistencyLevel:     commonpb.ConsistencyLevel_Bounded,
		CreatedTimestamp:     1 << 18,
	}, nil
}

func (b *Server) Search(ctx context.Context, req *milvuspb.SearchRequest) (*milvuspb.SearchResults, error) {
	n, delay := 0, time.Duration(0)
	for _, kv := range req.GetSearchParams() {
		switch kv.GetKey() {
		case ParamRespBytes:
			n, _ = strconv.Atoi(kv.GetValue())
		case ParamDelay:
			delay, _ = time.ParseDuration(kv.GetValue())
		}
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ids := []string{"1", "2", "3"}
	if n > 0 {
		ids = []string{b.bigString(n)}
	}
	return &milvuspb.SearchResults{
		Status:         okStatus,
		CollectionName: req.GetCollectionName(),
		SessionTs:      b.now(),
		Results: &schemapb.SearchResultData{
			NumQueries: 1,
			TopK:       int64(len(ids)),
			Topks:      []int64{int64(len(ids))},
			Scores:     make([]float32, len(ids)),
			Ids:        &schemapb.IDs{IdField: &schemapb.IDs_StrId{StrId: &schemapb.StringArray{Data: ids}}},
		},
	}, nil
}

// bigString returns n bytes of 'x', made once per size.
func (b *Server) bigString(n int) string {
	if v, ok := b.big.Load(n); ok {
		return v.(string)
	}
	v, _ := b.big.LoadOrStore(n, strings.Repeat("x", n))
	return v.(string)
}

func (b *Server) Query(_ context.Context, req *milvuspb.QueryRequest) (*milvuspb.QueryResults, error) {
	return &milvuspb.QueryResults{Status: okStatus, CollectionName: req.GetCollectionName()}, nil
}

func (b *Server) Insert(_ context.Context, req *milvuspb.InsertRequest) (*milvuspb.MutationResult, error) {
	n := req.GetNumRows()
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = int64(i)
	}
	return &milvuspb.MutationResult{
		Status:    okStatus,
		IDs:       &schemapb.IDs{IdField: &schemapb.IDs_IntId{IntId: &schemapb.LongArray{Data: ids}}},
		InsertCnt: int64(n),
		Timestamp: b.now(),
	}, nil
}
