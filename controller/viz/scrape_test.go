package viz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// podAt is the scrape target of a pod at ip, its proxy's admin port the
// default.
func podAt(name, ip string) scrapeTarget {
	return scrapeTarget{pod: podInfo{Namespace: "shop", Name: name, IP: ip}, port: 4191}
}

// TestScrape reads a proxy's metrics as the real client library writes
// them.
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
	c := newCluster()
	c.route("10.0.0.1:4191", p.addr)
	v, _ := c.start(t, nil)

	r := v.scrape(context.Background(), podAt("web", "10.0.0.1"))
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
}

// TestScrapePort: the scrape goes to the port the target names.
func TestScrapePort(t *testing.T) {
	p := newProxy(t, time.Now())
	p.serve(webInbound, 2, 200, time.Millisecond)
	c := newCluster()
	c.route("10.0.0.1:9991", p.addr)
	v, _ := c.start(t, nil)
	tgt := podAt("web", "10.0.0.1")
	tgt.port = 9991
	if r := v.scrape(context.Background(), tgt); r.err != nil || r.series[webInbound] == nil {
		t.Errorf("scrape at :9991: %v, %v", r.series, r.err)
	}
}

// TestScrapeFailures: what a proxy does not answer is refused, with an
// error naming the pod, and counted by reason.
func TestScrapeFailures(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc // nil: nothing listens
		reason  string
	}{
		{name: "error status", reason: reasonStatus,
			handler: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) }},
		{name: "not metrics", reason: reasonMalformed,
			handler: func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "<html>hello</html>\n") }},
		{name: "too large", reason: reasonTooLarge,
			handler: func(w http.ResponseWriter, _ *http.Request) {
				// Long lines, few to parse: the cap, not the clock, ends it.
				line := []byte(strings.Repeat("x", maxLineBytes/2) + " 1\n")
				for range maxScrapeBytes/len(line) + 1 {
					w.Write(line)
				}
			}},
		{name: "hangs", reason: reasonTimeout,
			handler: func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{name: "trickles", reason: reasonTimeout, handler: trickle},
		{name: "unreachable", reason: reasonUnreachable},
	}
	c := newCluster()
	var targets []scrapeTarget
	for i, tc := range tests {
		ip := fmt.Sprintf("10.0.0.%d", i+1)
		if tc.handler != nil {
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			c.route(ip+":4191", srv.Listener.Addr().String())
		}
		targets = append(targets, podAt(tc.name, ip))
	}
	reg := prometheus.NewRegistry()
	v, _ := c.start(t, func(cfg *Config) {
		cfg.ScrapeTimeout = time.Second
		cfg.Registerer = reg
	})
	// Twice: the second round counts into the counter the first
	// registered.
	for range 2 {
		for i, r := range v.scrapeAll(context.Background(), targets) {
			tc := tests[i]
			if r.err == nil || r.series != nil {
				t.Errorf("%s: scrape succeeded, want an error", tc.name)
				continue
			}
			if got := reasonOf(r.err); got != tc.reason {
				t.Errorf("%s: reason %s, want %s (%v)", tc.name, got, tc.reason, r.err)
			}
			if !strings.Contains(r.err.Error(), "pod shop/"+tc.name) {
				t.Errorf("%s: error %q does not name the pod", tc.name, r.err)
			}
		}
	}
	want := map[string]float64{reasonStatus: 2, reasonMalformed: 2, reasonTooLarge: 2, reasonTimeout: 4, reasonUnreachable: 2}
	if diff := diffCounts(want, scrapeErrorCounts(t, reg)); diff != "" {
		t.Errorf("mesh_controller_viz_scrape_errors_total (-want +got):\n%s", diff)
	}
}

// trickle serves valid metrics a line at a time, forever: a slowloris.
func trickle(w http.ResponseWriter, r *http.Request) {
	for i := 0; ; i++ {
		fmt.Fprintf(w, "mesh_proxy_tcp_open_total{target_addr=\"10.0.0.1:%d\"} 1\n", i%1000)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// scrapeErrorCounts returns mesh_controller_viz_scrape_errors_total by
// reason.
func scrapeErrorCounts(t testing.TB, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "mesh_controller_viz_scrape_errors_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			out[labelValue(m, "reason")] = m.GetCounter().GetValue()
		}
	}
	return out
}

// diffCounts compares counts by reason, a missing reason counting 0.
func diffCounts(want, got map[string]float64) string {
	var b strings.Builder
	for _, reason := range scrapeErrorReasons {
		if _, ok := got[reason]; !ok {
			fmt.Fprintf(&b, "reason %s not exported\n", reason)
		}
		if want[reason] != got[reason] {
			fmt.Fprintf(&b, "-%s %v\n+%s %v\n", reason, want[reason], reason, got[reason])
		}
	}
	return b.String()
}

// TestScrapeHostileMetrics: pods serving 50 MB of /metrics, scraped by
// every slot at once, round after round, cost each scrape its caps and
// no more: each is refused as too_large without reading the body whole,
// allocates a few MiB at most, and the heap is where it was afterwards.
// (expfmt, before, held up to 8 MiB of body per scrape in families of
// protobuf messages, several times that in heap.)
func TestScrapeHostileMetrics(t *testing.T) {
	const (
		size   = 50 << 20
		rounds = 2
	)
	tests := []struct {
		name string
		// chunk appends the i-th piece of the body to buf, without an
		// allocation: the server shares the process whose allocations are
		// measured.
		chunk func(buf []byte, i int) []byte
	}{
		{name: "lines of families viz does not read", chunk: func(buf []byte, _ int) []byte {
			for range 1000 {
				buf = append(buf, "hostile_series{path=\"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"} 1\n"...)
			}
			return buf
		}},
		{name: "a label set per line of a family viz reads", chunk: func(buf []byte, i int) []byte {
			for j := range 1000 {
				buf = append(buf, "mesh_proxy_tcp_open_total{direction=\"inbound\",target_addr=\""...)
				buf = strconv.AppendInt(append(strconv.AppendInt(buf, int64(i), 10), '-'), int64(j), 10)
				buf = append(buf, "\"} 1\n"...)
			}
			return buf
		}},
		{name: "one endless line", chunk: func(buf []byte, _ int) []byte {
			for range 64 << 10 {
				buf = append(buf, 'x')
			}
			return buf
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var served atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				buf := make([]byte, 0, 128<<10)
				for i, n := 0, 0; n < size; i++ {
					buf = tc.chunk(buf[:0], i)
					m, err := w.Write(buf)
					served.Add(int64(m))
					n += m
					if err != nil {
						return // the scrape hung up
					}
				}
			}))
			c := newCluster()
			var targets []scrapeTarget
			for i := range DefaultConcurrency {
				ip := fmt.Sprintf("10.0.1.%d", i+1)
				c.route(ip+":4191", srv.Listener.Addr().String())
				targets = append(targets, podAt(fmt.Sprintf("hostile-%d", i), ip))
			}
			reg := prometheus.NewRegistry()
			v, _ := c.start(t, func(cfg *Config) {
				cfg.ScrapeTimeout = time.Minute // the caps end these scrapes, not the clock
				cfg.Interval = time.Minute
				cfg.Registerer = reg
			})
			before := heap()
			for range rounds {
				for _, r := range v.scrapeAll(context.Background(), targets) {
					if reasonOf(r.err) != reasonTooLarge {
						t.Fatalf("%s: %v, want a too_large error", r.pod.Name, r.err)
					}
				}
			}
			v.client.CloseIdleConnections()
			after := heap()
			srv.Close() // waits for the handlers, so served is final
			scrapes := int64(rounds * len(targets))
			if perScrape := (after.TotalAlloc - before.TotalAlloc) / uint64(scrapes); perScrape > 8<<20 {
				t.Errorf("%d bytes allocated per scrape, want at most 8 MiB", perScrape)
			}
			if after.HeapInuse > before.HeapInuse+16<<20 {
				t.Errorf("heap in use went from %d to %d bytes", before.HeapInuse, after.HeapInuse)
			}
			if perScrape := served.Load() / scrapes; perScrape > size/2 {
				t.Errorf("the server wrote %d bytes per scrape: the scrape read on past its cap", perScrape)
			}
			t.Logf("per scrape: %d KiB allocated, %d KiB served; heap in use %d → %d KiB",
				(after.TotalAlloc-before.TotalAlloc)/uint64(scrapes)>>10, served.Load()/scrapes>>10, before.HeapInuse>>10, after.HeapInuse>>10)
			if got := scrapeErrorCounts(t, reg)[reasonTooLarge]; got != float64(scrapes) {
				t.Errorf("too_large counted %v times, want %d", got, scrapes)
			}
		})
	}
}

// heap returns the memory statistics after a collection.
func heap() runtime.MemStats {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// TestCappedReader: a body of exactly the cap is whole; a byte more is
// too large, not a quiet end.
func TestCappedReader(t *testing.T) {
	for _, tc := range []struct {
		size    int
		wantErr error
	}{
		{size: 10}, {size: 9}, {size: 11, wantErr: errTooLarge},
	} {
		body := &cappedReader{r: bytes.NewReader(make([]byte, tc.size)), left: 10}
		var buf [4]byte
		n, err := 0, error(nil)
		for err == nil {
			var m int
			m, err = body.Read(buf[:])
			n += m
		}
		if tc.wantErr == nil && (err.Error() != "EOF" || n != tc.size) || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
			t.Errorf("%d bytes capped at 10: read %d, %v", tc.size, n, err)
		}
	}
}

// FuzzScrapeBody feeds what a pod could answer on its admin port through
// the parser and the store: nothing may panic, and no count may go
// negative. Seeds: a real proxy's exposition, a histogram missing
// buckets, and garbage.
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
		start, series, err := parseMetrics(bytes.NewReader(body))
		if err != nil {
			return
		}
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
