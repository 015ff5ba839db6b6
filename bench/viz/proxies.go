package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mesh-dev/mesh/bench/viz/fleet"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// proxy is one pod's fake mesh-proxy: the proxy's real registry
// (proxy/metrics) behind a real HTTP server on the pod's address, and the
// routes and connections its simulated traffic counts under. Its fields are
// used by the traffic goroutine alone once started.
type proxy struct {
	m       *metrics.Metrics
	srv     *http.Server
	in, out []*metrics.Route // per calling and per called Deployment
	groups  []*connGroup     // its TCP label sets
	// latency is the median latency of the pod's answers, in seconds.
	latency float64
	budget  float64 // requests owed, fractions carried between ticks
}

// connGroup is one TCP label set of a proxy and the connections open in
// it. HTTP connections are pooled (a few stay open and are replaced now
// and then); opaque ones each carry one exchange.
type connGroup struct {
	dir              metrics.Direction
	target           string
	key              metrics.ConnKey
	protocol, reason string // how the proxy's detection would label it
	pool             int    // connections kept open; 0: opaque, one per exchange
	open             []*metrics.Conn
}

// redisAddr is an unmeshed service every pod talks to over opaque TCP.
const redisAddr = "10.97.0.10:6379"

// fleetProxies are the fleet's proxies.
type fleetProxies struct {
	f   *fleet.Fleet
	all []*proxy
	wg  sync.WaitGroup // the servers
}

// startProxies starts a proxy on every pod's address, each listening
// explicitly on its own loopback address. On error it closes those it
// started.
func startProxies(ctx context.Context, f *fleet.Fleet) (*fleetProxies, error) {
	ps := &fleetProxies{f: f}
	var lc net.ListenConfig
	for _, pod := range f.Pods {
		p := newProxy(f, pod)
		ln, err := lc.Listen(ctx, "tcp", f.MetricsAddr(pod))
		if err != nil {
			ps.close()
			return nil, fmt.Errorf("proxy of %s: %w", pod.Name, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", p.m.Handler())
		p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		ps.all = append(ps.all, p)
		ps.wg.Go(func() { _ = p.srv.Serve(ln) })
	}
	return ps, nil
}

// close stops every server and waits for them.
func (ps *fleetProxies) close() {
	for _, p := range ps.all {
		p.srv.Close()
	}
	ps.wg.Wait()
}

// newProxy builds pod's registry and label sets: inbound HTTP from each
// Deployment that calls pod's (from an unmeshed client when none does),
// outbound HTTP to each Deployment it calls, the TCP connections that carry
// them, and opaque TCP to redisAddr.
func newProxy(f *fleet.Fleet, pod fleet.Pod) *proxy {
	d := f.Deployments[pod.Deployment]
	p := &proxy{
		m: metrics.New(),
		// 5 to 40 ms, by Deployment.
		latency: float64(5+5*(pod.Deployment%8)) / 1000,
	}
	self := netip.AddrPortFrom(pod.IP, fleet.AppPort).String()
	callers := d.Callers
	if len(callers) == 0 {
		callers = []int{-1}
	}
	for _, c := range callers {
		var id string
		if c >= 0 {
			id = f.ID(c)
		}
		p.in = append(p.in, p.m.Route(metrics.RouteKey{
			Direction: metrics.Inbound, Authority: f.Authority(pod.Deployment), Target: self, ClientID: id,
		}))
		g := &connGroup{dir: metrics.Inbound, target: self, key: metrics.ConnKey{ClientID: id}, protocol: "http/1", reason: "request-line", pool: 2}
		if id != "" {
			g.protocol, g.reason = "mesh-tls", "alpn"
		}
		p.groups = append(p.groups, g)
	}
	for _, c := range d.Callees {
		dst := f.Deployments[c]
		target := netip.AddrPortFrom(dst.ServiceIP, fleet.AppPort).String()
		p.out = append(p.out, p.m.Route(metrics.RouteKey{
			Direction: metrics.Outbound, Authority: f.Authority(c), Target: target,
			Dst:      metrics.Dst{Namespace: f.Namespace, Workload: "deployment/" + dst.Name, Service: dst.Name},
			ServerID: f.ID(c),
		}))
		// HTTP connections carry requests to several endpoints: their
		// TCP series have no dst_* labels (docs/metrics.md).
		p.groups = append(p.groups, &connGroup{dir: metrics.Outbound, target: target, key: metrics.ConnKey{ServerID: f.ID(c)},
			protocol: "http/1", reason: "request-line", pool: 2})
	}
	p.groups = append(p.groups, &connGroup{dir: metrics.Outbound, target: redisAddr, protocol: "opaque", reason: "opaque-port"})
	for _, g := range p.groups {
		for range g.pool {
			g.connect(p.m)
		}
	}
	return p
}

// connect opens a connection in g.
func (g *connGroup) connect(m *metrics.Metrics) {
	m.Detected(g.dir, g.protocol, g.reason)
	c := m.Conn(g.dir, g.target)
	c.Open(g.key)
	g.open = append(g.open, c)
}

// churn closes g's oldest connection, with what it carried, and opens a
// new one in its place (an opaque group: one connection opened and closed).
func (g *connGroup) churn(m *metrics.Metrics, rng *rand.Rand) {
	g.connect(m)
	c := g.open[0]
	g.open = g.open[1:]
	c.Close(1000+rng.Int64N(200_000), 1000+rng.Int64N(200_000))
}

// Traffic per proxy, besides the requests.
const (
	tick            = 100 * time.Millisecond
	pooledLifetime  = 30 * time.Second // mean life of a pooled HTTP connection
	opaqueInterval  = 2 * time.Second  // mean time between opaque connections
	failureFraction = 0.01             // 503s, classified as failures
	notFoundFrac    = 0.02             // 404s
)

// simulate counts traffic on every proxy from a goroutine, rps requests per
// second each, until stop is called; stop returns once the goroutine has
// counted its last request, so the counters no longer move.
func (ps *fleetProxies) simulate(ctx context.Context, rps float64, seed uint64) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		t := time.NewTicker(tick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				dt := now.Sub(last).Seconds()
				last = now
				for _, p := range ps.all {
					p.step(rng, rps*dt, dt)
				}
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// step counts what proxy p did in dt seconds: requests more requests on
// average, half inbound and half outbound, and the connections' churn.
func (p *proxy) step(rng *rand.Rand, requests, dt float64) {
	p.budget += requests
	n := int(p.budget)
	p.budget -= float64(n)
	for range n {
		routes := p.in
		if len(p.out) > 0 && rng.IntN(2) == 0 {
			routes = p.out
		}
		r := routes[rng.IntN(len(routes))]
		r.Request()
		code, ok := 200, true
		switch x := rng.Float64(); {
		case x < failureFraction:
			code, ok = 503, false
		case x < failureFraction+notFoundFrac:
			code = 404
		}
		// Log-normal around the pod's median.
		took := min(p.latency*math.Exp(0.5*rng.NormFloat64()), 12)
		r.Response(code, ok, time.Duration(took*float64(time.Second)))
	}
	for _, g := range p.groups {
		mean := pooledLifetime.Seconds() / float64(max(g.pool, 1))
		if g.pool == 0 {
			mean = opaqueInterval.Seconds()
		}
		if rng.Float64() < dt/mean {
			g.churn(p.m, rng)
		}
	}
}

// seriesOf returns how many samples the proxy of pod i exports: the lines
// of its /metrics that are not comments.
func (ps *fleetProxies) seriesOf(ctx context.Context, i int) (int, error) {
	url := "http://" + ps.f.MetricsAddr(ps.f.Pods[i]) + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, errors.New(url + ": " + resp.Status)
	}
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			n++
		}
	}
	return n, sc.Err()
}
