package metrics_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/proxy/metrics"
)

// BenchmarkRequest is what the metrics cost one HTTP request: finding the
// series of its label set, counting the request, its response and its
// latency, for a proxy that has seen one label set and one that has seen
// many (the caps folded the rest into "other"). Every key names the route
// rule its request matched, as an outbound request's does. Run it with
//
//	go test -run '^$' -bench . -benchmem -cpu 1,2 ./proxy/metrics/
func BenchmarkRequest(b *testing.B) {
	for _, routes := range []int{1, 1000} {
		b.Run("routes="+strconv.Itoa(routes), func(b *testing.B) {
			m := metrics.New()
			keys := make([]metrics.RouteKey, routes)
			for i := range keys {
				keys[i] = metrics.RouteKey{Direction: metrics.Outbound, Authority: "web.shop.svc.cluster.local:80",
					Target:   "10.96.0." + strconv.Itoa(i%250) + ":" + strconv.Itoa(80+i/250),
					Dst:      metrics.Dst{Namespace: "shop", Workload: "deployment/web", Service: "web"},
					ServerID: "spiffe://cluster.local/ns/shop/sa/web",
					Route:    metrics.RouteRef{Kind: "HTTPRoute", Namespace: "shop", Name: "web-" + strconv.Itoa(i%100), Rule: strconv.Itoa(i % 10)}}
				r := m.Route(keys[i])
				r.Request()
				r.Response(200, true, time.Millisecond)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					r := m.Route(keys[i%len(keys)])
					r.Request()
					r.Response(200, true, 3*time.Millisecond)
					i++
				}
			})
		})
	}
}

// BenchmarkConn is what the metrics cost one TCP connection: its handle,
// open and close. Run it like BenchmarkRequest.
func BenchmarkConn(b *testing.B) {
	m := metrics.New()
	key := metrics.ConnKey{Dst: metrics.Dst{Namespace: "shop", Workload: "deployment/payments"},
		ServerID: "spiffe://cluster.local/ns/shop/sa/payments"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := m.Conn(metrics.Outbound, "10.96.0.9:7000")
			c.Open(key)
			c.Close(100, 200)
		}
	})
}
