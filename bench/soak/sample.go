package main

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/mesh-dev/mesh/bench/internal/kubelab"
	"github.com/mesh-dev/mesh/proxy/metrics"
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
func (t *target) scrape(ctx context.Context, l *kubelab.Lab) (reading, error) {
	at := time.Now()
	fams, err := l.Metrics(ctx, t.ns, t.pod, t.port)
	if err != nil {
		return reading{}, err
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
func (t *target) sample(ctx context.Context, l *kubelab.Lab) {
	r, err := t.scrape(ctx, l)
	if err != nil {
		t.failed++
		t.lastErr = err.Error()
		return
	}
	t.readings = append(t.readings, r)
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
