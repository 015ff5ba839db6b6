package metrics_test

import (
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mesh-dev/mesh/proxy/metrics"
)

// TestOpenOnReach: an HTTP connection's TCP series open only once one of
// its requests reached an application, and then count the connection once
// with all its bytes; one whose requests never did is counted unreached,
// for its last request's reason, or no-request, with no series naming its
// target.
func TestOpenOnReach(t *testing.T) {
	const target = "10.0.0.5:80"
	type unreached = map[metrics.UnreachedReason]float64
	for _, tc := range []struct {
		name string
		// do drives the connection between OpenOnReach and Close.
		do            func(c *metrics.Conn)
		wantOpen      float64 // in the TCP series of target
		wantUnreached unreached
	}{{
		name:          "no request",
		do:            func(*metrics.Conn) {},
		wantUnreached: unreached{metrics.NoRequest: 1},
	}, {
		name: "every request answered by the proxy",
		do: func(c *metrics.Conn) {
			c.RequestUnreached(metrics.NoEndpoint)
			c.RequestUnreached(metrics.ConnectFailed)
		},
		wantUnreached: unreached{metrics.ConnectFailed: 1},
	}, {
		name: "a request reached the application after one did not",
		do: func(c *metrics.Conn) {
			c.RequestUnreached(metrics.ConnectFailed)
			c.Reached()
			c.Reached()
			c.RequestUnreached(metrics.PolicyDenied)
		},
		wantOpen: 1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New()
			c := m.Conn(metrics.Inbound, target)
			c.OpenOnReach(metrics.ConnKey{ClientID: "spiffe://cluster.local/ns/a/sa/b"})
			tc.do(c)
			c.Close(10, 20)
			c.Reached() // after Close: counts nothing
			c.Close(10, 20)
			fams := parse(t, scrape(t, m))

			got := unreached{}
			for _, why := range []metrics.UnreachedReason{metrics.NoRequest, metrics.NoEndpoint, metrics.ConnectFailed, metrics.PolicyDenied} {
				if v := fams.Sum("mesh_proxy_tcp_unreached_total", "direction", "inbound", "reason", string(why)); v > 0 {
					got[why] = v
				}
			}
			if tc.wantUnreached == nil {
				tc.wantUnreached = unreached{}
			}
			if diff := cmp.Diff(tc.wantUnreached, got); diff != "" {
				t.Errorf("unreached (-want +got):\n%s", diff)
			}
			if tc.wantOpen == 0 {
				if f, ok := fams["mesh_proxy_tcp_open_total"]; ok {
					t.Errorf("TCP series of a connection that reached nothing: %v", f)
				}
				return
			}
			for name, want := range map[string]float64{
				"mesh_proxy_tcp_open_total": 1, "mesh_proxy_tcp_close_total": 1, "mesh_proxy_tcp_open_connections": 0,
				"mesh_proxy_tcp_read_bytes_total": 10, "mesh_proxy_tcp_write_bytes_total": 20,
			} {
				if got := fams.Sum(name, "target_addr", target, "client_id", "spiffe://cluster.local/ns/a/sa/b"); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
		})
	}
}

// TestOpenOnReachConcurrent races an HTTP connection's requests, reporting
// from their own goroutines as HTTP/2's do, against its Close: each
// connection is counted exactly once, open and closed, or unreached, and
// no connection is left open. Run it with -race.
func TestOpenOnReachConcurrent(t *testing.T) {
	const conns = 200
	m := metrics.New()
	for i := range conns {
		c := m.Conn(metrics.Outbound, "10.0.0.7:80")
		c.OpenOnReach(metrics.ConnKey{})
		var wg sync.WaitGroup
		for j := range 4 {
			wg.Go(func() {
				if (i+j)%3 == 0 {
					c.Reached()
				} else {
					c.RequestUnreached(metrics.ConnectFailed)
				}
			})
		}
		wg.Go(func() { c.Close(1, 1) })
		wg.Wait()
	}
	fams := parse(t, scrape(t, m))
	opened, closed := fams.Sum("mesh_proxy_tcp_open_total"), fams.Sum("mesh_proxy_tcp_close_total")
	unreached := fams.Sum("mesh_proxy_tcp_unreached_total")
	if opened != closed || opened+unreached != conns {
		t.Errorf("opened %v, closed %v, unreached %v: want opened = closed and each of %d connections counted once", opened, closed, unreached, conns)
	}
	if open := fams.Sum("mesh_proxy_tcp_open_connections"); open != 0 {
		t.Errorf("open connections = %v, want 0", open)
	}
}
