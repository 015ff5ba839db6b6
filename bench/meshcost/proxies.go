package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"

	"github.com/mesh-dev/mesh/bench/internal/kubelab"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// proxy is one of the meshed pair's two proxies, whose /metrics the run
// reads through the API server's pod proxy.
type proxy struct {
	name    string // "client proxy", "server proxy"
	ns, pod string
	// dir is the direction the load crosses it in: outbound for the
	// client's, inbound for the server's.
	dir metrics.Direction
	// resources are the proxy container's requests and limits, as the
	// injector wrote them.
	resources string
	// logMaxProcs is the GOMAXPROCS of the proxy's start log line, and
	// maxProcsReason why it chose it; 0 and "" when the line was not
	// found.
	logMaxProcs    float64
	maxProcsReason string
}

// reading is one scrape of a proxy's /metrics.
type reading struct {
	at  time.Time // halfway through the scrape
	cpu float64   // process_cpu_seconds_total
	rss float64   // process_resident_memory_bytes
	// maxProcs is go_sched_gomaxprocs_threads; 0 when the proxy does not
	// export it.
	maxProcs float64
	// requests are the HTTP requests the proxy counted in its direction
	// (mesh_proxy_http_requests_total); mtls those of them with a peer
	// identity, which only a mesh TLS connection gives.
	requests, mtls float64
}

// peerLabel is the label that names the other proxy's identity on a
// request counted in dir.
func peerLabel(dir metrics.Direction) string {
	if dir == metrics.Outbound {
		return "server_id"
	}
	return "client_id"
}

// readingOf takes a reading out of one scrape.
func readingOf(fams metricstest.Families, dir metrics.Direction, at time.Time) (reading, error) {
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			return reading{}, fmt.Errorf("no %s in /metrics", name)
		}
	}
	r := reading{
		at:       at,
		cpu:      fams.Sum("process_cpu_seconds_total"),
		rss:      fams.Sum("process_resident_memory_bytes"),
		maxProcs: fams.Sum("go_sched_gomaxprocs_threads"),
		requests: fams.Sum("mesh_proxy_http_requests_total", "direction", string(dir)),
	}
	if fam, ok := fams["mesh_proxy_http_requests_total"]; ok {
		peer := peerLabel(dir)
		for _, m := range fam.GetMetric() {
			if metricstest.HasLabel(m, "direction", string(dir)) && labelValue(m, peer) != "" {
				r.mtls += m.GetCounter().GetValue()
			}
		}
	}
	return r, nil
}

// labelValue is the value of m's label name; "" when it has none.
func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// read scrapes p once.
func (p *proxy) read(ctx context.Context, l *kubelab.Lab) (reading, error) {
	t0 := time.Now()
	fams, err := l.Metrics(ctx, p.ns, p.pod, names.AdminPort)
	if err != nil {
		return reading{}, err
	}
	at := t0.Add(time.Since(t0) / 2)
	r, err := readingOf(fams, p.dir, at)
	if err != nil {
		return reading{}, fmt.Errorf("%s (%s/%s): %w", p.name, p.ns, p.pod, err)
	}
	return r, nil
}

// usage is what a proxy spent over a window, from the readings taken in
// it.
type usage struct {
	readings int
	span     time.Duration // from the first reading to the last
	cpu      float64       // CPU seconds spent over span
	rssFirst float64
	rssLast  float64
	rssMax   float64
	// requests and mtls are what the proxy counted over span.
	requests, mtls float64
	maxProcs       float64 // at the last reading
	// reset says a counter went backwards: the proxy restarted in the
	// window, and its figures are not of one process.
	reset bool
}

// usageOf sums up readings, taken in order.
func usageOf(rs []reading) usage {
	if len(rs) == 0 {
		return usage{}
	}
	first, last := rs[0], rs[len(rs)-1]
	u := usage{
		readings: len(rs),
		span:     last.at.Sub(first.at),
		cpu:      last.cpu - first.cpu,
		rssFirst: first.rss, rssLast: last.rss,
		requests: last.requests - first.requests,
		mtls:     last.mtls - first.mtls,
		maxProcs: last.maxProcs,
	}
	for i, r := range rs {
		u.rssMax = max(u.rssMax, r.rss)
		if i > 0 && (r.cpu < rs[i-1].cpu || r.requests < rs[i-1].requests) {
			u.reset = true
		}
	}
	return u
}

// turnUsage is usage over turns: readings 2m and 2m+1 were taken at the
// start and end of turn m, and what happened between two turns is left
// out of the sums.
func turnUsage(rs []reading) usage {
	u := usageOf(rs)
	u.span, u.cpu, u.requests, u.mtls = 0, 0, 0, 0
	for m := 0; m+1 < len(rs); m += 2 {
		a, b := rs[m], rs[m+1]
		u.span += b.at.Sub(a.at)
		u.cpu += b.cpu - a.cpu
		u.requests += b.requests - a.requests
		u.mtls += b.mtls - a.mtls
	}
	return u
}

// cpuRate is the CPU the proxy used per second of the window.
func (u usage) cpuRate() float64 {
	if u.span <= 0 {
		return 0
	}
	return u.cpu / u.span.Seconds()
}

// resourcesOf writes a container's requests and limits: "requests cpu
// 10m, memory 20Mi; limits memory 128Mi (no CPU limit)".
func resourcesOf(c *corev1.Container) string {
	list := func(rl corev1.ResourceList) string {
		var parts []string
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := rl[name]; ok {
				parts = append(parts, string(name)+" "+q.String())
			}
		}
		if len(parts) == 0 {
			return "none"
		}
		return strings.Join(parts, ", ")
	}
	s := "requests " + list(c.Resources.Requests) + "; limits " + list(c.Resources.Limits)
	if _, ok := c.Resources.Limits[corev1.ResourceCPU]; !ok {
		s += " (no CPU limit)"
	}
	return s
}

// sizingLine is the proxy's start log line on its runtime sizing (JSON,
// as the injector sets the proxy's log format).
type sizingLine struct {
	Msg        string  `json:"msg"`
	GoMaxProcs float64 `json:"gomaxprocs"`
	Reason     string  `json:"reason"`
}

// maxProcsFromLog finds the runtime sizing line in a proxy's log and
// returns its GOMAXPROCS and why; ok is false when there is none.
func maxProcsFromLog(log []byte) (n float64, reason string, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l sizingLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "runtime sizing" {
			return l.GoMaxProcs, l.Reason, true
		}
	}
	return 0, "", false
}

// sizing reads p's log for its runtime sizing line.
func (p *proxy) sizing(ctx context.Context, l *kubelab.Lab) (float64, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	log, err := l.Client.CoreV1().Pods(p.ns).GetLogs(p.pod, &corev1.PodLogOptions{Container: names.ProxyContainerName}).DoRaw(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("the log of %s/%s: %w", p.ns, p.pod, err)
	}
	n, reason, ok := maxProcsFromLog(log)
	if !ok {
		return 0, "", fmt.Errorf("the log of %s/%s has no runtime sizing line", p.ns, p.pod)
	}
	return n, reason, nil
}
