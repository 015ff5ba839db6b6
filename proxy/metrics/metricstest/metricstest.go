// Package metricstest reads a proxy's /metrics for tests that assert
// traffic crossed it: the network-namespace suite and the end-to-end suite
// on a real cluster.
package metricstest

import (
	"fmt"
	"io"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is one scrape, by metric name.
type Families map[string]*dto.MetricFamily

// Parse reads the Prometheus text format.
func Parse(r io.Reader) (Families, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return fams, nil
}

// Sum adds up the counters (or gauges) named name whose labels include
// every pair in labels ("direction", "inbound", ...). A histogram counts
// its observations.
func (f Families) Sum(name string, labels ...string) float64 {
	fam, ok := f[name]
	if !ok {
		return 0
	}
	var total float64
metric:
	for _, s := range fam.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if !HasLabel(s, labels[i], labels[i+1]) {
				continue metric
			}
		}
		switch {
		case s.Counter != nil:
			total += s.GetCounter().GetValue()
		case s.Gauge != nil:
			total += s.GetGauge().GetValue()
		case s.Histogram != nil:
			total += float64(s.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// HasLabel reports whether s carries the label name=value.
func HasLabel(s *dto.Metric, name, value string) bool {
	for _, l := range s.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
