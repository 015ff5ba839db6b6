package viz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mesh-dev/mesh/internal/names"
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

// maxScrapeBytes bounds the body of one scrape, enforced while it is
// read. It fits the largest /metrics a proxy serves: at its series bound
// (docs/metrics.md: 10,655 series, plus about 100 of the Go runtime and
// the process) with the names of a cluster, a proxy serves 4.1 MiB
// (testdata/proxy-metrics-bound.txt.gz), the HTTP series' route labels
// included; 8 MiB is 780 bytes for each of those 10,750 lines, of which
// the series' names and the label syntax take about 260, leaving room
// for label values twice as long as usual. A proxy with a few dozen
// label sets, the common case, serves under 100 KiB. The body is counted
// after the transport's gzip is undone, so a small compressed body
// cannot expand past the cap.
const maxScrapeBytes = 8 << 20

// errTooLarge reports a scrape body over maxScrapeBytes.
var errTooLarge = fmt.Errorf("the body is over %d MiB, larger than any mesh proxy's /metrics (docs/metrics.md): is its %s container a mesh proxy?",
	maxScrapeBytes>>20, names.ProxyContainerName)

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

// scrapeAll scrapes targets with at most cfg.Concurrency scrapes at a
// time, each within cfg.ScrapeTimeout, and returns one result per target.
func (v *Viz) scrapeAll(ctx context.Context, targets []scrapeTarget) []scrapeResult {
	results := make([]scrapeResult, len(targets))
	sem := make(chan struct{}, v.cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range targets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			results[i] = scrapeResult{pod: targets[i].pod, err: ctx.Err()}
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i] = v.scrape(ctx, targets[i])
		})
	}
	wg.Wait()
	if ctx.Err() == nil { // a round cut short failed nothing
		v.countErrors(results)
	}
	return results
}

// scrape reads the metrics of one pod's proxy. A failure is a
// *scrapeError.
func (v *Viz) scrape(ctx context.Context, t scrapeTarget) scrapeResult {
	url := "http://" + net.JoinHostPort(t.pod.IP, strconv.Itoa(t.port)) + "/metrics"
	start, series, err := v.fetch(ctx, url)
	if err != nil {
		return scrapeResult{pod: t.pod, err: &scrapeError{pod: t.pod.Namespace + "/" + t.pod.Name, url: url, err: err}}
	}
	return scrapeResult{pod: t.pod, start: start, series: series}
}

// fetch GETs url and parses the body as it arrives. ScrapeTimeout bounds
// the whole exchange, the body's last byte included, so a proxy that
// trickles its metrics holds a slot for one timeout at most; a body over
// maxScrapeBytes is refused at that byte and its connection closed
// rather than drained.
func (v *Viz) fetch(ctx context.Context, url string) (float64, map[labels]*counters, error) {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.ScrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", acceptHeader)
	resp, err := v.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return 0, nil, &statusError{status: resp.Status}
	}
	return parseMetrics(&cappedReader{r: resp.Body, left: maxScrapeBytes})
}

// cappedReader reads r up to left bytes and fails with errTooLarge when r
// holds more, where io.LimitReader would end quietly and pass a cut body
// for a whole one.
type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// At the cap: a body of exactly left bytes ends here, a longer
		// one has a byte more.
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, errTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// statusError is a /metrics answered with another status than 200.
type statusError struct{ status string }

func (e *statusError) Error() string { return "answered " + e.status }

// scrapeError is a failed scrape of one pod's proxy.
type scrapeError struct {
	pod, url string
	err      error
}

func (e *scrapeError) Error() string {
	return fmt.Sprintf("scraping pod %s at %s: %v", e.pod, e.url, e.err)
}

func (e *scrapeError) Unwrap() error { return e.err }

// Reasons of mesh_controller_viz_scrape_errors_total.
const (
	// reasonTooLarge: a body over maxScrapeBytes, a line over
	// maxLineBytes, more label sets than a proxy exports, or a histogram
	// of more buckets.
	reasonTooLarge = "too_large"
	// reasonMalformed: not the Prometheus text format.
	reasonMalformed = "malformed"
	// reasonTimeout: no whole answer within ScrapeTimeout.
	reasonTimeout = "timeout"
	// reasonStatus: an HTTP status other than 200.
	reasonStatus = "http_status"
	// reasonUnreachable: no connection, or one broken before the end.
	reasonUnreachable = "unreachable"
)

var scrapeErrorReasons = []string{reasonTooLarge, reasonMalformed, reasonTimeout, reasonStatus, reasonUnreachable}

// reasonOf returns the reason a scrape failed with err.
func reasonOf(err error) string {
	var syntax *syntaxError
	var status *statusError
	var netErr net.Error
	switch {
	case errors.Is(err, errTooLarge), errors.Is(err, errLineTooLong), errors.Is(err, errTooManySeries), errors.Is(err, errTooManyBuckets):
		return reasonTooLarge
	case errors.As(err, &syntax):
		return reasonMalformed
	case errors.As(err, &status):
		return reasonStatus
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return reasonTimeout
	}
	return reasonUnreachable
}

// countErrors counts the failed scrapes of a round by reason in
// mesh_controller_viz_scrape_errors_total, on the component's registry
// (none without one). Each round registers the counter again: the
// registry answers with the one already registered, so the counts carry
// on without a field in Viz.
func (v *Viz) countErrors(results []scrapeResult) {
	if v.cfg.Registerer == nil {
		return
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mesh_controller_viz_scrape_errors_total",
		Help: "Scrapes of proxy metrics that failed, by reason: too_large (over the caps on the body, a line, the label sets or a histogram's buckets), malformed, timeout, http_status, unreachable.",
	}, []string{"reason"})
	if err := v.cfg.Registerer.Register(vec); err != nil {
		var already prometheus.AlreadyRegisteredError
		if !errors.As(err, &already) {
			v.cfg.Log.Error("viz: registering the scrape error counter", "err", err)
			return
		}
		vec = already.ExistingCollector.(*prometheus.CounterVec)
	}
	for _, reason := range scrapeErrorReasons {
		vec.WithLabelValues(reason) // exported at 0 before the first failure
	}
	for _, r := range results {
		if r.err != nil {
			vec.WithLabelValues(reasonOf(r.err)).Inc()
		}
	}
}

// scrapeTarget is a pod to scrape, and the port its proxy serves /metrics
// on.
type scrapeTarget struct {
	pod  podInfo
	port int
}

// targets returns the pods to scrape: those running the proxy the
// injector adds (see scrapeable), at the admin port that proxy declares.
func (v *Viz) targets() ([]scrapeTarget, map[types.UID]bool, error) {
	pods, err := v.pods.List(everything)
	if err != nil {
		return nil, nil, err
	}
	var out []scrapeTarget
	live := map[types.UID]bool{}
	for _, p := range pods {
		if !scrapeable(p) {
			continue
		}
		port, _ := proxyAdminPort(p)
		out = append(out, scrapeTarget{pod: v.podInfo(p), port: port})
		live[p.UID] = true
	}
	return out, live, nil
}
