package certify

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

// from is a context whose gRPC peer is ip, as the server sees a client
// connected from it.
func from(ctx context.Context, ip netip.Addr) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 40000))})
}

// TestClientLimiterBounded calls Certify from 100,000 addresses: the rate
// of at most MaxClients of them is tracked, none of them is limited, and a
// flooder seen among them is still limited.
func TestClientLimiterBounded(t *testing.T) {
	const maxClients = 1000
	dir := identitytest.NewSecretDir(t)
	identitytest.NewCA(t).WriteSecret(t, dir)
	now := time.Now()
	s, err := New(Config{
		IssuerDir: dir.Path, MaxClients: maxClients, Clock: func() time.Time { return now },
		Reviewer: TokenReviewerFunc(func(context.Context, string, string) (TokenInfo, error) {
			t.Error("a request with no identity was reviewed")
			return TokenInfo{}, ErrUnauthenticated
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	flooder := netip.MustParseAddr("10.0.0.1")
	ip := netip.MustParseAddr("10.1.0.0")
	for i := range 100_000 {
		ctx := from(t.Context(), ip)
		if i%100 == 0 {
			ctx = from(t.Context(), flooder) // seen often, so never forgotten
		}
		ip = ip.Next()
		_, err := s.Certify(ctx, &identityv1.CertifyRequest{})
		got := status.Code(err)
		if i%100 == 0 && i/100 >= DefaultClientBurst {
			if got != codes.ResourceExhausted {
				t.Fatalf("flooder's request %d: %v, want ResourceExhausted", i/100, got)
			}
			continue
		}
		if got != codes.InvalidArgument {
			t.Fatalf("request %d: %v, want InvalidArgument", i, err)
		}
		if n := s.clients.size(); n > maxClients {
			t.Fatalf("%d clients tracked after %d requests, want at most %d", n, i+1, maxClients)
		}
	}
	if n := s.clients.size(); n != maxClients {
		t.Errorf("%d clients tracked, want %d", n, maxClients)
	}
}

func TestClientLimiterRate(t *testing.T) {
	l := newClientLimiter(5, 10, 4)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	now := time.Unix(1e9, 0)
	take := func(c netip.Addr, n int) (allowed, firsts int) {
		for range n {
			ok, first := l.allow(c, now)
			if ok {
				allowed++
			}
			if first {
				firsts++
			}
		}
		return allowed, firsts
	}
	tests := []struct {
		name         string
		advance      time.Duration
		client       netip.Addr
		n            int
		want, firsts int
	}{
		{"burst", 0, a, 15, 10, 1},
		{"other client", 0, b, 3, 3, 0},
		{"refill of 200ms, the same flood", 200 * time.Millisecond, a, 3, 1, 0},
		{"refill capped at the burst", time.Hour, a, 20, 10, 1},
		{"a renewal every 17h", 17 * time.Hour, a, 1, 1, 0},
	}
	for _, tc := range tests {
		now = now.Add(tc.advance)
		if allowed, firsts := take(tc.client, tc.n); allowed != tc.want || firsts != tc.firsts {
			t.Errorf("%s: %d of %d allowed, %d first refusals; want %d, %d", tc.name, allowed, tc.n, firsts, tc.want, tc.firsts)
		}
	}
}

func TestLRU(t *testing.T) {
	c := newLRU[string, int](2)
	c.add("a", 1)
	c.add("b", 2)
	if v, ok := c.get("a"); !ok || *v != 1 {
		t.Fatalf("get(a) = %v, %v", v, ok)
	}
	c.add("c", 3) // forgets b, used least recently
	if _, ok := c.get("b"); ok {
		t.Error("b is still there")
	}
	if _, ok := c.get("a"); !ok {
		t.Error("a was forgotten")
	}
	if c.len() != 2 || c.order.Len() != 2 {
		t.Errorf("len %d, list %d; want 2", c.len(), c.order.Len())
	}
	c.remove("a")
	c.remove("a")
	if c.len() != 1 || c.order.Len() != 1 {
		t.Errorf("after remove: len %d, list %d; want 1", c.len(), c.order.Len())
	}
}

func TestDenialsBounded(t *testing.T) {
	d := newDenials(time.Minute, 100)
	now := time.Unix(1e9, 0)
	for i := range 10_000 {
		d.add(hashToken([]byte{byte(i), byte(i >> 8)}), now)
	}
	if n := d.size(); n != 100 {
		t.Errorf("%d denials remembered, want 100", n)
	}
	newest := hashToken([]byte{byte(9999 & 0xff), byte(9999 >> 8)})
	if !d.denied(newest, now.Add(time.Minute-time.Nanosecond)) {
		t.Error("the newest denial was forgotten")
	}
	if d.denied(newest, now.Add(time.Minute)) {
		t.Error("a denial outlived its TTL")
	}
	if n := d.size(); n != 99 {
		t.Errorf("an expired denial is kept: %d remembered", n)
	}
}

func TestClientAddr(t *testing.T) {
	tests := []struct {
		name string
		addr net.Addr
		want netip.Addr
	}{
		{"IPv4", &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5}, netip.MustParseAddr("10.1.2.3")},
		{"IPv6", &net.TCPAddr{IP: net.ParseIP("fd00::7"), Port: 5}, netip.MustParseAddr("fd00::7")},
		{"not TCP", &net.UnixAddr{Name: "@x", Net: "unix"}, netip.Addr{}},
		{"none", nil, netip.Addr{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			if tc.addr != nil {
				ctx = peer.NewContext(ctx, &peer.Peer{Addr: tc.addr})
			}
			if got := clientAddr(ctx); got != tc.want {
				t.Errorf("clientAddr = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestKubeTokenReviewerForConfig checks that the reviewer's client has the
// rate asked for and that the caller's config is left as it was.
func TestKubeTokenReviewerForConfig(t *testing.T) {
	api := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(api.Close)
	rc := &rest.Config{Host: api.URL, QPS: 5, Burst: 10}
	tests := []struct {
		name       string
		qps        float32
		burst      int
		wantQPS    float32
		wantErrNil bool
	}{
		{"defaults", 0, 0, DefaultReviewQPS, true},
		{"set", 20, 40, 20, true},
		{"negative", -1, 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewKubeTokenReviewerForConfig(rc, tc.qps, tc.burst)
			if (err == nil) != tc.wantErrNil {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				return
			}
			got := r.client.(*kubernetes.Clientset).AuthenticationV1().RESTClient().GetRateLimiter().QPS()
			if got != tc.wantQPS {
				t.Errorf("QPS = %v, want %v", got, tc.wantQPS)
			}
			if rc.QPS != 5 || rc.Burst != 10 {
				t.Errorf("the caller's config changed to QPS %v burst %d", rc.QPS, rc.Burst)
			}
		})
	}
}
