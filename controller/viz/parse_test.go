package viz

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// The goldens are a real proxy's /metrics, written by
// `go run ./controller/viz/testdata/proxymetrics` from proxy/metrics.
const (
	goldenBusy  = "proxy-metrics.txt"
	goldenBound = "proxy-metrics-bound.txt.gz"
)

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// equateCounters compares parse results, NaN equal to NaN.
var equateCounters = cmpopts.EquateNaNs()

// TestParseGoldens: on a real proxy's output the streaming parse gives
// the store exactly what expfmt and fromFamilies gave it.
func TestParseGoldens(t *testing.T) {
	for _, name := range []string{goldenBusy, goldenBound} {
		t.Run(name, func(t *testing.T) {
			body := readGolden(t, name)
			wantStart, want, err := parseExpfmt(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			p := newParser(bytes.NewReader(body))
			start, got, err := p.parse()
			if err != nil {
				t.Fatal(err)
			}
			if start != wantStart || start == 0 {
				t.Errorf("start %v, want %v", start, wantStart)
			}
			if diff := cmp.Diff(want, got, equateCounters); diff != "" {
				t.Errorf("label sets (-expfmt +streaming):\n%s", diff)
			}
			t.Logf("%d bytes, %d label sets, %d bytes kept", len(body), len(got), p.kept)
		})
	}
}

// TestParseBusyGolden checks what the golden of a busy proxy holds, so
// that the equivalence above is not two parsers agreeing on nothing.
func TestParseBusyGolden(t *testing.T) {
	_, series, err := parseMetrics(bytes.NewReader(readGolden(t, goldenBusy)))
	if err != nil {
		t.Fatal(err)
	}
	gateway := labels{Direction: inbound, Authority: "web.shop.svc.cluster.local:8080", TargetAddr: "10.244.1.7:8080",
		ClientID: "spiffe://cluster.local/ns/ingress/sa/gateway"}
	if c := series[gateway]; c == nil || c.Responses != 129 || c.Successes != 127 || c.Latency.Counts[len(c.Latency.Counts)-1] != 129 {
		t.Errorf("gateway's requests: %+v", c)
	}
	for _, authority := range []string{`we"b\shop`, "web\nshop"} {
		l := labels{Direction: inbound, Authority: authority, TargetAddr: "10.244.1.7:8080"}
		if c := series[l]; c == nil || c.Responses == 0 {
			t.Errorf("authority %q, escaped in the exposition: %+v", authority, c)
		}
	}
	canary := labels{Direction: outbound, Authority: "backend.shop.svc.cluster.local:9090", TargetAddr: "10.96.0.20:9090",
		DstNamespace: "shop", DstWorkload: "deployment/backend-v2", DstService: "backend-v2", ServerID: "spiffe://cluster.local/ns/shop/sa/backend",
		RouteKind: "HTTPRoute", RouteNamespace: "shop", RouteName: "backend-split", RouteRule: "canary"}
	if c := series[canary]; c == nil || c.Responses != 17 || c.Successes != 17 || c.Latency.Counts[len(c.Latency.Counts)-1] != 17 {
		t.Errorf("the route rule canary's requests: %+v", c)
	}
	if c := series[authzLabels]; c == nil || c.Denied != 6+3+4 {
		t.Errorf("denials: %+v, want 13", c)
	}
	db := labels{Direction: outbound, TargetAddr: "10.96.0.30:5432", DstNamespace: "shop", DstWorkload: "statefulset/db",
		ServerID: "spiffe://cluster.local/ns/shop/sa/db"}
	if c := series[db]; c == nil || c.TCPOpen != 8 || c.TCPClose != 3 || c.OpenConns != 5 || c.ReadBytes != 2_700_000 {
		t.Errorf("database connections: %+v", c)
	}
}

// TestBoundFitsCaps: a proxy at its series bound, the largest exposition
// a proxy serves, is read whole with room to spare under every cap.
func TestBoundFitsCaps(t *testing.T) {
	body := readGolden(t, goldenBound)
	if len(body) > maxScrapeBytes*2/3 {
		t.Errorf("a proxy at its bound serves %d bytes: maxScrapeBytes (%d) leaves less than half again for longer names", len(body), maxScrapeBytes)
	}
	p := newParser(bytes.NewReader(body))
	if _, _, err := p.parse(); err != nil {
		t.Fatal(err)
	}
	if p.kept > maxKeptBytes/2 {
		t.Errorf("a proxy at its bound keeps %d bytes, over half of maxKeptBytes (%d)", p.kept, maxKeptBytes)
	}
	longest := 0
	for line := range bytes.Lines(body) {
		longest = max(longest, len(line))
	}
	if longest > maxLineBytes/4 {
		t.Errorf("longest line %d bytes, over a quarter of maxLineBytes (%d)", longest, maxLineBytes)
	}
}

const (
	latencyType = "# TYPE mesh_proxy_http_response_latency_seconds histogram\n"
	inboundWebL = `direction="inbound",authority="web",target_addr="10.0.0.1:80"`
)

var inboundWebSet = labels{Direction: inbound, Authority: "web", TargetAddr: "10.0.0.1:80"}

// TestParse covers the text format a scrape reads, and what it refuses.
// Where expfmt reads the input too, both must agree, unless lenient says
// why they may not.
func TestParse(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name      string
		in        string
		wantStart float64
		want      map[labels]*counters
		wantErr   error // errLineTooLong, errTooManySeries, or any *syntaxError
		lenient   string
	}{
		{
			name: "empty", in: "", want: map[labels]*counters{},
		},
		{
			name: "comments, HELP and TYPE, blank lines and indentation",
			in: "# a comment\n\n#HELP mesh_proxy_tcp_open_total TCP \\\\ connections\n# TYPE mesh_proxy_tcp_open_total counter\n" +
				"   mesh_proxy_tcp_open_total{direction=\"inbound\"} 3\n\t\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1.7e+09\n",
			wantStart: 1.7e9,
			want:      map[labels]*counters{{Direction: inbound}: {TCPOpen: 3}},
		},
		{
			name: "escaped quotes, backslashes and newlines in label values",
			in:   `mesh_proxy_http_responses_total{direction="inbound",authority="a\"b\\c\nd",classification="success"} 2` + "\n",
			want: map[labels]*counters{{Direction: inbound, Authority: "a\"b\\c\nd"}: {Responses: 2, Successes: 2}},
		},
		{
			name: "blanks around labels, a trailing comma, labels in any order, unknown labels",
			in: "mesh_proxy_tcp_open_total { target_addr = \"10.0.0.1:80\" , zone=\"a\", direction=\"inbound\", } 1\n" +
				"mesh_proxy_tcp_open_total{direction=\"inbound\",zone=\"b\",target_addr=\"10.0.0.1:80\"} 2\n",
			want: map[labels]*counters{{Direction: inbound, TargetAddr: "10.0.0.1:80"}: {TCPOpen: 3}},
		},
		{
			name: "a quoted label name",
			in:   `mesh_proxy_tcp_open_total{"direction"="inbound","zone.name"="a"} 1` + "\n",
			want: map[labels]*counters{{Direction: inbound}: {TCPOpen: 1}},
		},
		{
			name: "NaN, infinities and negative values count as 0, and still make the label set",
			in: "mesh_proxy_tcp_open_total{direction=\"inbound\"} NaN\nmesh_proxy_tcp_close_total{direction=\"inbound\"} +Inf\n" +
				"mesh_proxy_tcp_read_bytes_total{direction=\"inbound\"} -Inf\nmesh_proxy_tcp_write_bytes_total{direction=\"inbound\"} -3\n" +
				"mesh_proxy_tcp_open_connections{direction=\"inbound\"} 2.5e0\nprocess_start_time_seconds NaN\n",
			want: map[labels]*counters{{Direction: inbound}: {OpenConns: 2.5}},
		},
		{
			name: "timestamps are dropped",
			in:   "mesh_proxy_tcp_open_total{direction=\"inbound\"} 4 1700000000000\nmesh_proxy_tcp_close_total 1 -5\n",
			want: map[labels]*counters{{Direction: inbound}: {TCPOpen: 4}, {}: {TCPClose: 1}},
		},
		{
			name: "the first process start time counts",
			in:   "process_start_time_seconds 10\nprocess_start_time_seconds 20\n", wantStart: 10,
			want: map[labels]*counters{},
		},
		{
			name: "denials of both families, of every server and client, summed; allow and audit are not denials",
			in: `mesh_proxy_inbound_http_authz_total{server="web",authz="",client_id="a",decision="deny"} 2` + "\n" +
				`mesh_proxy_inbound_http_authz_total{server="web",authz="p",client_id="b",decision="allow"} 9` + "\n" +
				`mesh_proxy_inbound_tcp_authz_total{server="db",authz="",client_id="",decision="deny"} 3` + "\n" +
				`mesh_proxy_inbound_tcp_authz_total{server="db",authz="",client_id="",decision="audit"} 5` + "\n" +
				`mesh_proxy_tcp_open_total{direction="inbound"} 1` + "\n",
			want: map[labels]*counters{authzLabels: {Denied: 5, TCPOpen: 1}},
		},
		{
			name: "families a scrape does not read are skipped unchecked past their name",
			in: "go_info{version=\"go1.26\"} 1\nmesh_proxy_http_requests_total{direction=\"inbound\" 3 ] garbage\n" +
				"# TYPE go_gc_duration_seconds summary\ngo_gc_duration_seconds{quantile=\"0.5\"} 0\n" +
				"{\"mesh.other\",direction=\"inbound\"} 1\n\"mesh.other\"{direction=\"inbound\"} 1\n",
			want:    map[labels]*counters{},
			lenient: "expfmt reads every family",
		},
		{
			name: "histogram",
			in: latencyType +
				"mesh_proxy_http_response_latency_seconds_bucket{" + inboundWebL + ",le=\"0.1\"} 3\n" +
				"mesh_proxy_http_response_latency_seconds_bucket{" + inboundWebL + ",le=\"1\"} 5\n" +
				"mesh_proxy_http_response_latency_seconds_bucket{" + inboundWebL + ",le=\"+Inf\"} 6\n" +
				"mesh_proxy_http_response_latency_seconds_sum{" + inboundWebL + "} 2.5\n" +
				"mesh_proxy_http_response_latency_seconds_count{" + inboundWebL + "} 6\n",
			want: map[labels]*counters{inboundWebSet: {Latency: histogram{Bounds: []float64{0.1, 1, inf}, Counts: []float64{3, 5, 6}}}},
		},
		{
			name: "histogram without +Inf takes it from the count",
			in: latencyType +
				"mesh_proxy_http_response_latency_seconds_bucket{" + inboundWebL + ",le=\"0.1\"} 3\n" +
				"mesh_proxy_http_response_latency_seconds_count{" + inboundWebL + "} 5\n",
			want: map[labels]*counters{inboundWebSet: {Latency: histogram{Bounds: []float64{0.1, inf}, Counts: []float64{3, 5}}}},
		},
		{
			name: "histogram with float counts, le NaN dropped, labels in another order per line",
			in: latencyType +
				"mesh_proxy_http_response_latency_seconds_bucket{le=\"0.5\"," + inboundWebL + "} 1.5\n" +
				"mesh_proxy_http_response_latency_seconds_bucket{" + inboundWebL + ",le=\"NaN\"} 9\n" +
				"mesh_proxy_http_response_latency_seconds_bucket{target_addr=\"10.0.0.1:80\",authority=\"web\",direction=\"inbound\",le=\"+Inf\"} 2\n",
			want: map[labels]*counters{inboundWebSet: {Latency: histogram{Bounds: []float64{0.5, inf}, Counts: []float64{1.5, 2}}}},
		},
		{
			name: "histograms that differ in a label a label set lacks: the last wins",
			in: latencyType +
				"mesh_proxy_http_response_latency_seconds_bucket{" + inboundWebL + ",zone=\"a\",le=\"+Inf\"} 1\n" +
				"mesh_proxy_http_response_latency_seconds_bucket{" + inboundWebL + ",zone=\"b\",le=\"+Inf\"} 2\n",
			want: map[labels]*counters{inboundWebSet: {Latency: histogram{Bounds: []float64{inf}, Counts: []float64{2}}}},
		},
		{
			name: "unusable histograms are dropped: decreasing, unsorted, NaN count",
			in: latencyType +
				"mesh_proxy_http_response_latency_seconds_bucket{direction=\"a\",le=\"0.1\"} 3\n" +
				"mesh_proxy_http_response_latency_seconds_bucket{direction=\"a\",le=\"+Inf\"} 2\n" +
				"mesh_proxy_http_response_latency_seconds_bucket{direction=\"b\",le=\"1\"} 1\n" +
				"mesh_proxy_http_response_latency_seconds_bucket{direction=\"b\",le=\"0.1\"} 1\n" +
				"mesh_proxy_http_response_latency_seconds_bucket{direction=\"c\",le=\"0.1\"} NaN\n",
			want: map[labels]*counters{},
		},
		{
			name: "a latency family that is not a histogram is ignored",
			in: "mesh_proxy_http_response_latency_seconds_bucket{" + inboundWebL + ",le=\"+Inf\"} 1\n" +
				"mesh_proxy_http_response_latency_seconds{" + inboundWebL + "} 1\n",
			want: map[labels]*counters{},
		},
		{name: "not the text format", in: "<html>hello</html>\n", wantErr: &syntaxError{}},
		{name: "a name and nothing else", in: "mesh_proxy_tcp_open_total\n", wantErr: &syntaxError{}},
		{
			name: "a name glued to its value", in: "mesh_proxy_tcp_open_total-1 1\n", wantErr: &syntaxError{},
			lenient: "expfmt reads the value -1 (and timestamp 1) there; no client library writes a value without a blank",
		},
		{name: "no value", in: "mesh_proxy_tcp_open_total{direction=\"inbound\"}\n", wantErr: &syntaxError{}},
		{name: "value not a number", in: "mesh_proxy_tcp_open_total one\n", wantErr: &syntaxError{}},
		{name: "value with an underscore", in: "mesh_proxy_tcp_open_total 1_000\n", wantErr: &syntaxError{}},
		{name: "CRLF line ends", in: "mesh_proxy_tcp_open_total 1\r\n", wantErr: &syntaxError{}},
		{name: "blank after the value", in: "mesh_proxy_tcp_open_total 1 \n", wantErr: &syntaxError{}},
		{name: "timestamp not an integer", in: "mesh_proxy_tcp_open_total 1 1.5\n", wantErr: &syntaxError{}},
		{name: "garbage after the timestamp", in: "mesh_proxy_tcp_open_total 1 2 3\n", wantErr: &syntaxError{}},
		{name: "last line cut", in: "mesh_proxy_tcp_open_total 1\nmesh_proxy_tcp_open_total 2", wantErr: &syntaxError{}},
		{name: "unterminated label set", in: "mesh_proxy_tcp_open_total{direction=\"inbound\" 1\n", wantErr: &syntaxError{}},
		{name: "unterminated label value", in: "mesh_proxy_tcp_open_total{direction=\"inbound} 1\n", wantErr: &syntaxError{}},
		{name: "label value unquoted", in: "mesh_proxy_tcp_open_total{direction=inbound} 1\n", wantErr: &syntaxError{}},
		{name: "invalid escape", in: `mesh_proxy_tcp_open_total{direction="\t"} 1` + "\n", wantErr: &syntaxError{}},
		{name: "label value not UTF-8", in: "mesh_proxy_tcp_open_total{direction=\"\xff\"} 1\n", wantErr: &syntaxError{}},
		{name: "duplicate label", in: `mesh_proxy_tcp_open_total{direction="a",direction="b"} 1` + "\n", wantErr: &syntaxError{}},
		{name: "__name__ label", in: `mesh_proxy_tcp_open_total{__name__="x"} 1` + "\n", wantErr: &syntaxError{}},
		{name: "unknown type", in: "# TYPE mesh_proxy_tcp_open_total countr\n", wantErr: &syntaxError{}},
		{
			name: "second TYPE", in: "# TYPE mesh_proxy_tcp_open_total counter\n# TYPE mesh_proxy_tcp_open_total gauge\n",
			wantErr: &syntaxError{},
		},
		{name: "TYPE after samples", in: "mesh_proxy_tcp_open_total 1\n# TYPE mesh_proxy_tcp_open_total counter\n", wantErr: &syntaxError{}},
		{
			name: "a counter family of another type", in: "# TYPE mesh_proxy_tcp_open_total histogram\nmesh_proxy_tcp_open_total_bucket{le=\"1\"} 1\n",
			wantErr: &syntaxError{}, lenient: "expfmt reads it, and fromFamilies finds no counter in it",
		},
		{
			name: "negative bucket count", in: latencyType + "mesh_proxy_http_response_latency_seconds_bucket{le=\"1\"} -1\n",
			wantErr: &syntaxError{},
		},
		{
			name: "negative histogram count", in: latencyType + "mesh_proxy_http_response_latency_seconds_count -1\n",
			wantErr: &syntaxError{},
		},
		{name: "le not a number", in: latencyType + "mesh_proxy_http_response_latency_seconds_bucket{le=\"x\"} 1\n", wantErr: &syntaxError{}},
		{
			name: "duplicate label in a histogram", in: latencyType + "mesh_proxy_http_response_latency_seconds_bucket{zone=\"a\",zone=\"b\",le=\"1\"} 1\n",
			wantErr: &syntaxError{},
		},
		{
			name: "a line over maxLineBytes", in: "go_info{version=\"" + strings.Repeat("x", maxLineBytes) + "\"} 1\n",
			wantErr: errLineTooLong, lenient: "expfmt reads lines of any length",
		},
		{
			name: "more label sets than a proxy's", in: manyLabelSets(maxKeptBytes / keptPerSet),
			wantErr: errTooManySeries, lenient: "expfmt keeps everything",
		},
		{
			name: "a histogram of more buckets than a proxy's", in: manyBuckets(maxBuckets + 1),
			wantErr: errTooManyBuckets, lenient: "expfmt keeps everything",
		},
		{
			name: "a histogram of as many buckets as allowed", in: manyBuckets(maxBuckets),
			want: map[labels]*counters{{}: {Latency: histogram{Bounds: append(seq(maxBuckets-1), inf), Counts: seq(maxBuckets)}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start, got, err := parseMetrics(strings.NewReader(tc.in))
			oldStart, old, oldErr := parseExpfmt(strings.NewReader(tc.in))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr != nil:
				if !isError(err, tc.wantErr) {
					t.Errorf("error %v, want %T %v", err, tc.wantErr, tc.wantErr)
				}
				if oldErr == nil && tc.lenient == "" {
					t.Errorf("expfmt reads it: %v", old)
				}
				return
			}
			if start != tc.wantStart {
				t.Errorf("start %v, want %v", start, tc.wantStart)
			}
			if diff := cmp.Diff(tc.want, got, equateCounters); diff != "" {
				t.Errorf("label sets (-want +got):\n%s", diff)
			}
			if tc.lenient != "" {
				return
			}
			if oldErr != nil {
				t.Fatalf("expfmt refuses it: %v", oldErr)
			}
			if diff := cmp.Diff(old, got, equateCounters); diff != "" || oldStart != start {
				t.Errorf("expfmt read start %v, and (-expfmt +streaming):\n%s", oldStart, diff)
			}
		})
	}
}

// isError reports whether err is want, or a *syntaxError as want is.
func isError(err, want error) bool {
	var syntax *syntaxError
	if errors.As(want, &syntax) {
		return errors.As(err, &syntax)
	}
	return errors.Is(err, want)
}

// manyLabelSets returns n lines of distinct TCP label sets.
func manyLabelSets(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "mesh_proxy_tcp_open_total{direction=\"inbound\",target_addr=\"10.0.%d.%d:80\"} 1\n", i/250, i%250)
	}
	return b.String()
}

// manyBuckets returns a latency histogram of n buckets, the last +Inf.
func manyBuckets(n int) string {
	var b strings.Builder
	b.WriteString(latencyType)
	for i := range n - 1 {
		fmt.Fprintf(&b, "mesh_proxy_http_response_latency_seconds_bucket{le=\"%d\"} %d\n", i, i)
	}
	fmt.Fprintf(&b, "mesh_proxy_http_response_latency_seconds_bucket{le=\"+Inf\"} %d\n", n-1)
	return b.String()
}

// seq returns 0, 1, ..., n-1.
func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i)
	}
	return out
}

// TestParseSkipsWithoutAllocating: lines of the families a scrape does
// not read cost no allocation, however many there are.
func TestParseSkipsWithoutAllocating(t *testing.T) {
	kept := string(readGolden(t, goldenBusy))
	skipped := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "# HELP go_thing_%d A thing.\n# TYPE go_thing_%d gauge\n", i, i)
			fmt.Fprintf(&b, "go_thing_%d{le=\"0.5\",quantile=\"0.9\",path=\"/a\\\"b\"} 1.5e+09 1700000000\n", i)
			fmt.Fprintf(&b, "mesh_proxy_http_requests_total{direction=\"inbound\",authority=\"web-%d\"} %d\n", i, i)
		}
		return b.String()
	}
	allocs := func(body string) float64 {
		return testing.AllocsPerRun(20, func() {
			if _, _, err := parseMetrics(strings.NewReader(body)); err != nil {
				t.Fatal(err)
			}
		})
	}
	few, many := allocs(kept+skipped(10)), allocs(kept+skipped(10_000))
	t.Logf("%v allocations with 10 skipped families, %v with 10,000", few, many)
	if many > few {
		t.Errorf("%v allocations with 10 skipped families, %v with 10,000", few, many)
	}
}

// FuzzParse feeds arbitrary bytes to the parser: it never panics, and
// what it returns is what the store can take: counts that are neither
// negative nor NaN nor infinite, histograms that are cumulative and end
// at +Inf, within the memory cap. Seeds: a real proxy's exposition,
// histograms, escapes, and garbage.
func FuzzParse(f *testing.F) {
	f.Add(readGolden(f, goldenBusy))
	f.Add([]byte(latencyType + "mesh_proxy_http_response_latency_seconds_bucket{le=\"1\"} 1\nmesh_proxy_http_response_latency_seconds_count 2\n"))
	f.Add([]byte(`mesh_proxy_http_responses_total{authority="a\"\\\n",classification="success"} 1 2` + "\n"))
	f.Add([]byte("# TYPE x counter\n{\"x\"} 1\nmesh_proxy_tcp_open_total{\"direction\"=\"in\",} NaN\n"))
	f.Add([]byte("\x00garbage{"))
	f.Fuzz(func(t *testing.T, body []byte) {
		p := newParser(bytes.NewReader(body))
		start, series, err := p.parse()
		if p.kept > maxKeptBytes+maxLineBytes+keptPerSet {
			t.Fatalf("kept %d bytes", p.kept)
		}
		if err != nil {
			return
		}
		if !(start >= 0) || math.IsInf(start, 0) {
			t.Fatalf("start %v", start)
		}
		for l, c := range series {
			for _, v := range []float64{c.Responses, c.Successes, c.TCPOpen, c.TCPClose, c.ReadBytes, c.WriteBytes, c.OpenConns, c.Denied} {
				if !(v >= 0) || math.IsInf(v, 0) {
					t.Fatalf("%+v: a count of %v", l, v)
				}
			}
			h := c.Latency
			if h.Bounds == nil {
				continue
			}
			if len(h.Bounds) != len(h.Counts) || !math.IsInf(h.Bounds[len(h.Bounds)-1], 1) || !slices.IsSorted(h.Bounds) {
				t.Fatalf("%+v: histogram %+v", l, h)
			}
			for i, n := range h.Counts {
				if n < 0 || i > 0 && n < h.Counts[i-1] {
					t.Fatalf("%+v: histogram %+v", l, h)
				}
			}
		}
	})
}

// FuzzParseMatchesExpfmt holds the parser to expfmt on expositions as a
// client library writes them (with expfmt's own writer), from families
// the fuzzer shapes: the families viz reads, in any order and of any
// scalar type, among others it skips; label values with quotes,
// backslashes, newlines and other UTF-8; values NaN, infinite, negative
// or fractional; timestamps; histograms with buckets in any order, float
// and NaN counts. Both must accept and refuse the same, and read the same.
func FuzzParseMatchesExpfmt(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte("a histogram, some counters, and more"))
	f.Add(bytes.Repeat([]byte{1, 2, 3, 250, 7, 0, 9, 200}, 20))
	f.Fuzz(func(t *testing.T, data []byte) {
		var body bytes.Buffer
		fuzzExposition(&fuzzSource{data: data}, &body)
		start, got, err := parseMetrics(bytes.NewReader(body.Bytes()))
		oldStart, want, oldErr := parseExpfmt(bytes.NewReader(body.Bytes()))
		if (err == nil) != (oldErr == nil) {
			t.Fatalf("streaming: %v; expfmt: %v; on\n%s", err, oldErr, body.Bytes())
		}
		if err != nil {
			return
		}
		if diff := cmp.Diff(want, got, equateCounters); diff != "" || start != oldStart {
			t.Fatalf("start %v, expfmt's %v, and (-expfmt +streaming):\n%s\non\n%s", start, oldStart, diff, body.Bytes())
		}
	})
}

// fuzzSource hands out the fuzzer's bytes, then zeros.
type fuzzSource struct{ data []byte }

func (s *fuzzSource) next() int {
	if len(s.data) == 0 {
		return 0
	}
	b := s.data[0]
	s.data = s.data[1:]
	return int(b)
}

// pick returns one of choices.
func pick[T any](s *fuzzSource, choices ...T) T { return choices[s.next()%len(choices)] }

// fuzzExposition writes to w the families s shapes, with expfmt's writer.
func fuzzExposition(s *fuzzSource, w io.Writer) {
	names := []string{metricResponses, metricLatency, metricTCPOpen, metricTCPClose, metricTCPConns, metricReadBytes,
		metricWriteBytes, metricStartTime, metricHTTPAuthz, metricTCPAuthz, "mesh_proxy_http_requests_total", "go_goroutines"}
	for i := range names { // shuffled
		j := i + s.next()%(len(names)-i)
		names[i], names[j] = names[j], names[i]
	}
	for _, name := range names[:1+s.next()%len(names)] {
		fam := &dto.MetricFamily{Name: &name, Type: pick(s, dto.MetricType_COUNTER, dto.MetricType_GAUGE, dto.MetricType_UNTYPED).Enum()}
		if name == metricLatency {
			fam.Type = dto.MetricType_HISTOGRAM.Enum()
		}
		if s.next()%2 == 0 {
			fam.Help = ptr("help with a \\ and a\nnewline")
		}
		for range 1 + s.next()%4 {
			fam.Metric = append(fam.Metric, fuzzMetric(s, fam.GetType()))
		}
		expfmt.MetricFamilyToText(w, fam)
	}
}

func fuzzMetric(s *fuzzSource, typ dto.MetricType) *dto.Metric {
	values := []float64{0, 1, 2.5, 3, 1e300, -1, math.NaN(), math.Inf(1), math.Inf(-1)}
	m := &dto.Metric{}
	seen := map[string]bool{}
	for range s.next() % 6 {
		name := pick(s, "direction", "authority", "target_addr", "dst_namespace", "dst_workload", "dst_service",
			"client_id", "server_id", "classification", "decision", "status_class", "zone")
		if seen[name] {
			continue
		}
		seen[name] = true
		value := pick(s, "", "inbound", "outbound", "success", "failure", "deny", "allow", `a"b`, `c\d`, "e\nf", "ü", "other")
		m.Label = append(m.Label, &dto.LabelPair{Name: ptr(name), Value: ptr(value)})
	}
	if s.next()%4 == 0 {
		m.TimestampMs = ptr(int64(s.next()) * 1_000_000)
	}
	v := pick(s, values...)
	switch typ {
	case dto.MetricType_COUNTER:
		m.Counter = &dto.Counter{Value: &v}
	case dto.MetricType_GAUGE:
		m.Gauge = &dto.Gauge{Value: &v}
	case dto.MetricType_UNTYPED:
		m.Untyped = &dto.Untyped{Value: &v}
	case dto.MetricType_HISTOGRAM:
		h := &dto.Histogram{SampleSum: ptr(pick(s, values...))}
		if s.next()%4 == 0 {
			h.SampleCountFloat = ptr(pick(s, values...))
		} else {
			h.SampleCount = ptr(uint64(s.next()))
		}
		for range s.next() % 5 {
			b := &dto.Bucket{UpperBound: ptr(pick(s, 0.1, 0.5, 1, 5, math.Inf(1), math.NaN()))}
			if s.next()%4 == 0 {
				b.CumulativeCountFloat = ptr(pick(s, values...))
			} else {
				b.CumulativeCount = ptr(uint64(s.next()))
			}
			h.Bucket = append(h.Bucket, b)
		}
		m.Histogram = h
	}
	return m
}

// TestParseAllocatesLittle: at a proxy's series bound, where expfmt spent
// most of viz's CPU building every family (docs/benchmarks.md), the
// streaming parse allocates a small fraction of what expfmt did.
func TestParseAllocatesLittle(t *testing.T) {
	body := readGolden(t, goldenBound)
	allocated := func(parse func(io.Reader) (float64, map[labels]*counters, error)) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, _, err := parse(bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	streaming, old := allocated(parseMetrics), allocated(parseExpfmt)
	t.Logf("%d bytes of /metrics: %d KiB allocated, expfmt %d KiB", len(body), streaming>>10, old>>10)
	if streaming > old/10 {
		t.Errorf("the streaming parse allocated %d bytes, expfmt %d: want under a tenth", streaming, old)
	}
}

// BenchmarkParse compares the streaming parse with expfmt's on a busy
// proxy's /metrics and on one at its series bound. Run it with
//
//	go test -run '^$' -bench BenchmarkParse ./controller/viz
func BenchmarkParse(b *testing.B) {
	for _, name := range []string{goldenBusy, goldenBound} {
		body := readGolden(b, name)
		for _, p := range []struct {
			name  string
			parse func(io.Reader) (float64, map[labels]*counters, error)
		}{{"streaming", parseMetrics}, {"expfmt", parseExpfmt}} {
			b.Run(name+"/"+p.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					if _, _, err := p.parse(bytes.NewReader(body)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
