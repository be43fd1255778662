package bench

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

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

// ClusterHeader is the response header in which the proxy names the
// cluster that served a call.
const ClusterHeader = "x-milvus-ha-cluster"

// Field names of the benchmark collection.
const (
	fieldID     = "id"
	fieldVector = "vector"
)

// dial opens a client connection the way the Milvus SDKs do (plaintext,
// large messages allowed). grpc.NewClient connects lazily.
func dial(addr string) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(256<<20),
			grpc.MaxCallSendMsgSize(256<<20),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	return cc, nil
}

// authContext adds Milvus's authorization metadata: the token, base64
// encoded, as the SDKs send it.
func authContext(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", base64.StdEncoding.EncodeToString([]byte(token)))
}

// statusErr turns a response's Milvus status into an error, nil when it is
// a success.
func statusErr(what string, st *commonpb.Status) error {
	if key := milvusErrKey(st); key != "" {
		return fmt.Errorf("%s: %s: %s", what, key, st.GetReason())
	}
	return nil
}

// connect calls Connect and returns the session identifier the SDKs send as
// "identifier" metadata afterwards; "" when the server does not implement
// Connect (as old Milvus versions did not).
func connect(ctx context.Context, svc milvuspb.MilvusServiceClient) (string, error) {
	resp, err := svc.Connect(ctx, &milvuspb.ConnectRequest{
		ClientInfo: &commonpb.ClientInfo{SdkType: "milvus-ha-proxy-bench", LocalTime: time.Now().String()},
	})
	if err != nil {
		if status.Code(err) == codes.Unimplemented {
			return "", nil
		}
		return "", fmt.Errorf("connect: %w", err)
	}
	if err := statusErr("connect", resp.GetStatus()); err != nil {
		return "", err
	}
	return strconv.FormatInt(resp.GetIdentifier(), 10), nil
}

// SetupTimes are how long each setup step took on one target.
type SetupTimes struct {
	Target       string  `json:"target"`
	DropMS       float64 `json:"drop_ms"`
	CreateMS     float64 `json:"create_ms"`
	IndexMS      float64 `json:"index_ms"`
	LoadMS       float64 `json:"load_ms"`
	PreloadMS    float64 `json:"preload_ms"`
	PreloadRows  int     `json:"preload_rows"`
	PreloadRowsS float64 `json:"preload_rows_per_s"`
	// LastWriteTS is the timestamp of the last preload write, used as the
	// guarantee of the first Session reads so they see the preload.
	LastWriteTS uint64 `json:"-"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// indexParams are the CreateIndex extra params for the configured index, in
// the flat form the Go SDK v2 sends.
func indexParams(cfg *Config) []*commonpb.KeyValuePair {
	kv := []*commonpb.KeyValuePair{
		{Key: "index_type", Value: cfg.Index},
		{Key: "metric_type", Value: cfg.Metric},
	}
	switch cfg.Index {
	case "HNSW":
		kv = append(kv, &commonpb.KeyValuePair{Key: "M", Value: "16"}, &commonpb.KeyValuePair{Key: "efConstruction", Value: "200"})
	case "IVF_FLAT", "IVF_SQ8", "IVF_PQ":
		kv = append(kv, &commonpb.KeyValuePair{Key: "nlist", Value: "128"})
	}
	return kv
}

// searchParamsJSON is the "params" search parameter for the index.
func searchParamsJSON(cfg *Config) string {
	switch cfg.Index {
	case "HNSW":
		return fmt.Sprintf(`{"ef":%d}`, max(64, cfg.TopK))
	case "IVF_FLAT", "IVF_SQ8", "IVF_PQ":
		return `{"nprobe":16}`
	}
	return "{}"
}

func collectionSchema(cfg *Config) *schemapb.CollectionSchema {
	return &schemapb.CollectionSchema{
		Name:        cfg.Collection,
		Description: "milvus-ha-proxy bench",
		Fields: []*schemapb.FieldSchema{
			{FieldID: 100, Name: fieldID, DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
			{FieldID: 101, Name: fieldVector, DataType: schemapb.DataType_FloatVector,
				TypeParams: []*commonpb.KeyValuePair{{Key: "dim", Value: strconv.Itoa(cfg.Dim)}}},
		},
	}
}

// setup creates, indexes, loads and fills the collection on one target,
// timing each step.
func setup(ctx context.Context, svc milvuspb.MilvusServiceClient, cfg *Config, target string, src vectorSource) (SetupTimes, error) {
	st := SetupTimes{Target: target}
	name := cfg.Collection

	t := time.Now()
	has, err := svc.HasCollection(ctx, &milvuspb.HasCollectionRequest{CollectionName: name})
	if err != nil {
		return st, fmt.Errorf("has collection %s: %w", name, err)
	}
	if err := statusErr("has collection", has.GetStatus()); err != nil {
		return st, err
	}
	if has.GetValue() {
		s, err := svc.DropCollection(ctx, &milvuspb.DropCollectionRequest{CollectionName: name})
		if err == nil {
			err = statusErr("drop collection", s)
		}
		if err != nil {
			return st, fmt.Errorf("dropping the old %s: %w", name, err)
		}
	}
	st.DropMS = ms(time.Since(t))

	t = time.Now()
	schema, err := proto.Marshal(collectionSchema(cfg))
	if err != nil {
		return st, fmt.Errorf("marshaling the schema: %w", err)
	}
	s, err := svc.CreateCollection(ctx, &milvuspb.CreateCollectionRequest{
		CollectionName:   name,
		Schema:           schema,
		ShardsNum:        int32(cfg.Shards),
		ConsistencyLevel: commonpb.ConsistencyLevel_Bounded,
	})
	if err == nil {
		err = statusErr("create collection", s)
	}
	if err != nil {
		return st, fmt.Errorf("creating %s: %w", name, err)
	}
	st.CreateMS = ms(time.Since(t))

	t = time.Now()
	s, err = svc.CreateIndex(ctx, &milvuspb.CreateIndexRequest{
		CollectionName: name, FieldName: fieldVector, IndexName: fieldVector, ExtraParams: indexParams(cfg),
	})
	if err == nil {
		err = statusErr("create index", s)
	}
	if err != nil {
		return st, fmt.Errorf("indexing %s: %w", name, err)
	}
	st.IndexMS = ms(time.Since(t))

	t = time.Now()
	if err := load(ctx, svc, name); err != nil {
		return st, err
	}
	st.LoadMS = ms(time.Since(t))

	t = time.Now()
	ts, err := preload(ctx, svc, cfg, src)
	if err != nil {
		return st, err
	}
	d := time.Since(t)
	st.PreloadMS = ms(d)
	st.PreloadRows = cfg.Preload
	if d > 0 {
		st.PreloadRowsS = float64(cfg.Preload) / d.Seconds()
	}
	st.LastWriteTS = ts
	return st, nil
}

// load loads the collection and waits until Milvus reports it loaded.
func load(ctx context.Context, svc milvuspb.MilvusServiceClient, name string) error {
	s, err := svc.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{CollectionName: name})
	if err == nil {
		err = statusErr("load collection", s)
	}
	if err != nil {
		return fmt.Errorf("loading %s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		resp, err := svc.GetLoadState(ctx, &milvuspb.GetLoadStateRequest{CollectionName: name})
		if err != nil {
			return fmt.Errorf("waiting for %s to load: %w", name, err)
		}
		if err := statusErr("get load state", resp.GetStatus()); err != nil {
			return fmt.Errorf("waiting for %s to load: %w", name, err)
		}
		if resp.GetState() == commonpb.LoadState_LoadStateLoaded {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to load (state %s): %w", name, resp.GetState(), ctx.Err())
		case <-time.After(wait):
		}
	}
}

// preloadBatch keeps each insert message near 2 MiB whatever the dimension.
func preloadBatch(dim int) int { return max(1, min(5000, (2<<20)/(4*dim+8))) }

// preload inserts rows 0..Preload-1 with 4 parallel writers and returns the
// highest write timestamp.
func preload(ctx context.Context, svc milvuspb.MilvusServiceClient, cfg *Config, src vectorSource) (uint64, error) {
	batch := preloadBatch(cfg.Dim)
	type job struct{ lo, hi int }
	jobs := make(chan job)
	type res struct {
		ts  uint64
		err error
	}
	const writers = 4
	results := make(chan res, writers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range writers {
		go func() {
			var r res
			vec := make([]float32, 0, cfg.Dim)
			for j := range jobs {
				if r.err != nil {
					continue // drain
				}
				ids := make([]int64, 0, j.hi-j.lo)
				flat := make([]float32, 0, (j.hi-j.lo)*cfg.Dim)
				for i := j.lo; i < j.hi; i++ {
					ids = append(ids, int64(i))
					vec = src.row(i, vec)
					flat = append(flat, vec...)
				}
				resp, err := svc.Insert(ctx, insertRequest(cfg.Collection, cfg.Dim, ids, flat))
				if err == nil {
					err = statusErr("insert", resp.GetStatus())
				}
				if err != nil {
					r.err = fmt.Errorf("preloading rows %d-%d: %w", j.lo, j.hi-1, err)
					cancel()
					continue
				}
				r.ts = max(r.ts, resp.GetTimestamp())
			}
			results <- r
		}()
	}
	var sendErr error
send:
	for lo := 0; lo < cfg.Preload; lo += batch {
		select {
		case jobs <- job{lo, min(cfg.Preload, lo+batch)}:
		case <-ctx.Done():
			sendErr = ctx.Err()
			break send
		}
	}
	close(jobs)
	var ts uint64
	var errs []error
	for range writers {
		r := <-results
		ts = max(ts, r.ts)
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if len(errs) > 0 {
		return 0, errs[0]
	}
	if sendErr != nil {
		return 0, fmt.Errorf("preloading: %w", sendErr)
	}
	return ts, nil
}

func insertRequest(coll string, dim int, ids []int64, flat []float32) *milvuspb.InsertRequest {
	return &milvuspb.InsertRequest{
		CollectionName: coll,
		FieldsData:     rowFields(dim, ids, flat),
		NumRows:        uint32(len(ids)),
	}
}

func rowFields(dim int, ids []int64, flat []float32) []*schemapb.FieldData {
	return []*schemapb.FieldData{
		{
			Type: schemapb.DataType_Int64, FieldName: fieldID, FieldId: 100,
			Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{
				Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: ids}},
			}},
		},
		{
			Type: schemapb.DataType_FloatVector, FieldName: fieldVector, FieldId: 101,
			Field: &schemapb.FieldData_Vectors{Vectors: &schemapb.VectorField{
				Dim:  int64(dim),
				Data: &schemapb.VectorField_FloatVector{FloatVector: &schemapb.FloatArray{Data: flat}},
			}},
		},
	}
}

// checkLoaded is SetupNone's check that the collection is there and loaded.
func checkLoaded(ctx context.Context, svc milvuspb.MilvusServiceClient, name string) error {
	resp, err := svc.GetLoadState(ctx, &milvuspb.GetLoadStateRequest{CollectionName: name})
	if err != nil {
		return fmt.Errorf("checking that %s is loaded: %w", name, err)
	}
	if err := statusErr("get load state", resp.GetStatus()); err != nil {
		return fmt.Errorf("checking that %s is loaded: %w", name, err)
	}
	if resp.GetState() != commonpb.LoadState_LoadStateLoaded {
		return errors.New("collection " + name + " is not loaded (state " + resp.GetState().String() + "); run with --setup each")
	}
	return nil
}
