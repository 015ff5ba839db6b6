package trace

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mesh-dev/mesh/proxy/metrics"
)

// BenchmarkSpan is what tracing adds to a request: extract, start,
// inject, end, sampled or not. Run: go test -run=^$ -bench=Span ./proxy/trace
func BenchmarkSpan(b *testing.B) {
	for _, bc := range []struct {
		name string
		rate float64
		in   headers
	}{
		{name: "sampled", rate: 1, in: headers{"traceparent": "00-" + tid + "-" + sid + "-01"}},
		{name: "unsampled", rate: 0, in: headers{"traceparent": "00-" + tid + "-" + sid + "-00"}},
		{name: "no context", rate: 1, in: headers{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tr := newTracer(b, Config{SampleRate: bc.rate, Exporter: tracetest.NewNoopExporter(), Queue: 1 << 16})
			h := headers{}
			b.ReportAllocs()
			for b.Loop() {
				clear(h)
				for k, v := range bc.in {
					h[k] = v
				}
				s := tr.Start(metrics.Outbound, "GET", time.Now(), h)
				s.Inject(h)
				s.End(&Outcome{Direction: metrics.Outbound, Status: 200, GRPCStatus: -1})
			}
		})
	}
}
