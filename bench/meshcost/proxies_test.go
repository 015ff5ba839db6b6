package main

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// scrape is a proxy's /metrics as far as the run reads it: two outbound
// series with a server identity and one without, and an inbound one.
const scrape = `# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.23e+07
# TYPE go_sched_gomaxprocs_threads gauge
go_sched_gomaxprocs_threads 1
# TYPE mesh_proxy_http_requests_total counter
mesh_proxy_http_requests_total{authority="server:8080",client_id="",direction="outbound",dst_namespace="ns",dst_service="server",dst_workload="server",server_id="spiffe://cluster.local/ns/ns/sa/default",target_addr="10.0.0.5:8080"} 900
mesh_proxy_http_requests_total{authority="server:8080",client_id="",direction="outbound",dst_namespace="ns",dst_service="server",dst_workload="server",server_id="spiffe://cluster.local/ns/ns/sa/default",target_addr="10.0.0.6:8080"} 50
mesh_proxy_http_requests_total{authority="x:80",client_id="",direction="outbound",dst_namespace="",dst_service="",dst_workload="",server_id="",target_addr="10.0.0.7:80"} 50
mesh_proxy_http_requests_total{authority="client:8080",client_id="spiffe://cluster.local/ns/ns/sa/default",direction="inbound",dst_namespace="",dst_service="",dst_workload="",server_id="",target_addr="127.0.0.1:8080"} 7
`

func parseScrape(t *testing.T, text string) metricstest.Families {
	t.Helper()
	fams, err := metricstest.Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func TestReadingOf(t *testing.T) {
	at := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	fams := parseScrape(t, scrape)
	for _, tc := range []struct {
		dir                   metrics.Direction
		wantRequests, wantTLS float64
	}{
		{dir: metrics.Outbound, wantRequests: 1000, wantTLS: 950},
		{dir: metrics.Inbound, wantRequests: 7, wantTLS: 7},
	} {
		t.Run(string(tc.dir), func(t *testing.T) {
			r, err := readingOf(fams, tc.dir, at)
			if err != nil {
				t.Fatal(err)
			}
			want := reading{at: at, cpu: 12.5, rss: 12.3e6, maxProcs: 1, requests: tc.wantRequests, mtls: tc.wantTLS}
			if r != want {
				t.Errorf("readingOf = %+v, want %+v", r, want)
			}
		})
	}
	_, err := readingOf(parseScrape(t, "# TYPE go_goroutines gauge\ngo_goroutines 5\n"), metrics.Inbound, at)
	if err == nil || !strings.Contains(err.Error(), "process_cpu_seconds_total") {
		t.Errorf("readingOf a scrape without process metrics: %v, want an error naming the missing one", err)
	}
}

func TestUsageOf(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	rs := []reading{
		{at: t0, cpu: 10, rss: 9e6, requests: 100, mtls: 100, maxProcs: 1},
		{at: t0.Add(5 * time.Second), cpu: 10.5, rss: 14e6, requests: 2600, mtls: 2600, maxProcs: 1},
		{at: t0.Add(10 * time.Second), cpu: 11, rss: 12e6, requests: 5100, mtls: 5000, maxProcs: 1},
	}
	u := usageOf(rs)
	want := usage{readings: 3, span: 10 * time.Second, cpu: 1, rssFirst: 9e6, rssLast: 12e6, rssMax: 14e6, requests: 5000, mtls: 4900, maxProcs: 1}
	if u != want {
		t.Errorf("usageOf = %+v, want %+v", u, want)
	}
	if got := u.cpuRate(); got != 0.1 {
		t.Errorf("cpuRate = %v, want 0.1 s/s", got)
	}
	if got := perRequest(u.cpu, 5000); got != 200e-6 {
		t.Errorf("perRequest = %v, want 200 µs", got)
	}
	// Idle at 0.05 s/s over 10 s leaves half the CPU to the requests.
	if got := lessIdle(u, 5000, 0.05); got != 100e-6 {
		t.Errorf("lessIdle = %v, want 100 µs", got)
	}
	rs[2].cpu = 0.2 // the proxy restarted: its counter began again
	if !usageOf(rs).reset {
		t.Error("a counter that went backwards is not flagged as a restart")
	}
	if got := usageOf(nil); got != (usage{}) {
		t.Errorf("usageOf(nil) = %+v", got)
	}
}

func TestMaxProcsFromLog(t *testing.T) {
	log := `{"time":"2026-12-08T10:00:00Z","level":"INFO","msg":"starting","version":"v0.1.0"}
not json at all
{"time":"2026-12-08T10:00:00Z","level":"INFO","msg":"runtime sizing","gomaxprocs":1,"reason":"no CPU limit","gomemlimit_bytes":120795955}
{"time":"2026-12-08T10:00:01Z","level":"INFO","msg":"runtime sizing","gomaxprocs":4,"reason":"later line"}
`
	n, reason, ok := maxProcsFromLog([]byte(log))
	if !ok || n != 1 || reason != "no CPU limit" {
		t.Errorf("maxProcsFromLog = %v, %q, %v; want the first sizing line: 1, no CPU limit", n, reason, ok)
	}
	if _, _, ok := maxProcsFromLog([]byte(`{"msg":"starting"}`)); ok {
		t.Error("a log without the sizing line gave one")
	}
}

func TestResourcesOf(t *testing.T) {
	c := &corev1.Container{Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("20Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}}
	if got, want := resourcesOf(c), "requests cpu 10m, memory 20Mi; limits memory 128Mi (no CPU limit)"; got != want {
		t.Errorf("resourcesOf = %q, want %q", got, want)
	}
	c.Resources.Limits[corev1.ResourceCPU] = resource.MustParse("1")
	if got, want := resourcesOf(c), "requests cpu 10m, memory 20Mi; limits cpu 1, memory 128Mi"; got != want {
		t.Errorf("resourcesOf = %q, want %q", got, want)
	}
	if got, want := resourcesOf(&corev1.Container{}), "requests none; limits none (no CPU limit)"; got != want {
		t.Errorf("resourcesOf = %q, want %q", got, want)
	}
}
