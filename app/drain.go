package app

import (
	"context"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthWatchMethod is the streaming health check: grpc-go's client-side
// health checking, and some meshes, keep one open per connection.
const healthWatchMethod = "/grpc.health.v1.Health/Watch"

// watchEnder ends open health Watch streams during a drain, once each has
// told its client NOT_SERVING. grpc's health server keeps a Watch open
// until the client leaves, and GracefulStop waits for every stream: one
// watcher would otherwise hold the drain for the whole grace period and
// then get cut, with calls in flight cut alongside it.
type watchEnder struct {
	// draining is set before the streams are visited, so a stream that
	// sends NOT_SERVING concurrently either is visited after its send or
	// sees the flag itself.
	draining atomic.Bool

	mu      sync.Mutex
	streams map[*endableWatch]struct{}
}

func newWatchEnder() *watchEnder {
	return &watchEnder{streams: map[*endableWatch]struct{}{}}
}

// interceptor wraps health Watch streams so drain can end them.
func (w *watchEnder) interceptor() grpc.ServerOption {
	return grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if info.FullMethod != healthWatchMethod {
			return h(srv, ss)
		}
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		es := &endableWatch{ServerStream: ss, ctx: ctx, cancel: cancel, last: -1}
		w.mu.Lock()
		if w.draining.Load() {
			// Too late to watch: say NOT_SERVING once and end.
			es.ended = true
			w.mu.Unlock()
			return ss.SendMsg(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING})
		}
		w.streams[es] = struct{}{}
		es.ender = w
		w.mu.Unlock()
		defer func() {
			w.mu.Lock()
			delete(w.streams, es)
			w.mu.Unlock()
		}()
		return h(srv, es)
	})
}

// drain marks the drain: watchers that already told their client
// NOT_SERVING end now, the others as soon as they do (the health server
// sends NOT_SERVING to all of them when the proxy starts draining).
func (w *watchEnder) drain() {
	w.draining.Store(true)
	w.mu.Lock()
	defer w.mu.Unlock()
	for es := range w.streams {
		es.mu.Lock()
		if es.last == healthpb.HealthCheckResponse_NOT_SERVING {
			es.end()
		}
		es.mu.Unlock()
	}
}

type endableWatch struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelFunc
	ender  *watchEnder

	mu    sync.Mutex
	last  healthpb.HealthCheckResponse_ServingStatus
	ended bool
}

func (s *endableWatch) Context() context.Context { return s.ctx }

func (s *endableWatch) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	r, ok := m.(*healthpb.HealthCheckResponse)
	if err != nil || !ok {
		return err
	}
	s.mu.Lock()
	s.last = r.GetStatus()
	if s.ender.draining.Load() && s.last == healthpb.HealthCheckResponse_NOT_SERVING {
		s.end()
	}
	s.mu.Unlock()
	return nil
}

// end cancels the stream's context; the health server's Watch returns.
// Called with s.mu held.
func (s *endableWatch) end() {
	if !s.ended {
		s.ended = true
		s.cancel()
	}
}
