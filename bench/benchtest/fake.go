// Package benchtest is a small in-memory Milvus API server for testing the
// bench harness and its command without a simulator: it stores keys,
// returns hybrid-style timestamps and the proxy's cluster header, and has
// knobs for injected errors, leader changes and stale reads.
package benchtest

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ClusterHeader is the proxy's response header naming the serving cluster.
const ClusterHeader = "x-milvus-ha-cluster"

// The field names the harness uses.
const (
	fieldID     = "id"
	fieldVector = "vector"
)

// Fake is just enough of the Milvus API for the bench driver. Set its
// knobs before Start.
type Fake struct {
	milvuspb.UnimplementedMilvusServiceServer

	ReadClusters []string // reads rotate over these (header); none: no header
	leader       atomic.Pointer[string]
	stallUntil   atomic.Int64 // unix ns; writes before it wait for it

	// StaleReads makes queries ignore the guarantee timestamp and miss the
	// most recent writes: a broken Session implementation.
	StaleReads bool
	// FailEvery makes every FailEvery-th search fail, alternately with
	// Milvus status code 1100 and with gRPC Unavailable (both "injected").
	FailEvery int64
	// SearchDelay is added to every search.
	SearchDelay time.Duration

	mu       sync.Mutex
	colls    map[string]bool
	loaded   map[string]bool
	rows     map[int64]uint64 // key -> write ts
	lastKeys []int64          // most recent writes, hidden by staleReads
	ts       uint64
	idents   atomic.Int64
	searches atomic.Int64
	reads    atomic.Int64
	sessions sync.Map // identifier seen on calls
	guar     sync.Map // guarantee timestamps seen, by level
	dims     map[string]int64
}

// New returns a fake whose reads report the given clusters in turn and
// whose writes report leader "a".
func New(readClusters ...string) *Fake {
	f := &Fake{ReadClusters: readClusters, colls: map[string]bool{}, loaded: map[string]bool{},
		rows: map[int64]uint64{}, dims: map[string]int64{}}
	a := "a"
	f.leader.Store(&a)
	return f
}

// Start serves the fake on a loopback port and returns its address and
// a function that stops it.
func (f *Fake) Start() (addr string, stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := grpc.NewServer()
	milvuspb.RegisterMilvusServiceServer(s, f)
	go s.Serve(lis)
	return lis.Addr().String(), s.Stop, nil
}

// SetStall makes writes that arrive in the next d wait until d has
// passed, as writes held during a failover do.
func (f *Fake) SetStall(d time.Duration) { f.stallUntil.Store(time.Now().Add(d).UnixNano()) }

// SetLeader changes the cluster writes report.
func (f *Fake) SetLeader(id string) { f.leader.Store(&id) }

// Rows is the number of distinct keys stored.
func (f *Fake) Rows() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.rows)
}

// Dim is the dimension of a created collection's vector field.
func (f *Fake) Dim(collection string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dims[collection]
}

// Sessions is the number of distinct "identifier" metadata values seen.
func (f *Fake) Sessions() int {
	n := 0
	f.sessions.Range(func(any, any) bool { n++; return true })
	return n
}

// Searches is the number of Search calls served.
func (f *Fake) Searches() int64 { return f.searches.Load() }

// Guarantee is the guarantee_timestamp of the last search at a level.
func (f *Fake) Guarantee(level commonpb.ConsistencyLevel) (uint64, bool) {
	v, ok := f.guar.Load(level)
	if !ok {
		return 0, false
	}
	return v.(uint64), true
}

func ok() *commonpb.Status { return &commonpb.Status{} }

func (f *Fake) next() uint64 {
	f.ts++
	return hybridts.Compose(time.Now().UnixMilli(), uint32(f.ts))
}

func (f *Fake) noteSession(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("identifier"); len(v) > 0 {
		f.sessions.Store(v[0], true)
	}
}

func (f *Fake) readHeader(ctx context.Context) {
	if len(f.ReadClusters) == 0 {
		return
	}
	n := f.reads.Add(1)
	grpc.SetHeader(ctx, metadata.Pairs(ClusterHeader, f.ReadClusters[int(n)%len(f.ReadClusters)]))
}

func (f *Fake) Connect(ctx context.Context, _ *milvuspb.ConnectRequest) (*milvuspb.ConnectResponse, error) {
	return &milvuspb.ConnectResponse{Status: ok(), Identifier: f.idents.Add(1) + 1000}, nil
}

func (f *Fake) HasCollection(_ context.Context, r *milvuspb.HasCollectionRequest) (*milvuspb.BoolResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &milvuspb.BoolResponse{Status: ok(), Value: f.colls[r.GetCollectionName()]}, nil
}

func (f *Fake) DropCollection(_ context.Context, r *milvuspb.DropCollectionRequest) (*commonpb.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.colls, r.GetCollectionName())
	delete(f.loaded, r.GetCollectionName())
	f.rows = map[int64]uint64{}
	return ok(), nil
}

func (f *Fake) CreateCollection(_ context.Context, r *milvuspb.CreateCollectionRequest) (*commonpb.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.colls[r.GetCollectionName()] {
		return &commonpb.Status{Code: 65535, Reason: "collection exists"}, nil
	}
	var s schemapb.CollectionSchema
	if err := proto.Unmarshal(r.GetSchema(), &s); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	for _, fs := range s.GetFields() {
		for _, kv := range fs.GetTypeParams() {
			if kv.GetKey() == "dim" {
				d, _ := strconv.Atoi(kv.GetValue())
				f.dims[r.GetCollectionName()] = int64(d)
			}
		}
	}
	f.colls[r.GetCollectionName()] = true
	return ok(), nil
}

func (f *Fake) CreateIndex(context.Context, *milvuspb.CreateIndexRequest) (*commonpb.Status, error) {
	return ok(), nil
}

func (f *Fake) LoadCollection(_ context.Context, r *milvuspb.LoadCollectionRequest) (*commonpb.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loaded[r.GetCollectionName()] = true
	return ok(), nil
}

func (f *Fake) GetLoadState(_ context.Context, r *milvuspb.GetLoadStateRequest) (*milvuspb.GetLoadStateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := commonpb.LoadState_LoadStateNotLoad
	if f.loaded[r.GetCollectionName()] {
		st = commonpb.LoadState_LoadStateLoaded
	}
	return &milvuspb.GetLoadStateResponse{Status: ok(), State: st}, nil
}

func (f *Fake) write(ctx context.Context, coll string, fields []*schemapb.FieldData, n uint32) (*milvuspb.MutationResult, error) {
	f.noteSession(ctx)
	if wait := time.Until(time.Unix(0, f.stallUntil.Load())); wait > 0 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	grpc.SetHeader(ctx, metadata.Pairs(ClusterHeader, *f.leader.Load()))
	var ids []int64
	var vecLen int
	var dim int64
	for _, fd := range fields {
		switch fd.GetFieldName() {
		case fieldID:
			ids = fd.GetScalars().GetLongData().GetData()
		case fieldVector:
			vecLen = len(fd.GetVectors().GetFloatVector().GetData())
			dim = fd.GetVectors().GetDim()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.colls[coll] {
		return &milvuspb.MutationResult{Status: &commonpb.Status{Code: 100, Reason: "collection not found"}}, nil
	}
	if len(ids) != int(n) || dim != f.dims[coll] || vecLen != int(n)*int(dim) {
		return nil, status.Errorf(codes.InvalidArgument, "bad rows: %d ids, %d floats, dim %d, num_rows %d", len(ids), vecLen, dim, n)
	}
	ts := f.next()
	for _, id := range ids {
		f.rows[id] = ts
	}
	f.lastKeys = append(f.lastKeys, ids...)
	if len(f.lastKeys) > 64 {
		f.lastKeys = f.lastKeys[len(f.lastKeys)-64:]
	}
	return &milvuspb.MutationResult{Status: ok(), Timestamp: ts, InsertCnt: int64(len(ids))}, nil
}

func (f *Fake) Insert(ctx context.Context, r *milvuspb.InsertRequest) (*milvuspb.MutationResult, error) {
	return f.write(ctx, r.GetCollectionName(), r.GetFieldsData(), r.GetNumRows())
}

func (f *Fake) Upsert(ctx context.Context, r *milvuspb.UpsertRequest) (*milvuspb.MutationResult, error) {
	return f.write(ctx, r.GetCollectionName(), r.GetFieldsData(), r.GetNumRows())
}

func (f *Fake) Search(ctx context.Context, r *milvuspb.SearchRequest) (*milvuspb.SearchResults, error) {
	f.noteSession(ctx)
	f.guar.Store(r.GetConsistencyLevel(), r.GetGuaranteeTimestamp())
	n := f.searches.Add(1)
	if f.FailEvery > 0 && n%f.FailEvery == 0 {
		if (n/f.FailEvery)%2 == 1 {
			return &milvuspb.SearchResults{Status: &commonpb.Status{Code: 1100, Reason: "injected"}}, nil
		}
		return nil, status.Error(codes.Unavailable, "injected")
	}
	if r.GetPlaceholderGroup() == nil || r.GetNq() < 1 {
		return nil, status.Error(codes.InvalidArgument, "no vectors")
	}
	f.readHeader(ctx)
	if d := f.SearchDelay; d > 0 {
		time.Sleep(d)
	}
	return &milvuspb.SearchResults{Status: ok(), Results: &schemapb.SearchResultData{NumQueries: r.GetNq()}}, nil
}

func (f *Fake) Query(ctx context.Context, r *milvuspb.QueryRequest) (*milvuspb.QueryResults, error) {
	f.noteSession(ctx)
	f.readHeader(ctx)
	expr := r.GetExpr()
	i, j := strings.Index(expr, "["), strings.Index(expr, "]")
	if !strings.HasPrefix(expr, fieldID+" in ") || i < 0 || j < i {
		return &milvuspb.QueryResults{Status: &commonpb.Status{Code: 1100, Reason: "bad expr " + expr}}, nil
	}
	key, err := strconv.ParseInt(expr[i+1:j], 10, 64)
	if err != nil {
		return &milvuspb.QueryResults{Status: &commonpb.Status{Code: 1100, Reason: err.Error()}}, nil
	}
	f.mu.Lock()
	_, found := f.rows[key]
	if f.StaleReads {
		for _, k := range f.lastKeys {
			if k == key {
				found = false
			}
		}
	}
	f.mu.Unlock()
	var data []int64
	if found {
		data = []int64{key}
	}
	return &milvuspb.QueryResults{Status: ok(), FieldsData: []*schemapb.FieldData{{
		FieldName: fieldID, Type: schemapb.DataType_Int64,
		Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{
			Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: data}}}},
	}}}, nil
}
