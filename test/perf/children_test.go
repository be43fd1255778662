package perf

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/milvus-io/milvus/client/v2/entity"
	"github.com/milvus-io/milvus/client/v2/index"
	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
)

// envChild, set in the environment of the re-executed test binary, makes
// TestMain run one of the benchmark's helper processes instead of the
// tests: childBackend or childSims.
const envChild = "MHP_PERF_CHILD"

const (
	childBackend = "backend" // the minimal Milvus backend
	childSims    = "sims"    // three simulated clusters joined by replication
)

// TestMain runs the tests, or a helper process (envChild). Helpers run
// until their standard input closes (the benchmark is over or gone).
func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "":
		os.Exit(m.Run())
	case childBackend:
		os.Exit(runBackend())
	case childSims:
		os.Exit(runSims())
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: want %s or %s\n", envChild, os.Getenv(envChild), childBackend, childSims)
		os.Exit(2)
	}
}

// collection is the collection every request names; dim its vector's
// dimension.
const (
	collection = "coll"
	dim        = 128
	topK       = 10
)

// backend is a minimal Milvus: what static discovery and the collection
// cache ask (CheckHealth, AllocTimestamp, GetReplicateConfiguration,
// DescribeCollection) and a Search answered with topK hits, made once.
// It counts nothing and locks nothing, so that its own cost per call is
// as small as a gRPC server's can be.
type backend struct {
	milvuspb.UnimplementedMilvusServiceServer
	search   *milvuspb.SearchResults
	describe *milvuspb.DescribeCollectionResponse
}

var okStatus = &commonpb.Status{ErrorCode: commonpb.ErrorCode_Success}

func newBackend() *backend {
	ids := make([]int64, topK)
	scores := make([]float32, topK)
	for i := range ids {
		ids[i], scores[i] = int64(1000+i), float32(i)/10
	}
	return &backend{
		search: &milvuspb.SearchResults{
			Status: okStatus, CollectionName: collection,
			Results: &schemapb.SearchResultData{NumQueries: 1, TopK: topK, Scores: scores, Topks: []int64{topK},
				Ids: &schemapb.IDs{IdField: &schemapb.IDs_IntId{IntId: &schemapb.LongArray{Data: ids}}}},
		},
		describe: &milvuspb.DescribeCollectionResponse{
			Status: okStatus, CollectionID: 1, CollectionName: collection, DbName: "default",
			Schema: &schemapb.CollectionSchema{Name: collection, Fields: []*schemapb.FieldSchema{
				{FieldID: 100, Name: "id", DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
				{FieldID: 101, Name: "vector", DataType: schemapb.DataType_FloatVector,
					TypeParams: []*commonpb.KeyValuePair{{Key: "dim", Value: fmt.Sprint(dim)}}},
			}},
			ShardsNum: 2, VirtualChannelNames: []string{"a-rootcoord-dml_0_1v0", "a-rootcoord-dml_1_1v1"},
			PhysicalChannelNames: []string{"a-rootcoord-dml_0", "a-rootcoord-dml_1"},
			ConsistencyLevel:     commonpb.ConsistencyLevel_Bounded, CreatedTimestamp: 1 << 18,
		},
	}
}

func (b *backend) CheckHealth(context.Context, *milvuspb.CheckHealthRequest) (*milvuspb.CheckHealthResponse, error) {
	return &milvuspb.CheckHealthResponse{Status: okStatus, IsHealthy: true}, nil
}

func (b *backend) AllocTimestamp(context.Context, *milvuspb.AllocTimestampRequest) (*milvuspb.AllocTimestampResponse, error) {
	return &milvuspb.AllocTimestampResponse{Status: okStatus, Timestamp: uint64(time.Now().UnixMilli()) << 18}, nil
}

// GetReplicateConfiguration answers as a Milvus in no replication.
func (b *backend) GetReplicateConfiguration(context.Context, *milvuspb.GetReplicateConfigurationRequest) (*milvuspb.GetReplicateConfigurationResponse, error) {
	return &milvuspb.GetReplicateConfigurationResponse{Status: okStatus, Configuration: &commonpb.ReplicateConfiguration{}}, nil
}

func (b *backend) DescribeCollection(context.Context, *milvuspb.DescribeCollectionRequest) (*milvuspb.DescribeCollectionResponse, error) {
	return b.describe, nil
}

func (b *backend) Search(context.Context, *milvuspb.SearchRequest) (*milvuspb.SearchResults, error) {
	return b.search, nil
}

// runBackend serves the backend on a loopback port and prints
// "perf-backend listening on ADDR".
func runBackend() int {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "perf-backend:", err)
		return 1
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(256<<20), grpc.MaxSendMsgSize(256<<20))
	milvuspb.RegisterMilvusServiceServer(srv, newBackend())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		srv.Stop()
	}()
	fmt.Printf("perf-backend listening on %s\n", lis.Addr())
	if err := srv.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "perf-backend:", err)
		return 1
	}
	return 0
}

// simRows is how many rows the simulated clusters hold: few, so that
// their brute-force search stays a small part of the measurement.
const simRows = 200

// runSims starts clusters a (the replication source), b and c (its
// targets), creates, indexes, loads and fills the collection on a, waits
// until b and c answer a search with topK hits, prints
// "perf-sims a=ADDR b=ADDR c=ADDR" and runs until stdin closes.
func runSims() int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	fail := func(what string, err error) int {
		cancel()
		fmt.Fprintf(os.Stderr, "perf-sims: %s: %v\n", what, err)
		return 1
	}
	var clusters []*sim.Cluster
	defer func() {
		for _, c := range clusters {
			c.Stop()
		}
	}()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, id := range []string{"a", "b", "c"} {
		c, err := sim.Start(ctx, sim.Options{ClusterID: id, PChannels: 2, Logger: log.With("sim", id)})
		if err != nil {
			return fail("starting cluster "+id, err)
		}
		clusters = append(clusters, c)
	}
	if err := sim.JoinReplication(ctx, clusters[0], clusters[1:]...); err != nil {
		return fail("joining the clusters", err)
	}
	if err := fillCollection(ctx, clusters[0].Addr()); err != nil {
		return fail("making the collection on a", err)
	}
	for _, c := range clusters {
		if err := awaitSearch(ctx, c.Addr()); err != nil {
			return fail("searching "+c.ID(), err)
		}
	}
	cancel()
	fmt.Printf("perf-sims a=%s b=%s c=%s\n", clusters[0].Addr(), clusters[1].Addr(), clusters[2].Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// fillCollection creates the collection (Bounded, FLAT index), loads it
// and inserts simRows rows, through the Go SDK.
func fillCollection(ctx context.Context, addr string) error {
	c, err := milvusclient.New(ctx, &milvusclient.ClientConfig{Address: addr})
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	schema := entity.NewSchema().WithName(collection).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vector").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))
	if err := c.CreateCollection(ctx, milvusclient.NewCreateCollectionOption(collection, schema).
		WithConsistencyLevel(entity.ClBounded)); err != nil {
		return fmt.Errorf("create collection: %w", err)
	}
	task, err := c.CreateIndex(ctx, milvusclient.NewCreateIndexOption(collection, "vector", index.NewFlatIndex(entity.L2)))
	if err != nil {
		return fmt.Errorf("create index: %w", err)
	}
	if err := task.Await(ctx); err != nil {
		return fmt.Errorf("await index: %w", err)
	}
	lt, err := c.LoadCollection(ctx, milvusclient.NewLoadCollectionOption(collection))
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if err := lt.Await(ctx); err != nil {
		return fmt.Errorf("await load: %w", err)
	}
	ids := make([]int64, simRows)
	vecs := make([][]float32, simRows)
	for i := range ids {
		ids[i] = int64(i)
		vecs[i] = make([]float32, dim)
		for j := range vecs[i] {
			vecs[i][j] = float32((i*31+j*7)%97) / 97
		}
	}
	if _, err := c.Insert(ctx, milvusclient.NewColumnBasedInsertOption(collection).
		WithInt64Column("id", ids).WithFloatVectorColumn("vector", dim, vecs)); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

// awaitSearch retries the benchmark's search on addr until it returns
// topK hits (the replicated collection is loaded and filled there).
func awaitSearch(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	svc := milvuspb.NewMilvusServiceClient(conn)
	req := searchRequest()
	req.ConsistencyLevel, req.UseDefaultConsistency = commonpb.ConsistencyLevel_Eventually, false
	var last string
	for {
		r, err := svc.Search(ctx, req)
		switch {
		case err != nil:
			last = err.Error()
		case r.GetStatus().GetErrorCode() != commonpb.ErrorCode_Success || r.GetStatus().GetCode() != 0:
			last = r.GetStatus().GetReason()
		case len(r.GetResults().GetScores()) < topK:
			last = fmt.Sprintf("%d hits", len(r.GetResults().GetScores()))
		default:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
