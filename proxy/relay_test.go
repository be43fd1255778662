package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/relay"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/router"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/testdata"
	"google.golang.org/protobuf/proto"
)

// Tests of HTTP/2 and gRPC edge cases: they run on both engines, but they
// exist for the relay, which implements the protocol itself.

func bigVector(n int) []*schemapb.FieldData {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i * 13)
	}
	return []*schemapb.FieldData{{FieldName: "v", Field: &schemapb.FieldData_Vectors{
		Vectors: &schemapb.VectorField{Data: &schemapb.VectorField_BinaryVector{BinaryVector: data}}}}}
}

// TestLargeMessages sends and receives messages far larger than every
// flow-control window and frame size on the way.
func TestLargeMessages(t *testing.T) { bothEngines(t, testLargeMessages) }

func testLargeMessages(t *testing.T) {
	e := newEnv(t)
	for _, n := range []int{0, 1, 16<<10 - 5, 70 << 10, 9 << 20} {
		res, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1, FieldsData: bigVector(n)})
		if err != nil {
			t.Fatalf("insert %d bytes: %v", n, err)
		}
		if res.GetInsertCnt() != int64(1+n) {
			t.Fatalf("insert %d bytes: backend saw %d", n, res.GetInsertCnt()-1)
		}
		q, err := e.client.Query(e.ctx(), &milvuspb.QueryRequest{CollectionName: "coll", Expr: fmt.Sprintf("big:%d", n), ConsistencyLevel: Eventually})
		if err != nil {
			t.Fatalf("query %d bytes: %v", n, err)
		}
		got := q.GetFieldsData()
		want := bigVector(n)[0].GetVectors().GetBinaryVector()
		if n > 0 && (len(got) != 1 || !bytes.Equal(got[0].GetVectors().GetBinaryVector(), want)) {
			t.Fatalf("query %d bytes: response corrupted", n)
		}
	}
}

// TestConcurrentCalls runs many calls at once over one client connection,
// mixing large and small ones, reads and writes.
func TestConcurrentCalls(t *testing.T) { bothEngines(t, testConcurrentCalls) }

func testConcurrentCalls(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				switch (g + i) % 3 {
				case 0:
					if _, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false)); err != nil {
						errs <- err
						return
					}
				case 1:
					n := (g*i*997)%(300<<10) + 1
					res, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1, FieldsData: bigVector(n)})
					if err != nil || res.GetInsertCnt() != int64(1+n) {
						errs <- fmt.Errorf("insert %d: %v %v", n, res.GetInsertCnt(), err)
						return
					}
				case 2:
					n := (g*i*131)%(200<<10) + 1
					q, err := e.client.Query(e.ctx(), &milvuspb.QueryRequest{CollectionName: "coll", Expr: fmt.Sprintf("big:%d", n), ConsistencyLevel: Eventually})
					if err != nil || len(q.GetFieldsData()[0].GetVectors().GetBinaryVector()) != n {
						errs <- fmt.Errorf("query %d: %v", n, err)
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestCancelReachesBackend: a client that gives up cancels the backend call.
func TestCancelReachesBackend(t *testing.T) { bothEngines(t, testCancelReachesBackend) }

func testCancelReachesBackend(t *testing.T) {
	e := newEnv(t)
	// Warm the connections so that the fast path takes the call.
	if _, err := e.client.Query(e.ctx(), &milvuspb.QueryRequest{CollectionName: "coll", ConsistencyLevel: Eventually}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.client.Query(ctx, &milvuspb.QueryRequest{CollectionName: "coll", Expr: "sleep", ConsistencyLevel: Eventually})
		done <- err
	}()
	b := e.backends["b"]
	testutil.Eventually(t, 5*time.Second, "the backend call to start", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.sleeping == 1 })
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("err %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "the backend call to be canceled", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.canceled == 1 })
}

// TestDeadlineReachesBackend: the client's deadline travels on.
func TestDeadlineReachesBackend(t *testing.T) { bothEngines(t, testDeadlineReachesBackend) }

func testDeadlineReachesBackend(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := e.client.Query(ctx, &milvuspb.QueryRequest{CollectionName: "coll", Expr: "deadline", ConsistencyLevel: Eventually})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.GetOutputFields(); len(got) != 1 || (got[0] != "30s" && got[0] != "29s") {
		t.Fatalf("backend saw deadline in %v", got)
	}
}

// TestBackendLostMidRead: the alternative serving a read dies; the read
// moves on.
func TestBackendLostMidRead(t *testing.T) { bothEngines(t, testBackendLostMidRead) }

func testBackendLostMidRead(t *testing.T) {
	e := newEnv(t)
	if _, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false)); err != nil {
		t.Fatal(err)
	}
	e.backends["b"].srv.Stop()
	var hdr metadata.MD
	if _, err := e.client.Search(e.ctx(), search("coll", Eventually, 0, false), grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(HeaderCluster); len(got) != 1 || got[0] == "b" {
		t.Fatalf("served by %v", got)
	}
}

// TestBackendGoAway: a backend shutting down gracefully refuses new
// streams; nothing is lost.
func TestBackendGoAway(t *testing.T) { bothEngines(t, testBackendGoAway) }

func testBackendGoAway(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 3; i++ {
		if _, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// Replace the leader's server by a new one on the same address
	// after a graceful stop.
	a := e.backends["a"]
	a.srv.GracefulStop()
	lis, err := net.Listen("tcp", a.addr)
	if err != nil {
		t.Skipf("cannot reuse %s: %v", a.addr, err)
	}
	a.srv = grpc.NewServer(grpc.UnaryInterceptor(a.intercept), grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	milvuspb.RegisterMilvusServiceServer(a.srv, a)
	go func() { _ = a.srv.Serve(lis) }()
	t.Cleanup(a.srv.Stop)
	a.reset()
	res, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
	if err != nil || res.GetStatus().GetCode() != 0 {
		t.Fatalf("%v %v", res.GetStatus(), err)
	}
	if n := len(a.received("Insert")); n != 1 {
		t.Fatalf("insert reached the new server %d times", n)
	}
}

// TestGzipRequests: a client that compresses its requests is understood;
// the backend gets them plain.
func TestGzipRequests(t *testing.T) { bothEngines(t, testGzipRequests) }

func testGzipRequests(t *testing.T) {
	e := newEnv(t)
	res, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1, FieldsData: bigVector(100 << 10)},
		grpc.UseCompressor(gzip.Name))
	if err != nil || res.GetInsertCnt() != 1+100<<10 {
		t.Fatalf("%v %v", res, err)
	}
	if _, err := e.client.Search(e.ctx(), search("coll", Session, 0, false), grpc.UseCompressor(gzip.Name)); err != nil {
		t.Fatal(err)
	}
}

// TestHealthWatch follows the serving status as a stream.
func TestHealthWatch(t *testing.T) { bothEngines(t, testHealthWatch) }

func testHealthWatch(t *testing.T) {
	e := newEnv(t)
	w, err := healthpb.NewHealthClient(e.conn).Watch(e.ctx(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("%v %v", m, err)
	}
	e.topo.publish(func(s *topology.Snapshot) { s.Leader = nil })
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("%v %v", m, err)
	}
}

// TestTLS serves clients over TLS with Options.Creds.
func TestTLS(t *testing.T) { bothEngines(t, testTLS) }

func testTLS(t *testing.T) {
	cert, err := tls.LoadX509KeyPair(testdata.Path("x509/server1_cert.pem"), testdata.Path("x509/server1_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) {
		o.Creds = credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})
	})
	cc, err := credentials.NewClientTLSFromFile(testdata.Path("x509/server_ca_cert.pem"), "x.test.example.com")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(cc))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := milvuspb.NewMilvusServiceClient(conn).Search(e.ctx(), search("coll", Eventually, 0, false)); err != nil {
		t.Fatal(err)
	}
	// A plaintext client is refused.
	plain, _ := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer plain.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := milvuspb.NewMilvusServiceClient(plain).Search(ctx, search("coll", Eventually, 0, false)); err == nil {
		t.Fatal("plaintext accepted")
	}
}

// TestCallHook: the relay engine's stand-in for interceptors sees the
// client's metadata, may change what the backend gets, and learns the
// outcome.
func TestCallHook(t *testing.T) {
	type seen struct {
		method, auth string
		err          error
	}
	var mu sync.Mutex
	var got []seen
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineRelay
		o.CallHook = func(ctx context.Context, method string, md metadata.MD) (context.Context, func(error)) {
			s := seen{method: method}
			if v := md.Get("authorization"); len(v) > 0 {
				s.auth = v[0]
			}
			md.Set("traceparent", "00-11111111111111111111111111111111-2222222222222222-01")
			return ctx, func(err error) {
				s.err = err
				mu.Lock()
				got = append(got, s)
				mu.Unlock()
			}
		}
	})
	ctx := e.ctx("authorization", "tok", "traceparent", "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01")
	for i := 0; i < 2; i++ { // the second one takes the fast path
		if _, err := e.client.Search(ctx, search("coll", Eventually, 0, false)); err != nil {
			t.Fatal(err)
		}
	}
	e.backends["b"].setFail("Search", func() error { return status.Error(codes.PermissionDenied, "no") })
	_, _ = e.client.Search(ctx, search("coll", Eventually, 0, false))
	_, rec := e.lastRead("Search")
	if tp := rec.md.Get("traceparent"); len(tp) != 1 || tp[0] != "00-11111111111111111111111111111111-2222222222222222-01" {
		t.Fatalf("backend traceparent %v", tp)
	}
	if a := rec.md.Get("authorization"); len(a) != 1 || a[0] != "tok" {
		t.Fatalf("backend authorization %v", a)
	}
	testutil.Eventually(t, 5*time.Second, "three hooked calls", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 3 })
	mu.Lock()
	defer mu.Unlock()
	for i, s := range got {
		if s.method != "/milvus.proto.milvus.MilvusService/Search" || s.auth != "tok" {
			t.Fatalf("call %d: %+v", i, s)
		}
	}
	if got[0].err != nil || got[1].err != nil || status.Code(got[2].err) != codes.PermissionDenied {
		t.Fatalf("outcomes %v %v %v", got[0].err, got[1].err, got[2].err)
	}
}

// TestRelayDrainEndsHealthWatch: a Watch already told NOT_SERVING does not
// hold the drain.
func TestRelayDrainEndsHealthWatch(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Engine = EngineRelay })
	e.topo.publish(func(s *topology.Snapshot) { s.Leader = nil })
	w, err := healthpb.NewHealthClient(e.conn).Watch(e.ctx(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "health to report NOT_SERVING", func() bool {
		m, err := w.Recv()
		return err == nil && m.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("drain took %v", d)
	}
}

// TestRelayBackendTLS: the relay reaches clusters over TLS with
// BackendCreds.
func TestRelayBackendTLS(t *testing.T) {
	cert, err := tls.LoadX509KeyPair(testdata.Path("x509/server1_cert.pem"), testdata.Path("x509/server1_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := credentials.NewClientTLSFromFile(testdata.Path("x509/server_ca_cert.pem"), "x.test.example.com")
	if err != nil {
		t.Fatal(err)
	}
	tso := &atomic.Uint64{}
	tso.Store(1 << 40)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackend{id: "a", tso: tso, fail: map[string]func() error{}, status: map[string]int32{}}
	b.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})), grpc.UnaryInterceptor(b.intercept))
	milvuspb.RegisterMilvusServiceServer(b.srv, b)
	go func() { _ = b.srv.Serve(lis) }()
	defer b.srv.Stop()

	e := newEnv(t, func(o *Options) {
		o.Engine = EngineRelay
		o.BackendCreds = func(c *topology.Cluster) credentials.TransportCredentials {
			if c.ID == "a" {
				return cc
			}
			return nil
		}
	})
	e.topo.publish(func(s *topology.Snapshot) { s.Leader.URI = lis.Addr().String() })
	for i := 0; i < 2; i++ {
		res, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 2})
		if err != nil || res.GetStatus().GetCode() != 0 {
			t.Fatalf("%v %v", res, err)
		}
	}
	if n := len(b.received("Insert")); n != 2 {
		t.Fatalf("TLS backend got %d inserts", n)
	}
}

// silentConn stands for a network path that goes dead without a FIN or
// RST (host down, partition): once frozen, nothing written arrives and
// nothing more is read.
type silentConn struct {
	net.Conn
	frozen *atomic.Bool
	closed chan struct{}
	once   sync.Once
}

func (c *silentConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.frozen.Load() {
		<-c.closed
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *silentConn) Write(p []byte) (int, error) {
	if c.frozen.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *silentConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// pingTolerantBackend is a leader whose server permits pings at any rate.
func pingTolerantBackend(t *testing.T) *fakeBackend {
	tso := &atomic.Uint64{}
	tso.Store(1 << 40)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackend{id: "a", tso: tso, addr: lis.Addr().String(), fail: map[string]func() error{}, status: map[string]int32{}}
	b.srv = grpc.NewServer(grpc.UnaryInterceptor(b.intercept),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Nanosecond, PermitWithoutStream: true}))
	milvuspb.RegisterMilvusServiceServer(b.srv, b)
	go func() { _ = b.srv.Serve(lis) }()
	t.Cleanup(b.srv.Stop)
	return b
}

// TestRelayKeepaliveDetectsSilentBackend: keepalive pings keep an idle
// connection to a live cluster, and fail the calls on one whose cluster
// went silent, instead of holding them until their deadlines.
func TestRelayKeepaliveDetectsSilentBackend(t *testing.T) {
	b := pingTolerantBackend(t)
	var frozen atomic.Bool
	var dials atomic.Int32
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineRelay
		o.BackendKeepalive = keepalive.ClientParameters{Time: 50 * time.Millisecond, Timeout: 100 * time.Millisecond, PermitWithoutStream: true}
		o.DialBackend = func(ctx context.Context, c *topology.Cluster) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.URI)
			if err != nil {
				return nil, err
			}
			dials.Add(1)
			return &silentConn{Conn: nc, frozen: &frozen, closed: make(chan struct{})}, nil
		}
	})
	e.topo.publish(func(s *topology.Snapshot) { s.Leader.URI = b.addr })
	insert := func() (*milvuspb.MutationResult, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return e.client.Insert(ctx, &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
	}
	if _, err := insert(); err != nil {
		t.Fatal(err)
	}
	// Idle for many keepalive periods: pings are answered, the
	// connection stays.
	time.Sleep(500 * time.Millisecond)
	if _, err := insert(); err != nil {
		t.Fatal(err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials to a live cluster, want 1", n)
	}
	frozen.Store(true)
	// The insert was sent: its outcome is unknown, and the proxy says so
	// (a Milvus status) once the keepalive gives the connection up, well
	// before the call's deadline.
	res, err := insert()
	if err != nil || !strings.Contains(res.GetStatus().GetReason(), "keepalive") {
		t.Fatalf("insert to a silent cluster: %v, %v; want an outcome-unknown status naming the keepalive", res.GetStatus(), err)
	}
	frozen.Store(false)
	if _, err := insert(); err != nil {
		t.Fatalf("insert after the cluster came back: %v", err)
	}
}

// TestRelayKeepaliveBacksOffOnTooManyPings: a cluster whose server allows
// fewer pings (grpc-go's default policy) answers GOAWAY too_many_pings;
// the relay halves its pings to it, as grpc-go does, and calls go on.
func TestRelayKeepaliveBacksOffOnTooManyPings(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineRelay
		o.BackendKeepalive = keepalive.ClientParameters{Time: 20 * time.Millisecond, Timeout: time.Second, PermitWithoutStream: true}
	})
	if _, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the keepalive time to back off", func() bool { return e.srv.pool.KeepaliveTime("a") > 20*time.Millisecond })
	if _, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1}); err != nil {
		t.Fatal(err)
	}
}

// TestRelayAnswersClientPings: the SDKs ping every 5 s (Go) or 10 s
// (pymilvus), also between calls; the relay acks every PING and never
// answers GOAWAY too_many_pings. (The grpc engine permits pings every 5 s
// with or without calls: its server's keepalive.EnforcementPolicy.)
func TestRelayAnswersClientPings(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineRelay
		o.RelayLimits.PingMinTime = 10 * time.Millisecond
	})
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(nc, nc)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	const pings = 20
	for i := 0; i < pings; i++ {
		if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the policy's minimum, with room
	}
	acks := 0
	for acks < pings {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d acks: %v", acks, err)
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			if f.IsAck() {
				acks++
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v %q after %d acks", f.ErrCode, f.DebugData(), acks)
		}
	}
}

// rawClient speaks HTTP/2 frames to the proxy, for what a grpc-go client
// never does.
type rawClient struct {
	t    *testing.T
	nc   net.Conn
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
}

// dialRaw connects, sends the preface and settings (plus a connection
// window update when connWindow > 0) and returns without reading.
func dialRaw(t *testing.T, addr string, connWindow uint32, settings ...http2.Setting) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &rawClient{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	if connWindow > 0 {
		if err := c.fr.WriteWindowUpdate(0, connWindow); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// grpcHeaders are a well-formed gRPC request's headers for method, then
// extra as name, value pairs.
func grpcHeaders(method string, extra ...string) []hpack.HeaderField {
	fs := []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/milvus.proto.milvus.MilvusService/" + method}, {Name: ":authority", Value: "proxy"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}}
	for i := 0; i+1 < len(extra); i += 2 {
		fs = append(fs, hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return fs
}

func (c *rawClient) headers(id uint32, end bool, fields []hpack.HeaderField) error {
	c.hbuf.Reset()
	for _, f := range fields {
		_ = c.henc.WriteField(f)
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: end, EndHeaders: true})
}

// message writes m as one gRPC message on stream id.
func (c *rawClient) message(id uint32, end bool, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return c.fr.WriteData(id, end, append([]byte{0, byte(len(b) >> 24), byte(len(b) >> 16), byte(len(b) >> 8), byte(len(b))}, b...))
}

// call opens stream id for method with m as its only message.
func (c *rawClient) call(id uint32, method string, m proto.Message) {
	c.t.Helper()
	if err := c.headers(id, false, grpcHeaders(method)); err != nil {
		c.t.Fatal(err)
	}
	if err := c.message(id, true, m); err != nil {
		c.t.Fatal(err)
	}
}

// until reads frames until match returns true, failing at the deadline.
func (c *rawClient) until(d time.Duration, match func(http2.Frame) bool) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("reading: %v", err)
		}
		if match(f) {
			return
		}
	}
}

// goAwayCode reads until a GOAWAY and returns its code.
func (c *rawClient) goAwayCode(d time.Duration) http2.ErrCode {
	c.t.Helper()
	var code http2.ErrCode
	c.until(d, func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		if ok {
			code = g.ErrCode
		}
		return ok
	})
	return code
}

// bystander calls Search in a loop until stop is closed and returns the
// number of calls, the errors, and the slowest call.
func bystander(client milvuspb.MilvusServiceClient, stop <-chan struct{}) (calls int, errs []error, slowest time.Duration) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		_, err := client.Search(ctx, search("coll", commonpb.ConsistencyLevel_Bounded, 0, false))
		cancel()
		calls++
		slowest = max(slowest, time.Since(t0))
		if err != nil {
			errs = append(errs, err)
		}
	}
}

// TestRelaySlowReaderIsolated: a client that never reads its socket, with
// windows that let the proxy send it everything, only ever stalls its own
// connection: a bystander's calls (over the same backend connections)
// keep succeeding quickly, and the reader's connection is closed after
// the write timeout.
func TestRelaySlowReaderIsolated(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineRelay
		o.RelayLimits = RelayLimits{WriteTimeout: time.Second, ConnOutputBuffer: 256 << 10}
	})
	if _, err := e.client.Search(e.ctx(), search("coll", commonpb.ConsistencyLevel_Bounded, 0, false)); err != nil {
		t.Fatal(err)
	}
	bad := dialRaw(t, e.addr, 1<<30, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	if tc, ok := bad.nc.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10)
	}
	for i := uint32(0); i < 20; i++ {
		bad.call(2*i+1, "Query", &milvuspb.QueryRequest{CollectionName: "coll", Expr: "big:1000000",
			ConsistencyLevel: commonpb.ConsistencyLevel_Bounded})
	}
	stop := make(chan struct{})
	time.AfterFunc(3*time.Second, func() { close(stop) })
	calls, errs, slowest := bystander(e.client, stop)
	t.Logf("bystander: %d calls, %d errors, slowest %v", calls, len(errs), slowest)
	if len(errs) > 0 {
		t.Fatalf("bystander errors: %v", errs[0])
	}
	// Generous for a loaded machine: without the writer goroutine, one
	// call stalls until the backend connection's keepalive gives up.
	if slowest > 5*time.Second {
		t.Errorf("a bystander call took %v", slowest)
	}
	// The reader's connection is closed after WriteTimeout; only the
	// bystander's remains.
	testutil.Eventually(t, 5*time.Second, "only the bystander connection left", func() bool {
		return e.srv.relay.Conns() == 1
	})
}

// TestBreakerCountsOnlyClusterFailures: a client's cancels and resets,
// and a backend's own error answers, are not failures of the cluster;
// the write the backend rejected comes back as its answer, not as
// "outcome unknown".
func TestBreakerCountsOnlyClusterFailures(t *testing.T) {
	bothEngines(t, testBreakerCountsOnlyClusterFailures)
}

func testBreakerCountsOnlyClusterFailures(t *testing.T) {
	e := newEnv(t)
	if _, err := e.client.Query(e.ctx(), &milvuspb.QueryRequest{CollectionName: "coll", ConsistencyLevel: Eventually}); err != nil {
		t.Fatal(err)
	}
	b := e.backends["b"]
	for i := 1; i <= 5; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := e.client.Query(ctx, &milvuspb.QueryRequest{CollectionName: "coll", Expr: "sleep", ConsistencyLevel: Eventually})
			done <- err
		}()
		testutil.Eventually(t, 5*time.Second, "the backend call to start", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.sleeping == i })
		cancel()
		if err := <-done; status.Code(err) != codes.Canceled {
			t.Fatalf("canceled call: %v", err)
		}
		testutil.Eventually(t, 5*time.Second, "the backend call to be canceled", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.canceled == i })
	}
	for _, code := range []codes.Code{codes.Internal, codes.Unknown, codes.Aborted, codes.Canceled} {
		e.backends["a"].setFail("Insert", func() error { return status.Error(code, "rejected by the backend") })
		_, err := e.client.Insert(e.ctx(), &milvuspb.InsertRequest{CollectionName: "coll", NumRows: 1})
		if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), "rejected by the backend") {
			t.Fatalf("backend's %v answer came back as %v", code, err)
		}
	}
	if f := e.topo.failed(); len(f) > 0 {
		t.Fatalf("breaker failures counted: %v", f)
	}
}

// TestRelayFrameTooLarge: a frame over the proxy's SETTINGS_MAX_FRAME_SIZE
// is a connection error FRAME_SIZE_ERROR (RFC 9113 section 4.2).
func TestRelayFrameTooLarge(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Engine = EngineRelay })
	c := dialRaw(t, e.addr, 0)
	if err := c.headers(1, false, grpcHeaders("Search")); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteData(1, true, make([]byte, relay.MaxFrameSize+1)); err != nil {
		t.Fatal(err)
	}
	if code := c.goAwayCode(5 * time.Second); code != http2.ErrCodeFrameSize {
		t.Fatalf("GOAWAY %v", code)
	}
}

// streamAnswer reads until stream id is reset or answered with END_STREAM
// headers, and returns the RST code or the :status and grpc-status.
func (c *rawClient) streamAnswer(id uint32) (rst http2.ErrCode, httpStatus, grpcStatus string, reset bool) {
	c.t.Helper()
	c.until(5*time.Second, func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				rst, reset = f.ErrCode, true
				return true
			}
		case *http2.DataFrame:
			return f.StreamID == id && f.StreamEnded()
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				return false
			}
			if s := f.PseudoValue("status"); s != "" {
				httpStatus = s
			}
			for _, hf := range f.RegularFields() {
				if hf.Name == "grpc-status" {
					grpcStatus = hf.Value
				}
			}
			return f.StreamEnded()
		case *http2.GoAwayFrame:
			c.t.Fatalf("GOAWAY %v %q", f.ErrCode, f.DebugData())
		}
		return false
	})
	return
}

// TestRelayRefusesMalformedRequests: requests that break RFC 9113
// section 8 or gRPC's rules are refused at the edge, as grpc-go's server
// does, and never reach a cluster; the connection stays usable.
func TestRelayRefusesMalformedRequests(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Engine = EngineRelay })
	with := func(mut func([]hpack.HeaderField) []hpack.HeaderField) []hpack.HeaderField {
		return mut(grpcHeaders("Search"))
	}
	set := func(name, value string) func([]hpack.HeaderField) []hpack.HeaderField {
		return func(fs []hpack.HeaderField) []hpack.HeaderField {
			for i := range fs {
				if fs[i].Name == name {
					fs[i].Value = value
				}
			}
			return fs
		}
	}
	add := func(name, value string) func([]hpack.HeaderField) []hpack.HeaderField {
		return func(fs []hpack.HeaderField) []hpack.HeaderField {
			return append(fs, hpack.HeaderField{Name: name, Value: value})
		}
	}
	drop := func(name string) func([]hpack.HeaderField) []hpack.HeaderField {
		return func(fs []hpack.HeaderField) []hpack.HeaderField {
			out := fs[:0]
			for _, f := range fs {
				if f.Name != name {
					out = append(out, f)
				}
			}
			return out
		}
	}
	for _, tc := range []struct {
		name       string
		fields     []hpack.HeaderField
		rst        http2.ErrCode // when reset
		httpStatus string        // when answered
	}{
		{"upper-case name", with(add("X-Upper", "v")), http2.ErrCodeProtocol, ""},
		{"unknown pseudo-header", with(add(":foo", "v")), http2.ErrCodeProtocol, ""},
		{"response pseudo-header", with(func(fs []hpack.HeaderField) []hpack.HeaderField {
			return append([]hpack.HeaderField{{Name: ":status", Value: "200"}}, fs...)
		}), http2.ErrCodeProtocol, ""},
		{"pseudo after regular", with(add(":authority", "x")), http2.ErrCodeProtocol, ""},
		{"repeated :path", with(func(fs []hpack.HeaderField) []hpack.HeaderField {
			return append([]hpack.HeaderField{{Name: ":path", Value: "/x"}}, fs...)
		}), http2.ErrCodeProtocol, ""},
		{"missing :method", with(drop(":method")), http2.ErrCodeProtocol, ""},
		{"connection header", with(add("connection", "keep-alive")), http2.ErrCodeProtocol, ""},
		{"te not trailers", with(set("te", "gzip")), http2.ErrCodeProtocol, ""},
		{"bad value", with(add("x-v", "a\x00b")), http2.ErrCodeProtocol, ""},
		{"GET", with(set(":method", "GET")), 0, "405"},
		{"text/plain", with(set("content-type", "text/plain")), 0, "415"},
		{"no content-type", with(drop("content-type")), 0, "415"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, e.addr, 0)
			if err := c.headers(1, true, tc.fields); err != nil {
				t.Fatal(err)
			}
			rst, httpStatus, grpcStatus, reset := c.streamAnswer(1)
			if tc.httpStatus != "" {
				if reset || httpStatus != tc.httpStatus || grpcStatus != "13" {
					t.Fatalf("got reset=%v %v, :status %q grpc-status %q; want :status %s", reset, rst, httpStatus, grpcStatus, tc.httpStatus)
				}
			} else if !reset || rst != tc.rst {
				t.Fatalf("got reset=%v %v (:status %q); want RST_STREAM %v", reset, rst, httpStatus, tc.rst)
			}
			// The connection still serves a well-formed call.
			c.call(3, "Search", search("coll", commonpb.ConsistencyLevel_Bounded, 0, false))
			if _, _, gs, reset := c.streamAnswer(3); reset || gs != "0" {
				t.Fatalf("the next call: reset=%v grpc-status %q", reset, gs)
			}
		})
	}
	if n := e.totalReceived("Search"); n != 12 {
		t.Fatalf("backends saw %d Search calls, want only the 12 well-formed ones", n)
	}
}

// TestRelayConnectionErrors: what RFC 9113 makes a connection error ends
// the connection with GOAWAY and that code; abuse of cheap frames ends it
// with ENHANCE_YOUR_CALM, as Go's net/http2 and grpc-go do.
func TestRelayConnectionErrors(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineRelay
		o.RelayLimits.ResetsPerSecond = 5
		o.RelayLimits.ControlFramesPerSecond = 5
		o.RelayLimits.MaxHeaderListSize = 64 << 10
	})
	req := func(c *rawClient, id uint32) error { return c.headers(id, false, grpcHeaders("Query")) }
	for _, tc := range []struct {
		name  string
		send  func(c *rawClient) error
		code  http2.ErrCode
		debug string
	}{
		{"even stream id", func(c *rawClient) error { return c.headers(2, true, grpcHeaders("Search")) }, http2.ErrCodeProtocol, ""},
		{"decreasing stream id", func(c *rawClient) error {
			if err := req(c, 5); err != nil {
				return err
			}
			return c.headers(3, true, grpcHeaders("Search"))
		}, http2.ErrCodeProtocol, ""},
		{"HEADERS on a half-closed stream", func(c *rawClient) error {
			if err := c.headers(1, true, grpcHeaders("Query")); err != nil {
				return err
			}
			return c.headers(1, true, []hpack.HeaderField{{Name: "x-trailer", Value: "v"}})
		}, http2.ErrCodeStreamClosed, ""},
		{"DATA on an idle stream", func(c *rawClient) error { return c.fr.WriteData(7, true, []byte{0}) }, http2.ErrCodeProtocol, ""},
		{"RST_STREAM on an idle stream", func(c *rawClient) error { return c.fr.WriteRSTStream(9, http2.ErrCodeCancel) }, http2.ErrCodeProtocol, ""},
		{"connection window overflow", func(c *rawClient) error { return c.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl, ""},
		{"PUSH_PROMISE", func(c *rawClient) error {
			return c.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		}, http2.ErrCodeProtocol, ""},
		{"ping flood", func(c *rawClient) error {
			for i := 0; i < 10; i++ {
				if c.fr.WritePing(false, [8]byte{byte(i)}) != nil {
					return nil // closed under us: what we want
				}
			}
			return nil
		}, http2.ErrCodeEnhanceYourCalm, "too_many_pings"},
		{"rapid reset", func(c *rawClient) error {
			for id := uint32(1); id < 400; id += 2 {
				if req(c, id) != nil || c.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return nil // closed under us: what we want
				}
			}
			return nil
		}, http2.ErrCodeEnhanceYourCalm, "too many stream resets"},
		{"SETTINGS flood", func(c *rawClient) error {
			for i := 0; i < 200; i++ {
				if c.fr.WriteSettings() != nil {
					return nil // closed under us: what we want
				}
			}
			return nil
		}, http2.ErrCodeEnhanceYourCalm, "too many SETTINGS"},
		{"empty DATA flood", func(c *rawClient) error {
			if err := req(c, 1); err != nil {
				return err
			}
			for i := 0; i < 200; i++ {
				if c.fr.WriteData(1, false, nil) != nil {
					return nil // closed under us: what we want
				}
			}
			return nil
		}, http2.ErrCodeEnhanceYourCalm, "too many empty frames"},
		{"CONTINUATION flood", func(c *rawClient) error {
			c.hbuf.Reset()
			for _, f := range grpcHeaders("Search") {
				_ = c.henc.WriteField(f)
			}
			if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.hbuf.Bytes()}); err != nil {
				return err
			}
			frag := bytes.Repeat([]byte{0x40, 0x01, 'x', 0x01, 'y'}, 1000) // literal x: y, over and over
			for i := 0; i < 1000; i++ {
				if err := c.fr.WriteContinuation(1, false, frag); err != nil {
					return nil // closed under us: what we want
				}
			}
			return nil
		}, http2.ErrCodeEnhanceYourCalm, "header block too large or too slow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, e.addr, 0)
			if err := tc.send(c); err != nil {
				t.Fatal(err)
			}
			var g *http2.GoAwayFrame
			c.until(10*time.Second, func(f http2.Frame) bool {
				g, _ = f.(*http2.GoAwayFrame)
				return g != nil
			})
			if g.ErrCode != tc.code || (tc.debug != "" && string(g.DebugData()) != tc.debug) {
				t.Fatalf("GOAWAY %v %q, want %v %q", g.ErrCode, g.DebugData(), tc.code, tc.debug)
			}
		})
	}
}

// TestRelayUnarySecondMessage: a unary call's second message is refused
// at once, without waiting for the end of the stream.
func TestRelayUnarySecondMessage(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Engine = EngineRelay })
	c := dialRaw(t, e.addr, 0)
	if err := c.headers(1, false, grpcHeaders("Insert")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := c.message(1, false, &milvuspb.InsertRequest{CollectionName: "coll"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, gs, reset := c.streamAnswer(1); reset || gs != "13" {
		t.Fatalf("reset=%v grpc-status %q, want 13 (Internal)", reset, gs)
	}
	if n := e.totalReceived("Insert"); n != 0 {
		t.Fatalf("backends saw %d Inserts", n)
	}
}

// TestRelayIdleTimeout: a connection without calls goes away gracefully;
// one with a call open does not.
func TestRelayIdleTimeout(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineRelay
		o.RelayLimits.IdleTimeout = 100 * time.Millisecond
	})
	c := dialRaw(t, e.addr, 0)
	if code := c.goAwayCode(5 * time.Second); code != http2.ErrCodeNo {
		t.Fatalf("GOAWAY %v", code)
	}
}

// TestDefaultEngineIsRelay: proxy.New without an engine runs the relay,
// the engine config.Default() names.
func TestDefaultEngineIsRelay(t *testing.T) {
	srv, err := New(Options{Topology: newFakeTopo(&atomic.Uint64{}), Router: router.New(router.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	if srv.relay == nil || srv.engine != EngineRelay {
		t.Fatalf("engine %q", srv.engine)
	}
}

// TestRelayClientLeavesCancelsBackend: a client that closes its connection
// (no RST_STREAM) with a call in flight cancels that call at the cluster.
func TestRelayClientLeavesCancelsBackend(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Engine = EngineRelay })
	// Warm the connections so that the fast path takes the call.
	if _, err := e.client.Query(e.ctx(), &milvuspb.QueryRequest{CollectionName: "coll", ConsistencyLevel: Eventually}); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, e.addr, 0)
	c.call(1, "Query", &milvuspb.QueryRequest{CollectionName: "coll", Expr: "sleep", ConsistencyLevel: Eventually})
	b := e.backends["b"]
	testutil.Eventually(t, 5*time.Second, "the backend call to start", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.sleeping == 1 })
	c.nc.Close()
	testutil.Eventually(t, 5*time.Second, "the backend call to be canceled", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.canceled == 1 })
	if f := e.topo.failed(); len(f) > 0 {
		t.Fatalf("breaker failures counted: %v", f)
	}
}

// countingConn counts the bytes read from a cluster.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestRelayResponseBudget: a client that grants no window and asks for
// many large answers makes the proxy hold no more than its response
// budget (plus one stream window per call and the answers the oldest-call
// rule lets complete): the clusters are held back by flow control, not
// buffered. A bystander on another connection, over the same backend
// connections, keeps getting answers, and everything is given back when
// the client leaves.
func TestRelayResponseBudget(t *testing.T) {
	const (
		budget = 1 << 20
		window = 64 << 10
		answer = 1 << 20
		calls  = 16
	)
	var fromClusters atomic.Int64
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineRelay
		o.RelayLimits = RelayLimits{ConnResponseBuffer: budget, BackendStreamWindow: window}
		o.DialBackend = func(ctx context.Context, c *topology.Cluster) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.URI)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: nc, n: &fromClusters}, nil
		}
	})
	// Warm the backend connections so that every call shares them.
	if _, err := e.client.Query(e.ctx(), &milvuspb.QueryRequest{CollectionName: "coll", Expr: "big:1000", ConsistencyLevel: Eventually}); err != nil {
		t.Fatal(err)
	}
	bad, _ := holdAnswers(t, e, budget, window, &fromClusters, calls, answer)
	rb := e.srv.ResponseBuffered

	// The client leaves: its backend streams end and the budget is back.
	bad.nc.Close()
	testutil.Eventually(t, 10*time.Second, "the budget given back", func() bool {
		used, held := rb()
		return used == 0 && held == 0
	})
}

// TestCloseDuringHeldAnswers: clients that grant no window ask for large
// answers and close their connection while the answers arrive, so that
// the relay ends backend streams (the client left) while the cluster
// connection's reader is appending their DATA. Under -race this fails if
// the two touch an answer's buffer at once (it once crashed the process:
// a freed buffer grown again).
func TestCloseDuringHeldAnswers(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.Engine = EngineRelay
		o.RelayLimits.ConnResponseBuffer = 1 << 20
	})
	for round := range 12 {
		c := dialRaw(t, e.addr, 0, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		for i := uint32(0); i < 8; i++ {
			c.call(2*i+1, "Query", &milvuspb.QueryRequest{CollectionName: "coll", Expr: "big:2000000", ConsistencyLevel: Eventually})
		}
		time.Sleep(time.Duration(round%4) * 5 * time.Millisecond)
		c.nc.Close()
	}
	if _, err := e.client.Query(e.ctx(), &milvuspb.QueryRequest{CollectionName: "coll", Expr: "big:2000000", ConsistencyLevel: Eventually}); err != nil {
		t.Fatalf("a Query after the closed clients: %v", err)
	}
}

// holdAnswers has a client that grants no window ask for calls answers
// of answer bytes on either engine (after a call that opened the backend
// connections), and checks what the response budget promises: a
// bystander on another connection is served meanwhile, and what the proxy
// charged and read from the clusters stays within the budget plus two
// answers the oldest-call rule lets complete, one window per call, and
// 1 MiB of the bystander's answers and frame overhead. It returns the
// client and how many calls are held.
func holdAnswers(t *testing.T, e *env, budget, window int, fromClusters *atomic.Int64, calls uint32, answer int) (*rawClient, int64) {
	t.Helper()
	base := fromClusters.Load()
	rb := e.srv.ResponseBuffered
	bad := dialRaw(t, e.addr, 0, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	for i := uint32(0); i < calls; i++ {
		bad.call(2*i+1, "Query", &milvuspb.QueryRequest{CollectionName: "coll", Expr: fmt.Sprintf("big:%d", answer), ConsistencyLevel: Eventually})
	}
	testutil.Eventually(t, 10*time.Second, "calls held", func() bool { _, held := rb(); return held > 0 })

	stop := make(chan struct{})
	time.AfterFunc(time.Second, func() { close(stop) })
	n, errs, slowest := bystander(e.client, stop)
	t.Logf("bystander: %d calls, %d errors, slowest %v", n, len(errs), slowest)
	if len(errs) > 0 {
		t.Fatalf("bystander errors: %v", errs[0])
	}
	if n == 0 || slowest > 5*time.Second {
		t.Errorf("bystander: %d calls, slowest %v", n, slowest)
	}

	limit := int64(budget + 2*answer + int(calls)*window + 1<<20)
	time.Sleep(200 * time.Millisecond) // anything still in flight lands
	used, held := rb()
	read := fromClusters.Load() - base
	t.Logf("held calls %d, charged %d bytes, read from clusters %d bytes (limit %d)", held, used, read, limit)
	if used > limit {
		t.Errorf("charged %d bytes > %d", used, limit)
	}
	if read > limit {
		t.Errorf("read %d bytes from the clusters > %d: the answers were not held back", read, limit)
	}
	if held == 0 || held >= int64(calls) {
		t.Errorf("%d calls held, want some but not all of %d", held, calls)
	}
	return bad, held
}
