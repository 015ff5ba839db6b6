package viz

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestScrape reads a proxy's metrics as the real client library writes
// them, and refuses what a proxy does not answer.
func TestScrape(t *testing.T) {
	started := time.Unix(1_700_000_000, 0)
	p := newProxy(t, started)
	p.serve(webToBack, 3, 200, 30*time.Millisecond)
	p.serve(webToBack, 1, 500, 2*time.Second)
	p.serve(webInbound, 2, 404, time.Millisecond)
	p.connect(webTCP, 5, 2, 100, 200)
	p.authorize(authz{http: true, server: "web", policy: "p", clientID: webID, decision: "allow"}, 9)
	p.authorize(authz{http: true, server: "web", clientID: backendID, decision: "deny"}, 4)
	p.authorize(authz{server: "web-tcp", decision: "deny"}, 3)
	p.authorize(authz{http: true, server: "web", decision: "audit"}, 8)

	slow := make(chan struct{})
	servers := map[string]http.HandlerFunc{
		"error status": func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) },
		"not metrics":  func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "<html>hello</html>\n") },
		"too large": func(w http.ResponseWriter, _ *http.Request) {
			line := strings.Repeat("x", 100) + " 1\n"
			for range maxScrapeBytes/len(line) + 1 {
				fmt.Fprint(w, line)
			}
		},
		"hangs": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-slow:
			case <-r.Context().Done():
			}
		},
	}
	c := newCluster()
	c.route("10.0.0.1:4191", p.addr)
	i := 2
	for _, h := range servers {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		c.route(fmt.Sprintf("10.0.0.%d:4191", i), srv.Listener.Addr().String())
		i++
	}
	defer close(slow)
	v, _ := c.start(t, func(cfg *Config) { cfg.ScrapeTimeout = 200 * time.Millisecond })

	r := v.scrape(context.Background(), podInfo{Name: "web", IP: "10.0.0.1"})
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.start != float64(started.Unix()) {
		t.Errorf("process start %v, want %v", r.start, started.Unix())
	}
	out, in, tcp := r.series[webToBack], r.series[webInbound], r.series[webTCP]
	if out == nil || out.Responses != 4 || out.Successes != 3 || len(out.Latency.Bounds) != 20 || out.Latency.Counts[19] != 4 {
		t.Errorf("outbound counters %+v", out)
	}
	if in == nil || in.Responses != 2 || in.Successes != 2 {
		t.Errorf("inbound counters %+v: a 404 is a success", in)
	}
	if tcp == nil || tcp.TCPOpen != 5 || tcp.TCPClose != 2 || tcp.OpenConns != 3 || tcp.ReadBytes != 100 || tcp.WriteBytes != 200 {
		t.Errorf("tcp counters %+v", tcp)
	}
	// Denials of both families, of every server and client, in one label
	// set; allowed and audited ones are not denials.
	if d := r.series[authzLabels]; d == nil || d.Denied != 7 || d.Responses != 0 || d.TCPOpen != 0 {
		t.Errorf("authz counters %+v, want 7 denials alone", d)
	}
	if len(r.series) != 4 {
		t.Errorf("%d label sets, want 4 (outbound, inbound, tcp, denials)", len(r.series))
	}

	for ip := 2; ip < i; ip++ {
		r := v.scrape(context.Background(), podInfo{Name: "bad", IP: fmt.Sprintf("10.0.0.%d", ip)})
		if r.err == nil || r.series != nil {
			t.Errorf("10.0.0.%d: scrape succeeded, want an error", ip)
		}
	}
	if r := v.scrape(context.Background(), podInfo{IP: "10.0.0.99"}); r.err == nil {
		t.Error("scrape of an unreachable pod succeeded")
	}
}

// TestHistogramOf covers histograms that cannot be used.
func TestHistogramOf(t *testing.T) {
	parse := func(text string) histogram {
		t.Helper()
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		_, series := fromFamilies(fams)
		for _, c := range series {
			return c.Latency
		}
		return histogram{}
	}
	const head = "# TYPE mesh_proxy_http_response_latency_seconds histogram\n"
	h := parse(head + `mesh_proxy_http_response_latency_seconds_bucket{le="0.1"} 3
mesh_proxy_http_response_latency_seconds_sum 1
mesh_proxy_http_response_latency_seconds_count 5
`)
	if len(h.Bounds) != 2 || !math.IsInf(h.Bounds[1], 1) || h.Counts[1] != 5 {
		t.Errorf("histogram without +Inf: %+v, want +Inf from the count", h)
	}
	h = parse(head + `mesh_proxy_http_response_latency_seconds_bucket{le="0.1"} 3
mesh_proxy_http_response_latency_seconds_bucket{le="0.2"} 2
mesh_proxy_http_response_latency_seconds_bucket{le="+Inf"} 3
mesh_proxy_http_response_latency_seconds_count 3
`)
	if h.Bounds != nil {
		t.Errorf("decreasing buckets: %+v, want the histogram ignored", h)
	}
}

// FuzzScrapeBody feeds what a pod could answer on its admin port through
// the parser, the folding into counters and the store: nothing may panic,
// and no count may go negative. Seeds: a real proxy's exposition, a
// histogram missing buckets, and garbage.
func FuzzScrapeBody(f *testing.F) {
	p := newProxy(f, time.Now())
	p.serve(webToBack, 3, 200, 30*time.Millisecond)
	p.connect(webTCP, 2, 1, 10, 20)
	p.authorize(authz{http: true, server: "web", clientID: backendID, decision: "deny"}, 2)
	var real bytes.Buffer
	fams, _ := p.reg.Gather()
	for _, fam := range fams {
		expfmt.MetricFamilyToText(&real, fam)
	}
	f.Add(real.Bytes())
	f.Add([]byte("# TYPE mesh_proxy_http_response_latency_seconds histogram\nmesh_proxy_http_response_latency_seconds_bucket{le=\"NaN\"} 1\n"))
	f.Add([]byte("mesh_proxy_http_responses_total{direction=\"inbound\",classification=\"success\"} -5\n"))
	f.Add([]byte("\x00garbage{"))
	f.Fuzz(func(t *testing.T, body []byte) {
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			return
		}
		start, series := fromFamilies(fams)
		s := newStore(DefaultRetention, 100)
		pod := testPod("fuzz", time.Time{})
		s.apply(round(0), []scrapeResult{{pod: pod, start: start, series: series}}, liveSet(pod))
		s.apply(round(1), []scrapeResult{{pod: pod, series: map[labels]*counters{}}}, liveSet(pod))
		s.apply(round(2), []scrapeResult{{pod: pod, start: start, series: series}}, liveSet(pod))
		for _, st := range s.steps {
			for _, smp := range st.Samples {
				for _, b := range smp.Buckets {
					if b.N == 0 || math.IsNaN(b.LE) {
						t.Fatalf("bucket %+v stored", b)
					}
				}
			}
		}
		acc := make([]accum, 1)
		w := s.sum(time.Minute, testInterval, acc, func(*seriesKey) int { return 0 })
		st := acc[0].stats(w.Secs)
		for _, q := range []*float64{st.LatencyP50, st.LatencyP95, st.LatencyP99} {
			if q != nil && (math.IsNaN(*q) || *q < 0) {
				t.Fatalf("percentile %v", *q)
			}
		}
	})
}
