package injector

import (
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/internal/names"
)

// Results of an admission request, the "result" label.
const (
	resultInjected = "injected"
	resultSkipped  = "skipped"
	resultError    = "error"
)

// reasonIgnored is the "skipped" reason of pods in a namespace labelled
// mesh.dev/webhook=ignore; other skipped pods use inject.Skip.
const reasonIgnored = "webhook-ignored"

// Reasons of the "error" result.
const (
	reasonBadRequest = "bad-request" // not an AdmissionReview: 400
	reasonBadPod     = "bad-pod"     // the object is not a pod we can decode
	reasonInternal   = "internal"    // a bug: a panic or a patch that failed
	reasonConfig     = "config"      // the injector's own config is invalid
)

// Metrics counts what the webhook does. The zero value is not usable; a nil
// *Metrics counts nothing.
type Metrics struct {
	injections *prometheus.CounterVec
	warnings   *prometheus.CounterVec
}

// NewMetrics registers the webhook's counters with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		injections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_controller_injections_total",
			Help: "Pod admission requests, by result (injected, skipped, error) and reason (why skipped, what failed; none when injected).",
		}, []string{"result", "reason"}),
		warnings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_controller_injection_warnings_total",
			Help: "Warnings about pod annotations that were ignored, by annotation (unknown config.mesh.dev/* keys are counted together).",
		}, []string{"annotation"}),
	}
	reg.MustRegister(m.injections, m.warnings)
	return m
}

func (m *Metrics) injection(result, reason string) {
	if m == nil {
		return
	}
	if reason == "" {
		reason = "none"
	}
	m.injections.WithLabelValues(result, reason).Inc()
}

// warning counts a warning about annotation. The label is bounded: any
// unknown key (users choose them) counts as config.mesh.dev/unknown.
func (m *Metrics) warning(annotation string) {
	if m == nil || annotation == "" {
		return
	}
	if strings.HasPrefix(annotation, names.ConfigPrefix) && !slices.Contains(inject.ConfigAnnotations(), annotation) &&
		annotation != names.AnnotationDefaultInboundPolicy {
		annotation = names.ConfigPrefix + "unknown"
	}
	m.warnings.WithLabelValues(annotation).Inc()
}
