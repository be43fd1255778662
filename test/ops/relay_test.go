package ops

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// rawCodec moves gRPC messages as bytes, so the relay forwards any method
// without knowing its types.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// mdRelay is a transparent gRPC relay in front of a backend that records
// the metadata of every call it forwards: what the backend received.
type mdRelay struct {
	addr string
	srv  *grpc.Server
	conn *grpc.ClientConn

	mu   sync.Mutex
	seen map[string][]metadata.MD // full method -> incoming metadata, in order
}

func startRelay(t *testing.T, backend string) *mdRelay {
	t.Helper()
	conn, err := grpc.NewClient(backend, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &mdRelay{addr: lis.Addr().String(), conn: conn, seen: map[string][]metadata.MD{}}
	r.srv = grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(r.handle))
	go func() { _ = r.srv.Serve(lis) }()
	t.Cleanup(func() {
		r.srv.Stop()
		conn.Close()
	})
	return r
}

// calls returns the metadata of every call of fullMethod so far.
func (r *mdRelay) calls(fullMethod string) []metadata.MD {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]metadata.MD(nil), r.seen[fullMethod]...)
}

func (r *mdRelay) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ss.Context())
	r.mu.Lock()
	r.seen[method] = append(r.seen[method], md.Copy())
	r.mu.Unlock()

	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ss.Context(), md.Copy()))
	defer cancel()
	cs, err := r.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	go func() {
		for {
			var f []byte
			if err := ss.RecvMsg(&f); err != nil {
				_ = cs.CloseSend()
				return
			}
			if err := cs.SendMsg(&f); err != nil {
				return
			}
		}
	}()
	if h, err := cs.Header(); err == nil {
		_ = ss.SendHeader(h)
	}
	for {
		var f []byte
		if err := cs.RecvMsg(&f); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(&f); err != nil {
			return err
		}
	}
}
