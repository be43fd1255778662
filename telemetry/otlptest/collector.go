// Package otlptest is an in-process OTLP/gRPC trace collector for tests:
// point telemetry.Options.OTLPEndpoint (or any OTLP exporter) at
// Collector.Endpoint and read back the spans it received.
package otlptest

import (
	"context"
	"net"
	"sync"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Collector receives OTLP trace exports over plaintext gRPC.
type Collector struct {
	coltracepb.UnimplementedTraceServiceServer

	// Endpoint is host:port to export to.
	Endpoint string

	srv *grpc.Server

	mu      sync.Mutex
	spans   []*tracepb.Span
	changed chan struct{} // closed and replaced on every export
}

// Start listens on 127.0.0.1:0 and serves until Stop.
func Start() (*Collector, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &Collector{Endpoint: lis.Addr().String(), srv: grpc.NewServer(), changed: make(chan struct{})}
	coltracepb.RegisterTraceServiceServer(c.srv, c)
	go func() { _ = c.srv.Serve(lis) }()
	return c, nil
}

// Stop stops the server.
func (c *Collector) Stop() { c.srv.Stop() }

// Export implements the OTLP trace service.
func (c *Collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			c.spans = append(c.spans, ss.GetSpans()...)
		}
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// Spans returns every span received so far.
func (c *Collector) Spans() []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*tracepb.Span(nil), c.spans...)
}

// WaitForSpan waits until a span named name arrives, or ctx ends.
func (c *Collector) WaitForSpan(ctx context.Context, name string) (*tracepb.Span, error) {
	for {
		c.mu.Lock()
		for _, s := range c.spans {
			if s.GetName() == name {
				c.mu.Unlock()
				return s, nil
			}
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Attr returns the value of a span attribute as a Go value (string, int64,
// float64, bool), or nil when the span does not carry it.
func Attr(s *tracepb.Span, key string) any {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return value(kv.GetValue())
		}
	}
	return nil
}

func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	}
	return v.String()
}
