package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/rawmsg"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The relay on its own, with a Handler of the test's: the seam the proxy
// uses (StartUnary and an Exchange on the fast path, Dispatch and Unary
// with RoundTrip on a worker, Stream, Health), between a grpc-go client
// and a grpc-go backend that echoes what it gets.

const (
	methodFast = iota
	methodSlow
	methodStream
)

var testMethods = []Method{
	methodFast:   {Path: "/test.Echo/Fast"},
	methodSlow:   {Path: "/test.Echo/Slow"},
	methodStream: {Path: "/test.Echo/Stream", Stream: true},
}

// echoHandler routes every call to one backend cluster.
type echoHandler struct {
	pool      *Pool
	cl        *topology.Cluster
	exchanges atomic.Int64 // fast-path answers (ExchangeDone)
	workers   atomic.Int64 // worker answers (Unary)
}

// echoCall is one fast-path call's state.
type echoCall struct {
	h   *echoHandler
	c   *Call
	req *rawmsg.Msg
	x   Exchange
}

func (h *echoHandler) StartUnary(c *Call, req *rawmsg.Msg, fl *Flush) {
	if c.Method() != methodFast {
		c.Dispatch(req)
		return
	}
	ec := &echoCall{h: h, c: c, req: req}
	if !h.pool.Bind(&ec.x, h.cl) || !ec.x.Start(c, req, fl, ec) {
		c.Dispatch(req) // no connection yet, or no window: the blocking way
	}
}

func (ec *echoCall) ExchangeDone(x *Exchange, fl *Flush) {
	resp, _, err := x.Result(ec.h.cl.ID)
	ec.req.Free()
	ec.h.exchanges.Add(1)
	ec.c.Finish(ec.h.cl.ID, resp, err, fl)
}

func (h *echoHandler) Unary(c *Call, req *rawmsg.Msg) (*rawmsg.Msg, string, error) {
	h.workers.Add(1)
	resp, _, err := h.pool.RoundTrip(c.Request(), h.cl, req)
	return resp, h.cl.ID, err
}

// Stream echoes the client's messages itself (no backend).
func (h *echoHandler) Stream(c *Call, cs ClientStream) (string, bool, error) {
	if err := cs.SendHeader(nil, "local"); err != nil {
		return "", false, err
	}
	for {
		m, credit, err := cs.Recv(c.Context())
		if errors.Is(err, io.EOF) {
			cs.Finish(nil, nil, "local")
			return "local", true, nil
		}
		if err != nil {
			return "local", true, err
		}
		err = cs.Send(m)
		m.Free()
		cs.Sent(credit)
		if err != nil {
			return "local", true, err
		}
	}
}

func (h *echoHandler) Health() (healthpb.HealthCheckResponse_ServingStatus, <-chan struct{}) {
	return healthpb.HealthCheckResponse_SERVING, nil
}

func (h *echoHandler) Draining() bool { return false }

// echoBackend is a grpc-go server answering every method with the request
// bytes and an x-backend header.
func echoBackend(t *testing.T) string {
	t.Helper()
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawmsg.NewCodec()),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			m := &rawmsg.Msg{}
			if err := ss.RecvMsg(m); err != nil {
				return err
			}
			defer m.Free()
			if bytes.Equal(m.Bytes(), []byte("fail")) {
				return status.Error(codes.FailedPrecondition, "backend says no")
			}
			if err := ss.SetHeader(metadata.Pairs("x-backend", "yes")); err != nil {
				return err
			}
			return ss.SendMsg(m)
		}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// startEcho runs a relay Server in front of an echo backend and returns
// a client connection to it.
func startEcho(t *testing.T) (*echoHandler, *grpc.ClientConn) {
	t.Helper()
	h := &echoHandler{cl: &topology.Cluster{ID: "b", URI: echoBackend(t)}}
	h.pool = NewPool(PoolOptions{MaxMessageSize: 1 << 20})
	srv := NewServer(ServerOptions{Handler: h, Methods: testMethods, Service: "test.Echo", MaxMessageSize: 1 << 20})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawmsg.NewCodec())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
		h.pool.Close()
	})
	return h, cc
}

func TestHandlerSeam(t *testing.T) {
	h, cc := startEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	call := func(method, body string) (string, metadata.MD, error) {
		var hdr metadata.MD
		resp := &rawmsg.Msg{}
		err := cc.Invoke(ctx, method, rawmsg.FromBytes([]byte(body)), resp, grpc.Header(&hdr))
		defer resp.Free()
		return string(resp.Bytes()), hdr, err
	}
	// The first call finds no connection to the backend: a worker dials
	// (Dispatch, Unary, RoundTrip). Later fast calls take an Exchange.
	for i, tc := range []struct {
		method, body string
		code         codes.Code
	}{
		{"/test.Echo/Slow", "slow", codes.OK},
		{"/test.Echo/Fast", "fast", codes.OK},
		{"/test.Echo/Fast", "fast again", codes.OK},
		{"/test.Echo/Fast", "fail", codes.FailedPrecondition},
		{"/test.Echo/Slow", "fail", codes.FailedPrecondition},
		{"/test.Echo/Nope", "x", codes.Unimplemented},
	} {
		got, hdr, err := call(tc.method, tc.body)
		if status.Code(err) != tc.code {
			t.Fatalf("%d %s: %v, want %v", i, tc.method, err, tc.code)
		}
		if tc.code == codes.Unimplemented {
			continue
		}
		if c := hdr.Get(HeaderCluster); len(c) != 1 || c[0] != "b" {
			t.Errorf("%d %s: %s %v, want b", i, tc.method, HeaderCluster, c)
		}
		if tc.code != codes.OK {
			continue
		}
		if got != tc.body {
			t.Errorf("%d %s: got %q, want %q", i, tc.method, got, tc.body)
		}
		if b := hdr.Get("x-backend"); len(b) != 1 {
			t.Errorf("%d %s: backend header not passed on: %v", i, tc.method, hdr)
		}
	}
	if n := h.exchanges.Load(); n != 3 {
		t.Errorf("%d fast-path answers, want 3", n)
	}
	if n := h.workers.Load(); n != 2 {
		t.Errorf("%d worker answers, want 2", n)
	}

	hc := healthpb.NewHealthClient(cc)
	for service, want := range map[string]codes.Code{"": codes.OK, "test.Echo": codes.OK, "other": codes.NotFound} {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.ForceCodecV2(rawmsg.NewCodec()))
		if status.Code(err) != want {
			t.Fatalf("health %q: %v, want %v", service, err, want)
		}
		if err == nil && r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v", service, r.GetStatus())
		}
	}

	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/test.Echo/Stream")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"one", "two", "three"} {
		if err := st.SendMsg(rawmsg.FromBytes([]byte(m))); err != nil {
			t.Fatal(err)
		}
		resp := &rawmsg.Msg{}
		if err := st.RecvMsg(resp); err != nil {
			t.Fatal(err)
		}
		if got := string(resp.Bytes()); got != m {
			t.Errorf("stream: got %q, want %q", got, m)
		}
		resp.Free()
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := st.RecvMsg(&rawmsg.Msg{}); !errors.Is(err, io.EOF) {
		t.Fatalf("stream end: %v", err)
	}
	if c := st.Trailer().Get(HeaderCluster); len(c) != 1 || c[0] != "local" {
		t.Errorf("stream trailer %s: %v", HeaderCluster, c)
	}
}
