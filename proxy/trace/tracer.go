// Package trace makes the proxy a hop of distributed traces (issue 15): it
// reads the W3C Trace Context or B3 context a request carries, gives the
// request a span of this proxy's (a server span inbound, a client span
// outbound) that is the child of it, passes the context on with that span
// as the parent, and exports sampled spans over OTLP/gRPC.
//
// Sampling follows the caller's decision; a request that carries none is
// sampled at Config.SampleRate. An unsampled request still passes its
// context on, so that the hops after it agree. Export never holds up a
// request: ended spans go into a bounded queue (processor.go) that one
// goroutine sends from; when the collector is slow or gone the queue fills
// and further spans are dropped and counted.
package trace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/mesh-dev/mesh/proxy/metrics"
)

// Config configures a Tracer.
type Config struct {
	// Collector is the host:port of an OTLP/gRPC collector. Required
	// unless Exporter is set.
	Collector string
	// SampleRate is the share of requests without a sampling decision
	// that are sampled, 0 to 1.
	SampleRate float64
	// ServiceName names the proxy's workload in the traces
	// ("<pod>.<namespace>"); Attributes are added to the resource.
	ServiceName string
	Attributes  []attribute.KeyValue
	// Queue bounds the ended spans waiting for export; 0 means
	// DefaultQueue.
	Queue int
	// Registry, when set, gets mesh_proxy_trace_spans_dropped_total and
	// mesh_proxy_trace_spans_exported_total.
	Registry prometheus.Registerer
	// Exporter replaces the OTLP/gRPC exporter (tests).
	Exporter sdktrace.SpanExporter
	Log      *slog.Logger // nil: slog.Default()
}

// ErrBadConfig wraps a Config a Tracer cannot be made from.
var ErrBadConfig = errors.New("trace: bad config")

// Tracer starts the spans of requests. A nil *Tracer traces nothing and
// propagates nothing: tracing off leaves requests as they came. Safe for
// concurrent use.
type Tracer struct {
	tp   *sdktrace.TracerProvider
	tr   oteltrace.Tracer
	proc *processor
	rate float64
}

// New returns a Tracer exporting to cfg.Collector, or cfg.Exporter.
// Connecting is lazy: a collector that is down costs nothing until spans
// are exported, and then only the export goroutine waits on it.
func New(cfg Config) (*Tracer, error) {
	if cfg.SampleRate < 0 || cfg.SampleRate > 1 {
		return nil, fmt.Errorf("%w: sample rate %v: want 0 to 1", ErrBadConfig, cfg.SampleRate)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	exp := cfg.Exporter
	if exp == nil {
		if cfg.Collector == "" {
			return nil, fmt.Errorf("%w: no collector", ErrBadConfig)
		}
		var err error
		// A context only for the call: the gRPC client connects lazily.
		exp, err = otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(cfg.Collector),
			otlptracegrpc.WithInsecure(),
			// No retries: a span that missed its export is dropped
			// rather than holding the queue behind it.
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}),
			otlptracegrpc.WithTimeout(exportTimeout))
		if err != nil {
			return nil, fmt.Errorf("trace: exporter for %s: %w", cfg.Collector, err)
		}
	}
	proc, err := newProcessor(exp, cfg.Queue, cfg.Registry, cfg.Log)
	if err != nil {
		return nil, err
	}
	attrs := append([]attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}, cfg.Attributes...)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(decided{}),
		sdktrace.WithSpanProcessor(proc),
	)
	return &Tracer{tp: tp, tr: tp.Tracer("github.com/mesh-dev/mesh/proxy"), proc: proc, rate: cfg.SampleRate}, nil
}

// Shutdown exports the spans still queued, within ctx, and stops.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// Dropped is the number of sampled spans dropped for a full queue or a
// failed export.
func (t *Tracer) Dropped() uint64 {
	if t == nil {
		return 0
	}
	return t.proc.dropped.Load()
}

// decisionKey carries the sampling decision Start made to the sampler.
type decisionKey struct{}

// decided is a Sampler that applies the decision Start made: the caller's,
// or the rate's for a request that carried none. The SDK's ParentBased
// sampler cannot tell a B3 parent that deferred the decision from one
// that declined.
type decided struct{}

func (decided) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	ts := oteltrace.SpanContextFromContext(p.ParentContext).TraceState()
	if yes, _ := p.ParentContext.Value(decisionKey{}).(bool); yes {
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: ts}
	}
	return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: ts}
}

func (decided) Description() string { return "MeshDecided" }

// Span is a request's span in this proxy. A nil *Span does nothing.
type Span struct {
	span   oteltrace.Span
	sc     oteltrace.SpanContext
	in     Context
	traceB string // the trace ID as hex, for headers and the access log
}

// Start begins the span of a request that arrived with the headers h,
// at start. A server span inbound, a client span outbound.
func (t *Tracer) Start(dir metrics.Direction, method string, start time.Time, h Getter) *Span {
	if t == nil {
		return nil
	}
	in := Extract(h)
	sampled := in.Sampled
	if !in.Decided {
		sampled = t.rate >= 1 || (t.rate > 0 && rand.Float64() < t.rate)
	}
	// The spans' context is the request's, not the connection's: nothing
	// cancels it, and it carries only the parent and the decision.
	ctx := context.WithValue(context.Background(), decisionKey{}, sampled)
	if in.HasIDs() {
		ts, _ := oteltrace.ParseTraceState(in.State) // an invalid tracestate is dropped (W3C §3.3.1.1)
		flags := oteltrace.TraceFlags(0)
		if sampled {
			flags = oteltrace.FlagsSampled
		}
		ctx = oteltrace.ContextWithRemoteSpanContext(ctx, oteltrace.NewSpanContext(oteltrace.SpanContextConfig{
			TraceID: in.TraceID, SpanID: in.SpanID, TraceFlags: flags, TraceState: ts, Remote: true,
		}))
	}
	kind := oteltrace.SpanKindServer
	if dir == metrics.Outbound {
		kind = oteltrace.SpanKindClient
	}
	_, span := t.tr.Start(ctx, string(dir)+" "+spanMethod(method), oteltrace.WithSpanKind(kind), oteltrace.WithTimestamp(start))
	sc := span.SpanContext()
	return &Span{span: span, sc: sc, in: in, traceB: sc.TraceID().String()}
}

// TraceID is the span's trace ID in hex; "" for a nil Span.
func (s *Span) TraceID() string {
	if s == nil {
		return ""
	}
	return s.traceB
}

// Sampled reports whether the span is exported.
func (s *Span) Sampled() bool { return s != nil && s.sc.IsSampled() }

// Outcome is how a request went, for its span's attributes.
type Outcome struct {
	Direction  metrics.Direction
	Authority  string
	Path       string // without the query
	Status     int    // 0 when the client went away first
	GRPCStatus int    // -1 for none
	PeerID     string // the client's identity inbound, the server's outbound
	Route      metrics.RouteRef
	Upstream   string // ip:port; "" for none
	Retries    int
}

// End ends the span with out's attributes.
func (s *Span) End(out *Outcome) {
	if s == nil {
		return
	}
	if s.span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 12)
		attrs = append(attrs,
			attribute.String("mesh.direction", string(out.Direction)),
			attribute.String("server.address", out.Authority),
			attribute.String("url.path", out.Path),
			attribute.Int("http.response.status_code", out.Status),
			attribute.Int("mesh.retries", out.Retries),
		)
		if out.GRPCStatus >= 0 {
			attrs = append(attrs, attribute.Int("rpc.grpc.status_code", out.GRPCStatus))
		}
		if out.PeerID != "" {
			attrs = append(attrs, attribute.String("mesh.peer.identity", out.PeerID))
		}
		if r := out.Route; r.Kind != "" {
			attrs = append(attrs, attribute.String("mesh.route.kind", r.Kind), attribute.String("mesh.route.namespace", r.Namespace),
				attribute.String("mesh.route.name", r.Name), attribute.String("mesh.route.rule", r.Rule))
		}
		if out.Upstream != "" {
			attrs = append(attrs, attribute.String("network.peer.address", out.Upstream))
		}
		s.span.SetAttributes(attrs...)
		if out.Status == 0 || out.Status >= 500 || out.GRPCStatus > 0 {
			s.span.SetStatus(codes.Error, "")
		}
	}
	s.span.End()
}

// spanMethod is the method as a span name has it: one of RFC 9110's, or
// _OTHER as OpenTelemetry's HTTP conventions say, so that a client cannot
// make up span names.
func spanMethod(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return m
	}
	return "_OTHER"
}
