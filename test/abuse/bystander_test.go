package abuse

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The bystander's phases.
const (
	phaseBefore = iota
	phaseDuring
	phaseAfter
	nPhases
)

var phaseNames = [nPhases]string{"before", "during", "after"}

// bystanderWorkers is the bystander's concurrency: a few calls in flight,
// as an application server's connection pool has.
const bystanderWorkers = 4

// callTimeout bounds one bystander call; a stall longer than this is an
// error.
const callTimeout = 5 * time.Second

// defaultRate is the bystander's steady call rate. Paced well below what
// the machine can do (thousands of calls a second even with -race), so
// that the load of other processes on a shared machine does not move it
// while a stall, errors or an abuser that takes the CPU do.
const defaultRate = 400

// bystander is a well-behaved Milvus client on a connection of its own:
// Searches with an Insert every fourth call, each with a deadline, at a
// steady rate (or as fast as it can: rate 0), measuring per phase its
// successes, latencies and errors.
type bystander struct {
	conn  *grpc.ClientConn
	mc    milvuspb.MilvusServiceClient
	phase atomic.Int32
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu    sync.Mutex
	stats [nPhases]phaseStats
}

type phaseStats struct {
	ok     int
	errs   int
	lat    []time.Duration
	sample []string // the first few errors
	start  time.Time
	end    time.Time
}

// phaseResult is what the table shows of a phase.
type phaseResult struct {
	QPS      float64
	P50, P99 time.Duration
	Errors   int
	Sample   []string
}

func startBystander(addr string, rate int) (*bystander, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &bystander{conn: conn, mc: milvuspb.NewMilvusServiceClient(conn), stop: cancel}
	b.stats[phaseBefore].start = time.Now()
	for w := range bystanderWorkers {
		b.wg.Go(func() { b.work(ctx, w, rate) })
	}
	return b, nil
}

// setPhase ends the current phase and starts p.
func (b *bystander) setPhase(p int) {
	now := time.Now()
	b.mu.Lock()
	b.stats[b.phase.Load()].end = now
	b.stats[p].start = now
	b.mu.Unlock()
	b.phase.Store(int32(p))
}

// reset forgets the warm-up and starts the before phase.
func (b *bystander) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats = [nPhases]phaseStats{}
	b.stats[phaseBefore].start = time.Now()
	b.phase.Store(phaseBefore)
}

// close stops the workers and ends the last phase.
func (b *bystander) close() {
	b.stop()
	b.wg.Wait()
	b.mu.Lock()
	b.stats[b.phase.Load()].end = time.Now()
	b.mu.Unlock()
	b.conn.Close()
}

func (b *bystander) work(ctx context.Context, w, rate int) {
	var tick <-chan time.Time
	if rate > 0 {
		tk := time.NewTicker(time.Second * bystanderWorkers / time.Duration(rate))
		defer tk.Stop()
		tick = tk.C
	}
	for i := 0; ctx.Err() == nil; i++ {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				return
			}
		}
		p := int(b.phase.Load())
		start := time.Now()
		err := b.call(ctx, (i+w)%4 == 3)
		lat := time.Since(start)
		if ctx.Err() != nil {
			return // stopped mid-call: not the proxy's doing
		}
		b.record(p, lat, err)
	}
}

func (b *bystander) record(p int, lat time.Duration, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &b.stats[p]
	if err != nil {
		s.errs++
		if len(s.sample) < 3 {
			s.sample = append(s.sample, fmt.Sprintf("%.1fs: %v", time.Since(s.start).Seconds(), err))
		}
		return
	}
	s.ok++
	s.lat = append(s.lat, lat)
}

// call makes one Search, or an Insert of one row.
func (b *bystander) call(ctx context.Context, insert bool) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return oneCall(ctx, b.mc, insert)
}

// oneCall is the bystander's unit of work, also used to check that a new
// connection is served.
func oneCall(ctx context.Context, mc milvuspb.MilvusServiceClient, insert bool) error {
	if insert {
		r, err := mc.Insert(ctx, &milvuspb.InsertRequest{
			CollectionName: "bystander",
			NumRows:        1,
			FieldsData: []*schemapb.FieldData{{
				FieldName: "id", Type: schemapb.DataType_Int64,
				Field: &schemapb.FieldData_Scalars{Scalars: &schemapb.ScalarField{
					Data: &schemapb.ScalarField_LongData{LongData: &schemapb.LongArray{Data: []int64{1}}},
				}},
			}},
		})
		if err == nil && r.GetStatus().GetErrorCode() != commonpb.ErrorCode_Success {
			err = fmt.Errorf("Insert: status %v", r.GetStatus())
		}
		return err
	}
	r, err := mc.Search(ctx, searchRequest("bystander"))
	if err == nil && r.GetStatus().GetErrorCode() != commonpb.ErrorCode_Success {
		err = fmt.Errorf("Search: status %v", r.GetStatus())
	}
	return err
}

// searchRequest is a small Search of coll; params are added to its search
// parameters (backend.ParamRespBytes, backend.ParamDelay).
func searchRequest(coll string, params ...string) *milvuspb.SearchRequest {
	kv := []*commonpb.KeyValuePair{{Key: "anns_field", Value: "vec"}, {Key: "topk", Value: "3"}}
	for i := 0; i+1 < len(params); i += 2 {
		kv = append(kv, &commonpb.KeyValuePair{Key: params[i], Value: params[i+1]})
	}
	return &milvuspb.SearchRequest{
		CollectionName:        coll,
		Dsl:                   "",
		DslType:               commonpb.DslType_BoolExprV1,
		Nq:                    1,
		SearchParams:          kv,
		UseDefaultConsistency: true,
		SearchInput:           &milvuspb.SearchRequest_PlaceholderGroup{PlaceholderGroup: []byte{1, 2, 3, 4}},
	}
}

// result summarises phase p.
func (b *bystander) result(p int) phaseResult {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats[p]
	r := phaseResult{Errors: s.errs, Sample: slices.Clone(s.sample)}
	if d := s.end.Sub(s.start).Seconds(); d > 0 {
		r.QPS = float64(s.ok) / d
	}
	if len(s.lat) > 0 {
		lat := slices.Clone(s.lat)
		slices.Sort(lat)
		r.P50 = lat[len(lat)*50/100]
		r.P99 = lat[len(lat)*99/100]
	}
	return r
}
