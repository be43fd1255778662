package proxy

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
)

// budgetedClusters dials the env's clusters again as the topology does
// for the grpc engine (BackendDialOptionsFor lim), counting the bytes read
// from them into n.
func budgetedClusters(t *testing.T, e *env, lim RelayLimits, n *atomic.Int64) {
	t.Helper()
	dial := append(BackendDialOptionsFor(lim), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: nc, n: n}, nil
		}))
	e.topo.publish(func(s *topology.Snapshot) {
		for _, c := range s.Clusters {
			conn, err := grpc.NewClient(c.URI, dial...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			c.Conn = conn
		}
	})
}

// TestGRPCResponseBudget: the grpc engine's response budget
// (grpc_budget.go). A client that grants no window and asks for many
// large answers makes the proxy hold no more than its budget (plus about
// one answer and one stream window per call): the clusters are held back
// by flow control, not buffered. A bystander on another connection, over
// the same backend connections, keeps getting answers, and everything is
// given back when the client leaves.
func TestGRPCResponseBudget(t *testing.T) {
	const (
		budget = 1 << 20
		window = 64 << 10
		answer = 1 << 20
		calls  = 16
	)
	lim := RelayLimits{ConnResponseBuffer: budget, BackendStreamWindow: window}
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineGRPC
		o.RelayLimits = lim
	})
	var fromClusters atomic.Int64
	budgetedClusters(t, e, lim, &fromClusters)
	if _, err := e.client.Query(e.ctx(), &milvuspb.QueryRequest{CollectionName: "coll", Expr: "big:1000", ConsistencyLevel: Eventually}); err != nil {
		t.Fatal(err)
	}
	bad, held0 := holdAnswers(t, e, budget, window, &fromClusters, calls, answer)
	rb := e.srv.ResponseBuffered

	// More calls on the held connection are held before they are sent:
	// the clusters see none of them.
	sent := e.totalReceived("Query")
	for i := uint32(calls); i < 2*calls; i++ {
		bad.call(2*i+1, "Query", &milvuspb.QueryRequest{CollectionName: "coll", Expr: fmt.Sprintf("big:%d", answer), ConsistencyLevel: Eventually})
	}
	testutil.Eventually(t, 10*time.Second, "the new calls held", func() bool { _, held := rb(); return held >= held0+calls })
	if n := e.totalReceived("Query") - sent; n != 0 {
		t.Errorf("%d calls of a connection over its budget were sent to the clusters", n)
	}

	// The client cancels its calls: the answers grpc-go queued for them
	// are dropped, the waiting calls end, and the budget is back while the
	// connection stays open.
	for i := uint32(0); i < 2*calls; i++ {
		if err := bad.fr.WriteRSTStream(2*i+1, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "the budget given back after the resets", func() bool {
		used, held := rb()
		return used == 0 && held == 0
	})

	// The client sends more and leaves: its calls end and the budget is
	// back.
	for i := uint32(2 * calls); i < 3*calls; i++ {
		bad.call(2*i+1, "Query", &milvuspb.QueryRequest{CollectionName: "coll", Expr: fmt.Sprintf("big:%d", answer), ConsistencyLevel: Eventually})
	}
	testutil.Eventually(t, 10*time.Second, "calls held again", func() bool { _, held := rb(); return held > 0 })
	bad.nc.Close()
	testutil.Eventually(t, 10*time.Second, "the budget given back", func() bool {
		used, held := rb()
		return used == 0 && held == 0
	})
}

// TestResponseBudgetCompletes: a client reading normally gets every
// answer, compressed requests included, even when their total, and each
// of them, is far over its connection's budget (the oldest call always
// moves), on either engine; the charges all come back once written.
func TestResponseBudgetCompletes(t *testing.T) {
	bothEngines(t, func(t *testing.T) {
		lim := RelayLimits{ConnResponseBuffer: 128 << 10, BackendStreamWindow: 64 << 10}
		e := newEnv(t, func(o *Options) { o.RelayLimits = lim })
		if e.srv.engine == EngineGRPC {
			var fromClusters atomic.Int64
			budgetedClusters(t, e, lim, &fromClusters)
		}
		const calls, answer = 12, 1 << 20
		var wg sync.WaitGroup
		errs := make(chan error, calls)
		for i := 0; i < calls; i++ {
			wg.Go(func() {
				var opts []grpc.CallOption
				if i%2 == 1 {
					opts = append(opts, grpc.UseCompressor(gzip.Name))
				}
				q, err := e.client.Query(e.ctx(), &milvuspb.QueryRequest{CollectionName: "coll", Expr: fmt.Sprintf("big:%d", answer), ConsistencyLevel: Eventually}, opts...)
				if err == nil && len(q.GetFieldsData()[0].GetVectors().GetBinaryVector()) != answer {
					err = fmt.Errorf("answer corrupted")
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		testutil.Eventually(t, 5*time.Second, "the budget given back", func() bool {
			used, held := e.srv.ResponseBuffered()
			return used == 0 && held == 0
		})
	})
}

// TestGRPCResponseBudgetEstimate: a client whose small answers brought
// the estimate of its answers down, then asks for many large ones at once
// with a zero window, has no more admitted than grpcMaxEarly +
// grpcMaxReceiving past its budget (grpc_budget.go).
func TestGRPCResponseBudgetEstimate(t *testing.T) {
	const (
		budget = 1 << 20
		answer = 1 << 20
		calls  = 16
	)
	lim := RelayLimits{ConnResponseBuffer: budget, BackendStreamWindow: 64 << 10}
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineGRPC
		o.RelayLimits = lim
	})
	var fromClusters atomic.Int64
	budgetedClusters(t, e, lim, &fromClusters)
	rb := e.srv.ResponseBuffered

	c := dialRaw(t, e.addr, 1<<30)
	id := uint32(1)
	for ; id < 2*40; id += 2 {
		c.call(id, "Query", &milvuspb.QueryRequest{CollectionName: "coll", Expr: "big:100", ConsistencyLevel: Eventually})
		c.until(10*time.Second, func(f http2.Frame) bool {
			h, ok := f.(*http2.MetaHeadersFrame)
			return ok && h.StreamID == id && h.StreamEnded()
		})
	}
	testutil.Eventually(t, 5*time.Second, "small answers released", func() bool { used, _ := rb(); return used == 0 })

	if err := c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < calls; i, id = i+1, id+2 {
		c.call(id, "Query", &milvuspb.QueryRequest{CollectionName: "coll", Expr: fmt.Sprintf("big:%d", answer), ConsistencyLevel: Eventually})
	}
	testutil.Eventually(t, 10*time.Second, "calls held", func() bool { _, held := rb(); return held > 0 })
	time.Sleep(200 * time.Millisecond) // anything still in flight lands
	used, held := rb()
	limit := int64(budget + (grpcMaxEarly+grpcMaxReceiving)*answer + 64<<10)
	t.Logf("held calls %d, charged %d bytes (limit %d)", held, used, limit)
	if used > limit || held == 0 {
		t.Errorf("charged %d bytes (limit %d), %d calls held of %d", used, limit, held, calls)
	}
	c.nc.Close()
	testutil.Eventually(t, 10*time.Second, "the budget given back", func() bool {
		used, held := rb()
		return used == 0 && held == 0
	})
}

// TestGRPCResponseBudgetBurst: a new connection's burst of calls for
// answers as large as its budget (its first estimate) is sent to the
// clusters only grpcMinSent at a time: the rest is held before it costs
// the clusters work or the proxy a stream window each.
func TestGRPCResponseBudgetBurst(t *testing.T) {
	const calls = 100
	lim := RelayLimits{ConnResponseBuffer: 1 << 20, BackendStreamWindow: 64 << 10}
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineGRPC
		o.RelayLimits = lim
	})
	var fromClusters atomic.Int64
	budgetedClusters(t, e, lim, &fromClusters)
	rb := e.srv.ResponseBuffered
	bad := dialRaw(t, e.addr, 0, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	for i := uint32(0); i < calls; i++ {
		bad.call(2*i+1, "Query", &milvuspb.QueryRequest{CollectionName: "coll", Expr: fmt.Sprintf("big:%d", 1<<20), ConsistencyLevel: Eventually})
	}
	testutil.Eventually(t, 10*time.Second, "the burst held", func() bool { _, held := rb(); return held >= calls-grpcMinSent })
	time.Sleep(200 * time.Millisecond) // anything still in flight lands
	if n := e.totalReceived("Query"); n > grpcMinSent {
		t.Errorf("%d of %d calls sent to the clusters, want at most %d", n, calls, grpcMinSent)
	}
	bad.nc.Close()
	testutil.Eventually(t, 10*time.Second, "the budget given back", func() bool {
		used, held := rb()
		return used == 0 && held == 0
	})
}
