package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// target is a process whose /metrics the run reads: a proxy of the path,
// mesh-controller or mesh-viz, through the API server's pod proxy.
type target struct {
	name      string // what the report calls it: "proxy of web", "mesh-controller"
	ns, pod   string
	container string // whose restarts count
	port      int    // of its /metrics

	readings []reading
	failed   int    // scrapes that failed
	lastErr  string // the last one's error
	// restarts are the container's restart count when the steady phase
	// began and ended: a restart resets the series it is measured on.
	restartsBefore, restartsAfter int32
}

// reading is one scrape of a target.
type reading struct {
	at         time.Time
	rss        float64 // process_resident_memory_bytes
	goroutines float64 // go_goroutines
	// outbound are the HTTP requests a proxy counted outbound so far
	// (mesh_proxy_http_requests_total{direction="outbound"}).
	outbound float64
}

// scrape reads the target's /metrics once.
func (t *target) scrape(ctx context.Context, kc kubernetes.Interface) (reading, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	at := time.Now()
	body, err := kc.CoreV1().Pods(t.ns).ProxyGet("http", t.pod, strconv.Itoa(t.port), "metrics", nil).DoRaw(ctx)
	if err != nil {
		return reading{}, fmt.Errorf("GET %s/%s:%d/metrics through the API server: %w", t.ns, t.pod, t.port, err)
	}
	fams, err := metricstest.Parse(bytes.NewReader(body))
	if err != nil {
		return reading{}, fmt.Errorf("%s/%s: %w", t.ns, t.pod, err)
	}
	if _, ok := fams["process_resident_memory_bytes"]; !ok {
		return reading{}, fmt.Errorf("%s/%s:%d/metrics has no process_resident_memory_bytes", t.ns, t.pod, t.port)
	}
	return reading{
		at:         at,
		rss:        fams.Sum("process_resident_memory_bytes"),
		goroutines: fams.Sum("go_goroutines"),
		outbound:   fams.Sum("mesh_proxy_http_requests_total", "direction", string(metrics.Outbound)),
	}, nil
}

// sample scrapes the target and keeps the reading, or counts the failure.
func (t *target) sample(ctx context.Context, kc kubernetes.Interface) {
	r, err := t.scrape(ctx, kc)
	if err != nil {
		t.failed++
		t.lastErr = err.Error()
		return
	}
	t.readings = append(t.readings, r)
}

// restarts returns the restart count of the target's container, or -1
// when the pod or container is gone.
func (t *target) restarts(ctx context.Context, kc kubernetes.Interface) int32 {
	pod, err := kc.CoreV1().Pods(t.ns).Get(ctx, t.pod, metav1.GetOptions{})
	if err != nil {
		return -1
	}
	for _, s := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
		if s.Name == t.container {
			return s.RestartCount
		}
	}
	return -1
}

// trend is a series' start, end and least-squares slope.
type trend struct {
	n          int
	first, end float64
	lo, hi     float64
	perHour    float64 // slope of the least-squares line, per hour
	// change is what the line rises over the series' span, relative to
	// its mean: how far from flat, independent of the run's length.
	change float64
}

// fit returns the trend of the value v of rs.
func fit(rs []reading, v func(reading) float64) trend {
	if len(rs) == 0 {
		return trend{}
	}
	tr := trend{n: len(rs), first: v(rs[0]), end: v(rs[len(rs)-1]), lo: math.Inf(1), hi: math.Inf(-1)}
	var mt, mv float64
	for _, r := range rs {
		mt += r.at.Sub(rs[0].at).Hours()
		mv += v(r)
		tr.lo, tr.hi = min(tr.lo, v(r)), max(tr.hi, v(r))
	}
	mt /= float64(len(rs))
	mv /= float64(len(rs))
	var sxy, sxx float64
	for _, r := range rs {
		dt := r.at.Sub(rs[0].at).Hours() - mt
		sxy += dt * (v(r) - mv)
		sxx += dt * dt
	}
	if sxx == 0 {
		return tr
	}
	tr.perHour = sxy / sxx
	if mv != 0 {
		tr.change = tr.perHour * rs[len(rs)-1].at.Sub(rs[0].at).Hours() / mv
	}
	return tr
}

func rssOf(r reading) float64        { return r.rss }
func goroutinesOf(r reading) float64 { return r.goroutines }
