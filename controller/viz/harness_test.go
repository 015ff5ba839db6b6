package viz

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mesh-dev/mesh/internal/names"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Label names of the proxies' series (docs/metrics.md).
var (
	httpLabelNames = []string{"direction", "authority", "target_addr", "dst_namespace", "dst_workload", "dst_service", "client_id", "server_id",
		"route_kind", "route_namespace", "route_name", "route_rule"}
	tcpLabelNames   = []string{"direction", "target_addr", "dst_namespace", "dst_workload", "client_id", "server_id"}
	authzLabelNames = []string{"server", "authz", "client_id", "decision"}
	// latencyBuckets are the proxies' 19 buckets, in seconds.
	latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10}
)

// proxy stands in for a mesh-proxy's admin server: a real HTTP server
// exporting, with the real client library, the series docs/metrics.md
// lists. The proxies themselves are never imported here (controller and
// proxy meet only through the API).
type proxy struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	tcpOpen   *prometheus.CounterVec
	tcpClose  *prometheus.CounterVec
	tcpConns  *prometheus.GaugeVec
	readBytes *prometheus.CounterVec
	wrote     *prometheus.CounterVec
	httpAuthz *prometheus.CounterVec
	tcpAuthz  *prometheus.CounterVec
	start     prometheus.Gauge
	addr      string
}

func newProxy(t testing.TB, started time.Time) *proxy {
	t.Helper()
	p := &proxy{
		reg:       prometheus.NewRegistry(),
		requests:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mesh_proxy_http_requests_total", Help: "h"}, httpLabelNames),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricResponses, Help: "h"}, append(httpLabelNames[:len(httpLabelNames):len(httpLabelNames)], "status_class", "classification")),
		latency:   prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metricLatency, Help: "h", Buckets: latencyBuckets}, httpLabelNames),
		tcpOpen:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricTCPOpen, Help: "h"}, tcpLabelNames),
		tcpClose:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricTCPClose, Help: "h"}, tcpLabelNames),
		tcpConns:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricTCPConns, Help: "h"}, tcpLabelNames),
		readBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricReadBytes, Help: "h"}, tcpLabelNames),
		wrote:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricWriteBytes, Help: "h"}, tcpLabelNames),
		httpAuthz: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricHTTPAuthz, Help: "h"}, authzLabelNames),
		tcpAuthz:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricTCPAuthz, Help: "h"}, authzLabelNames),
		start:     prometheus.NewGauge(prometheus.GaugeOpts{Name: metricStartTime, Help: "h"}),
	}
	p.reg.MustRegister(p.requests, p.responses, p.latency, p.tcpOpen, p.tcpClose, p.tcpConns, p.readBytes, p.wrote,
		p.httpAuthz, p.tcpAuthz, p.start)
	p.start.Set(float64(started.Unix()))
	srv := httptest.NewServer(promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	p.addr = srv.Listener.Addr().String()
	return p
}

func (l labels) http() prometheus.Labels {
	return prometheus.Labels{
		"direction": l.Direction, "authority": l.Authority, "target_addr": l.TargetAddr,
		"dst_namespace": l.DstNamespace, "dst_workload": l.DstWorkload, "dst_service": l.DstService,
		"client_id": l.ClientID, "server_id": l.ServerID,
		"route_kind": l.RouteKind, "route_namespace": l.RouteNamespace, "route_name": l.RouteName, "route_rule": l.RouteRule,
	}
}

func (l labels) tcp() prometheus.Labels {
	return prometheus.Labels{
		"direction": l.Direction, "target_addr": l.TargetAddr, "dst_namespace": l.DstNamespace,
		"dst_workload": l.DstWorkload, "client_id": l.ClientID, "server_id": l.ServerID,
	}
}

// serve counts n requests of label set l answered with status after
// latency, as the proxy does.
func (p *proxy) serve(l labels, n int, status int, latency time.Duration) {
	class, result := fmt.Sprintf("%dxx", status/100), "success"
	if status >= 500 {
		result = "failure"
	}
	resp := l.http()
	resp["status_class"], resp["classification"] = class, result
	for range n {
		p.requests.With(l.http()).Inc()
		p.responses.With(resp).Inc()
		p.latency.With(l.http()).Observe(latency.Seconds())
	}
}

// connect counts connections of label set l: opened and closed ones,
// those still open, and the bytes of the closed ones.
func (p *proxy) connect(l labels, opened, closed int, read, written float64) {
	p.tcpOpen.With(l.tcp()).Add(float64(opened))
	p.tcpClose.With(l.tcp()).Add(float64(closed))
	p.tcpConns.With(l.tcp()).Set(float64(opened - closed))
	p.readBytes.With(l.tcp()).Add(read)
	p.wrote.With(l.tcp()).Add(written)
}

// authz counts n authorization decisions of the proxy's inbound side:
// per request when http, else per connection.
type authz struct {
	http                     bool
	server, policy, clientID string
	decision                 string // allow, deny or audit
}

func (p *proxy) authorize(a authz, n int) {
	vec := p.tcpAuthz
	if a.http {
		vec = p.httpAuthz
	}
	vec.With(prometheus.Labels{"server": a.server, "authz": a.policy, "client_id": a.clientID, "decision": a.decision}).Add(float64(n))
}

// total sums mesh_proxy_http_responses_total over the series whose labels
// include want, as Prometheus would.
func (p *proxy) total(t testing.TB, want map[string]string) uint64 {
	t.Helper()
	families, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != metricResponses {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			for k, v := range want {
				if labelValue(m, k) != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return uint64(sum)
}

// cluster is what the viz component sees: pods and services in a fake
// clientset (the real API server is exercised by the end-to-end suite),
// and the addresses their proxies' servers really listen on.
type cluster struct {
	objs []runtime.Object

	mu    sync.Mutex
	addrs map[string]string // pod ip:port → loopback address
}

func newCluster(namespaces ...string) *cluster {
	c := &cluster{addrs: map[string]string{}}
	for _, ns := range namespaces {
		c.objs = append(c.objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	return c
}

// podSpec describes a pod of a Deployment.
type podSpec struct {
	ns, deploy, suffix, sa, ip string
	meshed                     bool
}

func (s podSpec) name() string { return s.deploy + "-5d8f7c-" + s.suffix }

// addPod adds the pod s describes, Running; a meshed pod gets a proxy
// started long ago, whose metrics server its ip:4191 reaches.
func (c *cluster) addPod(t testing.TB, s podSpec) *proxy {
	t.Helper()
	yes := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: s.ns, Name: s.name(), UID: types.UID("uid-" + s.name()),
			Labels: map[string]string{"app": s.deploy, "pod-template-hash": "5d8f7c"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: s.deploy + "-5d8f7c", UID: "rs", Controller: &yes,
			}},
		},
		Spec:   corev1.PodSpec{ServiceAccountName: s.sa, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: s.ip},
	}
	c.objs = append(c.objs, pod)
	if !s.meshed {
		return nil
	}
	withProxy(pod, names.AdminPort)
	p := newProxy(t, time.Now().Add(-time.Hour))
	c.route(net.JoinHostPort(s.ip, strconv.Itoa(names.AdminPort)), p.addr)
	return p
}

// addService adds a Service of cluster IP clusterIP ("None": headless)
// selecting the pods of selector (nil: none).
func (c *cluster) addService(ns, name, clusterIP string, selector map[string]string) {
	c.objs = append(c.objs, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Selector: selector, ClusterIP: clusterIP, ClusterIPs: []string{clusterIP}},
	})
}

// route makes dials to podAddr reach addr.
func (c *cluster) route(podAddr, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addrs[podAddr] = addr
}

// dial reaches the servers of the pods, and nothing else.
func (c *cluster) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	to, ok := c.addrs[addr]
	c.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("test cluster: nothing listens on %s", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

// start returns a Viz over the cluster's objects, its caches synced, and
// the URL of its API served by a real HTTP server. mod changes the config.
func (c *cluster) start(t testing.TB, mod func(*Config)) (*Viz, string) {
	t.Helper()
	factory := informers.NewSharedInformerFactory(fake.NewClientset(c.objs...), 0)
	cfg := Config{Informers: factory, Dial: c.dial, Registerer: prometheus.NewRegistry()}
	if mod != nil {
		mod(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
		v.client.CloseIdleConnections()
	})
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("%v cache did not sync", typ)
		}
	}
	v.ready.Store(true)
	srv := httptest.NewServer(v.Handler())
	t.Cleanup(srv.Close)
	return v, srv.URL
}

// getJSON GETs base+path with query q and decodes the answer into out,
// returning the status.
func getJSON(t testing.TB, base, path string, q url.Values, out any) int {
	t.Helper()
	resp, err := http.Get(base + path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s?%s: %d %v in %s", path, q.Encode(), resp.StatusCode, err, body)
	}
	return resp.StatusCode
}

// values builds url.Values from name, value pairs.
func values(kv ...string) url.Values {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return q
}
