package viz

import (
	"io"
	"math"
	"slices"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The reference the streaming parser is held to: the scrape as it read a
// body before parse.go, with expfmt's TextParser into every family and
// fromFamilies folding the few it uses. Tests compare the two on the real
// proxy's output and on generated expositions.

// parseExpfmt reads body the old way.
func parseExpfmt(body io.Reader) (float64, map[labels]*counters, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(body)
	if err != nil {
		return 0, nil, err
	}
	start, series := fromFamilies(families)
	return start, series, nil
}

// fromFamilies folds the parsed families into counters per label set and
// returns them with the process start time (0 when not exported).
// Families and labels it does not know are ignored, so a proxy that adds
// some does not break the scrape.
func fromFamilies(families map[string]*dto.MetricFamily) (float64, map[labels]*counters) {
	series := map[labels]*counters{}
	get := func(m *dto.Metric) *counters {
		l := labelsOf(m)
		c := series[l]
		if c == nil {
			c = &counters{}
			series[l] = c
		}
		return c
	}
	for _, m := range families[metricResponses].GetMetric() {
		c, v := get(m), value(m)
		c.Responses += v
		if labelValue(m, "classification") == "success" {
			c.Successes += v
		}
	}
	for _, m := range families[metricLatency].GetMetric() {
		if h, ok := histogramOf(m); ok {
			get(m).Latency = h
		}
	}
	tcp := []struct {
		name string
		add  func(*counters, float64)
	}{
		{metricTCPOpen, func(c *counters, v float64) { c.TCPOpen += v }},
		{metricTCPClose, func(c *counters, v float64) { c.TCPClose += v }},
		{metricTCPConns, func(c *counters, v float64) { c.OpenConns += v }},
		{metricReadBytes, func(c *counters, v float64) { c.ReadBytes += v }},
		{metricWriteBytes, func(c *counters, v float64) { c.WriteBytes += v }},
	}
	for _, f := range tcp {
		for _, m := range families[f.name].GetMetric() {
			f.add(get(m), value(m))
		}
	}
	// Denials are summed over server, authz and client_id into one label
	// set per pod: the API shows a workload's denials, not who was denied
	// (mesh authz and the proxies' own metrics tell that), and a label set
	// per client would grow with the clients.
	for _, name := range []string{metricHTTPAuthz, metricTCPAuthz} {
		for _, m := range families[name].GetMetric() {
			if labelValue(m, "decision") != decisionDeny {
				continue
			}
			c := series[authzLabels]
			if c == nil {
				c = &counters{}
				series[authzLabels] = c
			}
			c.Denied += value(m)
		}
	}
	var start float64
	if ms := families[metricStartTime].GetMetric(); len(ms) > 0 {
		start = value(ms[0])
	}
	return start, series
}

// labelsOf returns the label set of m.
func labelsOf(m *dto.Metric) labels {
	var l labels
	for _, p := range m.GetLabel() {
		v := p.GetValue()
		switch p.GetName() {
		case "direction":
			l.Direction = v
		case "authority":
			l.Authority = v
		case "target_addr":
			l.TargetAddr = v
		case "dst_namespace":
			l.DstNamespace = v
		case "dst_workload":
			l.DstWorkload = v
		case "dst_service":
			l.DstService = v
		case "client_id":
			l.ClientID = v
		case "server_id":
			l.ServerID = v
		case "route_kind":
			l.RouteKind = v
		case "route_namespace":
			l.RouteNamespace = v
		case "route_name":
			l.RouteName = v
		case "route_rule":
			l.RouteRule = v
		}
	}
	return l
}

func labelValue(m *dto.Metric, name string) string {
	for _, p := range m.GetLabel() {
		if p.GetName() == name {
			return p.GetValue()
		}
	}
	return ""
}

// value returns the value of a counter, gauge or untyped sample; NaN and
// negative values count as 0, as no series here can hold them.
func value(m *dto.Metric) float64 {
	var v float64
	switch {
	case m.Counter != nil:
		v = m.GetCounter().GetValue()
	case m.Gauge != nil:
		v = m.GetGauge().GetValue()
	case m.Untyped != nil:
		v = m.GetUntyped().GetValue()
	}
	if !(v > 0) || math.IsInf(v, 1) {
		return 0
	}
	return v
}

// histogramOf returns m's buckets, ending with +Inf (added from the
// sample count when the exposition left it out), and false when m is not
// a usable histogram.
func histogramOf(m *dto.Metric) (histogram, bool) {
	hm := m.GetHistogram()
	if hm == nil {
		return histogram{}, false
	}
	var h histogram
	for _, b := range hm.GetBucket() {
		ub := b.GetUpperBound()
		c := float64(b.GetCumulativeCount())
		if b.CumulativeCountFloat != nil {
			c = b.GetCumulativeCountFloat()
		}
		if math.IsNaN(ub) || !(c >= 0) {
			return histogram{}, false
		}
		h.Bounds = append(h.Bounds, ub)
		h.Counts = append(h.Counts, c)
	}
	if !slices.IsSorted(h.Bounds) {
		return histogram{}, false
	}
	if n := len(h.Bounds); n == 0 || !math.IsInf(h.Bounds[n-1], 1) {
		total := float64(hm.GetSampleCount())
		if hm.SampleCountFloat != nil {
			total = hm.GetSampleCountFloat()
		}
		h.Bounds = append(h.Bounds, math.Inf(1))
		h.Counts = append(h.Counts, total)
	}
	// Cumulative counts never go down; a histogram that does is broken.
	for i := 1; i < len(h.Counts); i++ {
		if h.Counts[i] < h.Counts[i-1] {
			return histogram{}, false
		}
	}
	return h, true
}
