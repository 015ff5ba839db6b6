package viz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/types"
)

// Names of the series a scrape reads (docs/metrics.md).
const (
	metricResponses  = "mesh_proxy_http_responses_total"
	metricLatency    = "mesh_proxy_http_response_latency_seconds"
	metricTCPOpen    = "mesh_proxy_tcp_open_total"
	metricTCPClose   = "mesh_proxy_tcp_close_total"
	metricTCPConns   = "mesh_proxy_tcp_open_connections"
	metricReadBytes  = "mesh_proxy_tcp_read_bytes_total"
	metricWriteBytes = "mesh_proxy_tcp_write_bytes_total"
	metricStartTime  = "process_start_time_seconds"
	// The authorization decisions of the proxies' inbound side, per
	// request (HTTP) and per connection (opaque TCP), labelled server,
	// authz, client_id and decision (allow, deny or audit).
	metricHTTPAuthz = "mesh_proxy_inbound_http_authz_total"
	metricTCPAuthz  = "mesh_proxy_inbound_tcp_authz_total"
)

// maxScrapeBytes bounds the body of one scrape. A proxy exports a few
// hundred series (docs/metrics.md), tens of kilobytes; a body larger than
// this is not a mesh proxy's and is refused rather than read.
const maxScrapeBytes = 8 << 20

// errTooLarge reports a scrape body over maxScrapeBytes.
var errTooLarge = errors.New("metrics larger than 8 MiB")

// acceptHeader asks for the Prometheus text format, the one the parser
// reads.
const acceptHeader = "text/plain;version=0.0.4;q=1,*/*;q=0.1"

// newScrapeClient returns the HTTP client of the scrapes: one idle
// connection kept per proxy between scrapes, as Prometheus does.
func newScrapeClient(cfg Config) *http.Client {
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: cfg.ScrapeTimeout}).DialContext
	}
	return &http.Client{Transport: &http.Transport{
		DialContext:           dial,
		MaxIdleConns:          0, // no limit but the per-host one
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       3 * cfg.Interval,
		ResponseHeaderTimeout: cfg.ScrapeTimeout,
	}}
}

// scrapeAll scrapes pods with at most cfg.Concurrency scrapes at a time,
// each within cfg.ScrapeTimeout, and returns one result per pod.
func (v *Viz) scrapeAll(ctx context.Context, pods []podInfo) []scrapeResult {
	results := make([]scrapeResult, len(pods))
	sem := make(chan struct{}, v.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range pods {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			results[i] = scrapeResult{pod: pods[i], err: ctx.Err()}
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i] = v.scrape(ctx, pods[i])
		})
	}
	wg.Wait()
	return results
}

// scrape reads one pod's proxy metrics.
func (v *Viz) scrape(ctx context.Context, pod podInfo) scrapeResult {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.ScrapeTimeout)
	defer cancel()
	r := scrapeResult{pod: pod}
	url := "http://" + net.JoinHostPort(pod.IP, strconv.Itoa(v.cfg.MetricsPort)) + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Accept", acceptHeader)
	resp, err := v.client.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		r.err = fmt.Errorf("GET %s: %s", url, resp.Status)
		return r
	}
	body := &limitedReader{r: resp.Body, left: maxScrapeBytes}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(body)
	if body.over {
		err = errTooLarge
	}
	if err != nil {
		r.err = fmt.Errorf("GET %s: %w", url, err)
		return r
	}
	r.start, r.series = fromFamilies(families)
	return r
}

// limitedReader fails once it has read left bytes, unlike io.LimitReader,
// which ends quietly and would pass a cut body for a whole one.
type limitedReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		l.over = true
		return 0, errTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
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

// targets returns the pods to scrape: Running, with an IP, and carrying
// mesh.dev/proxy-version, the mark of an injected pod.
func (v *Viz) targets() ([]podInfo, map[types.UID]bool, error) {
	pods, err := v.pods.List(everything)
	if err != nil {
		return nil, nil, err
	}
	var out []podInfo
	live := map[types.UID]bool{}
	for _, p := range pods {
		if !scrapeable(p) {
			continue
		}
		out = append(out, v.podInfo(p))
		live[p.UID] = true
	}
	return out, live, nil
}
