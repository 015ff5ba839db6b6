package proxy

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"

	"github.com/mesh-dev/mesh/proxy/trace"
)

// newTracer makes the tracer of --tracing-collector: spans named for the
// pod, with its namespace and name as resource attributes (OpenTelemetry's
// k8s.* conventions) for Jaeger to search by.
func newTracer(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*trace.Tracer, error) {
	var attrs []attribute.KeyValue
	if cfg.Namespace != "" {
		attrs = append(attrs, attribute.String("k8s.namespace.name", cfg.Namespace))
	}
	if cfg.PodName != "" {
		attrs = append(attrs, attribute.String("k8s.pod.name", cfg.PodName))
	}
	return trace.New(trace.Config{
		Collector: cfg.TracingCollector, SampleRate: cfg.TracingSampleRate,
		ServiceName: cfg.traceServiceName(), Attributes: attrs, Registry: reg,
		Log: log.With("component", "trace"),
	})
}
