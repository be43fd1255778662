// Package telemetry owns the proxy's OpenTelemetry providers: metrics
// exported in the Prometheus format on the admin port (on a registry of its
// own, never the global one), traces exported over OTLP/gRPC when an
// endpoint is configured, and the W3C trace-context propagator that carries
// a client's trace through the proxy to the backend. Nothing here sets
// otel's global providers; callers pass Telemetry's providers explicitly.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
)

// ScopeName is the instrumentation scope of the proxy's meters and tracers.
const ScopeName = "github.com/milvus-ha-proxy/milvus-ha-proxy"

// Options configures New.
type Options struct {
	// ServiceName is the service.name resource attribute; default
	// "milvus-ha-proxy".
	ServiceName string
	// ServiceVersion is the service.version resource attribute, optional.
	ServiceVersion string
	// OTLPEndpoint is the OTLP/gRPC collector for traces: host:port or
	// http://host:port (plaintext), https://host:port (TLS). Empty: spans
	// are not recorded, but incoming trace context is still continued and
	// passed on to the backends. The exporter also honours the standard
	// OTEL_EXPORTER_OTLP_HEADERS and OTEL_EXPORTER_OTLP_TRACES_* variables.
	OTLPEndpoint string
	// SampleRatio is the fraction of new traces sampled, 0..1, taken as
	// given (config's telemetry.sample_ratio defaults to 1). A trace the
	// client sampled is always continued, so 0 traces only those.
	SampleRatio float64
	// SpanExporter, when set, replaces the OTLP exporter and is called
	// synchronously as spans end (tests use an in-memory exporter).
	SpanExporter sdktrace.SpanExporter
}

// Telemetry is the set of providers one proxy process uses.
type Telemetry struct {
	// MeterProvider feeds /metrics.
	MeterProvider *sdkmetric.MeterProvider
	// TracerProvider records spans (a no-op provider when no exporter is
	// configured; it still propagates incoming span contexts).
	TracerProvider trace.TracerProvider
	// Propagator is W3C trace context plus baggage.
	Propagator propagation.TextMapPropagator
	// Metrics holds the proxy's instruments.
	Metrics *Metrics

	registry *prometheus.Registry
	tp       *sdktrace.TracerProvider // nil when tracing is off
	tracer   trace.Tracer
}

// New builds the providers. ctx bounds only the set-up.
func New(ctx context.Context, o Options) (*Telemetry, error) {
	if o.ServiceName == "" {
		o.ServiceName = "milvus-ha-proxy"
	}
	if o.SampleRatio < 0 || o.SampleRatio > 1 {
		return nil, fmt.Errorf("telemetry: sample ratio %v is outside 0..1", o.SampleRatio)
	}

	attrs := []attribute.KeyValue{attribute.String("service.name", o.ServiceName)}
	if o.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", o.ServiceVersion))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	hot := newHotMetrics()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithProducer(hot))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
	m, err := newMetrics(mp.Meter(ScopeName), hot)
	if err != nil {
		_ = mp.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: instruments: %w", err)
	}

	t := &Telemetry{
		MeterProvider: mp,
		Propagator:    propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Metrics:       m,
		registry:      reg,
	}

	var spanOpt sdktrace.TracerProviderOption
	switch {
	case o.SpanExporter != nil:
		spanOpt = sdktrace.WithSyncer(o.SpanExporter)
	case o.OTLPEndpoint != "":
		hostport, insecure, err := config.ParseOTLPEndpoint(o.OTLPEndpoint)
		if err != nil {
			_ = mp.Shutdown(ctx)
			return nil, fmt.Errorf("telemetry: otlp endpoint: %w", err)
		}
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(hostport)}
		if insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		// The client connects lazily: a collector that is down does not
		// stop the proxy, its spans are dropped and the error logged.
		te, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			_ = mp.Shutdown(ctx)
			return nil, fmt.Errorf("telemetry: otlp exporter: %w", err)
		}
		spanOpt = sdktrace.WithBatcher(te)
	}
	if spanOpt != nil {
		t.tp = sdktrace.NewTracerProvider(
			spanOpt,
			sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))),
		)
		t.TracerProvider = t.tp
	} else {
		t.TracerProvider = noop.NewTracerProvider()
	}
	t.tracer = t.TracerProvider.Tracer(ScopeName)
	return t, nil
}

// Tracer returns the proxy's tracer.
func (t *Telemetry) Tracer() trace.Tracer { return t.tracer }

// Meter returns the proxy's meter, for instruments a package adds itself.
func (t *Telemetry) Meter() metric.Meter { return t.MeterProvider.Meter(ScopeName) }

// TracingEnabled reports whether spans are recorded and exported.
func (t *Telemetry) TracingEnabled() bool { return t.tp != nil }

// MetricsHandler serves the Prometheus exposition of the proxy's metrics,
// plus the Go runtime and process collectors.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// ForceFlush exports the spans buffered so far.
func (t *Telemetry) ForceFlush(ctx context.Context) error {
	if t.tp == nil {
		return nil
	}
	return t.tp.ForceFlush(ctx)
}

// Shutdown flushes and stops the providers. Call it once, after the servers
// have stopped, with a deadline: an unreachable collector otherwise holds
// the exit up for the exporter's timeout.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if t.tp != nil {
		if err := t.tp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("tracer provider: %w", err))
		}
	}
	if err := t.MeterProvider.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("meter provider: %w", err))
	}
	return errors.Join(errs...)
}
