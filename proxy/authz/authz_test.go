package authz

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
)

const (
	web     = "spiffe://cluster.local/ns/shop/sa/web"
	admin   = "spiffe://cluster.local/ns/ops/sa/admin"
	foreign = "spiffe://other.example/ns/shop/sa/web"
)

func client(addr, id string) Client { return Client{Addr: netip.MustParseAddr(addr), ID: id} }

// shopPolicy is a pod with three Servers: HTTP on 8080 for web's identity
// from the cluster's networks, opaque 6379 for anything in shop, and
// 9090 selected by a Server without any authorization; its other ports
// take all-authenticated.
func shopPolicy() *inboundv1.PodPolicy {
	return &inboundv1.PodPolicy{
		Revision:      "r1",
		DefaultPolicy: "all-authenticated",
		DefaultAuthorizations: []*inboundv1.Authorization{
			at.Authz("default:all-authenticated", at.MeshTLS("default:all-authenticated", "*")),
		},
		Ports: []*inboundv1.PortPolicy{
			{Port: 8080, Server: "web-http", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP1, Authorizations: []*inboundv1.Authorization{
				at.Authz("web-from-cluster", at.MeshTLS("MeshTLSAuthentication/web", web),
					at.Networks("NetworkAuthentication/cluster", at.CIDR("10.0.0.0/8", "10.9.0.0/16"), at.CIDR("fd00::/8"))),
				at.Authz("ops", at.MeshTLS("ServiceAccount/ops/admin", admin)),
			}},
			{Port: 6379, Server: "redis", Protocol: inboundv1.ProxyProtocol_PROXY_PROTOCOL_OPAQUE, Authorizations: []*inboundv1.Authorization{
				at.Authz("shop-clients", at.MeshTLS("MeshTLSAuthentication/shop", "spiffe://cluster.local/ns/shop/*")),
			}},
			{Port: 9090, Server: "locked"},
		},
		Probes: []*inboundv1.Probe{
			{Port: 8080, Path: "/healthz"},
			{Port: 8080, Path: "/ready?full=1"},
			{Port: 8080, Path: "live"},
			{Port: 8080, Path: "/a%20b"},
			{Port: 8080, Path: "/100%"},
			{Port: 9090, Path: GRPCHealthCheck},
		},
	}
}

func TestAuthorize(t *testing.T) {
	shop := shopPolicy()
	audit := proto.Clone(shop).(*inboundv1.PodPolicy)
	audit.Audit = true
	everyone := &inboundv1.PodPolicy{DefaultPolicy: "all-unauthenticated",
		DefaultAuthorizations: []*inboundv1.Authorization{at.Authz("default:all-unauthenticated")}}
	var ids []string // past the few compared in turn: a set
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("spiffe://cluster.local/ns/shop/sa/client-%d", i))
	}
	many := at.Default("many", at.Authz("many", at.MeshTLS("m", ids...)))
	tests := []struct {
		name   string
		policy *inboundv1.PodPolicy
		port   uint16
		client Client
		want   Decision
	}{
		{name: "all required match", policy: shop, port: 8080, client: client("10.1.2.3", web),
			want: Decision{Allowed: true, Server: "web-http", Authz: "web-from-cluster"}},
		{name: "identity right, network outside", policy: shop, port: 8080, client: client("192.0.2.1", web),
			want: Decision{Server: "web-http"}},
		{name: "identity right, network in an except", policy: shop, port: 8080, client: client("10.9.1.1", web),
			want: Decision{Server: "web-http"}},
		{name: "IPv4-mapped client is matched as IPv4", policy: shop, port: 8080, client: client("::ffff:10.1.2.3", web),
			want: Decision{Allowed: true, Server: "web-http", Authz: "web-from-cluster"}},
		{name: "IPv6 network", policy: shop, port: 8080, client: client("fd00::5", web),
			want: Decision{Allowed: true, Server: "web-http", Authz: "web-from-cluster"}},
		{name: "second authorization", policy: shop, port: 8080, client: client("192.0.2.1", admin),
			want: Decision{Allowed: true, Server: "web-http", Authz: "ops"}},
		{name: "plain text never matches mesh TLS", policy: shop, port: 8080, client: client("10.1.2.3", ""),
			want: Decision{Server: "web-http"}},
		{name: "prefix pattern", policy: shop, port: 6379, client: client("10.1.2.3", "spiffe://cluster.local/ns/shop/sa/cart"),
			want: Decision{Allowed: true, Server: "redis", Authz: "shop-clients"}},
		{name: "prefix pattern is a path prefix, not a string prefix", policy: shop, port: 6379, client: client("10.1.2.3", "spiffe://cluster.local/ns/shopping/sa/x"),
			want: Decision{Server: "redis"}},
		{name: "server without authorizations denies", policy: shop, port: 9090, client: client("10.1.2.3", web),
			want: Decision{Server: "locked"}},
		{name: "default: any identity of the trust domain", policy: shop, port: 3000, client: client("192.0.2.1", admin),
			want: Decision{Allowed: true, Server: "default:all-authenticated", Authz: "default:all-authenticated"}},
		{name: "default: another trust domain", policy: shop, port: 3000, client: client("10.1.2.3", foreign),
			want: Decision{Server: "default:all-authenticated"}},
		{name: "default: plain text", policy: shop, port: 3000, client: client("10.1.2.3", ""),
			want: Decision{Server: "default:all-authenticated"}},
		{name: "audit lets a denial through", policy: audit, port: 9090, client: client("10.1.2.3", ""),
			want: Decision{Allowed: true, Audit: true, Server: "locked"}},
		{name: "audit keeps the allowing authorization", policy: audit, port: 8080, client: client("10.1.2.3", web),
			want: Decision{Allowed: true, Server: "web-http", Authz: "web-from-cluster"}},
		{name: "no required authentication allows everyone", policy: everyone, port: 1, client: client("192.0.2.1", ""),
			want: Decision{Allowed: true, Server: "default:all-unauthenticated", Authz: "default:all-unauthenticated"}},
		{name: "one of many identities", policy: many, port: 80, client: client("192.0.2.1", "spiffe://cluster.local/ns/shop/sa/client-7"),
			want: Decision{Allowed: true, Server: "default:many", Authz: "many"}},
		{name: "none of many identities", policy: many, port: 80, client: client("192.0.2.1", web),
			want: Decision{Server: "default:many"}},
		{name: "empty message denies", policy: &inboundv1.PodPolicy{}, port: 80, client: client("10.1.2.3", web),
			want: Decision{Server: "default"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, dropped := Compile(tc.policy, Options{TrustDomain: "cluster.local"})
			if len(dropped) > 0 {
				t.Fatalf("Compile dropped %v", dropped)
			}
			if diff := cmp.Diff(tc.want, p.Authorize(tc.port, tc.client)); diff != "" {
				t.Errorf("Authorize(%d, %+v) (-want +got):\n%s", tc.port, tc.client, diff)
			}
		})
	}
}

func TestNilPolicyDenies(t *testing.T) {
	var p *Policy
	got := p.Authorize(80, client("10.0.0.1", web))
	if got.Allowed || got.Server == "" {
		t.Errorf("nil policy: %+v, want a denial that names its server", got)
	}
	if p.IsProbe(80, "GET", "/", "") || p.Protocol(80) != Detect || p.Revision() != "" {
		t.Error("nil policy: want no probes, detection and no revision")
	}
}

func TestProtocol(t *testing.T) {
	p, _ := Compile(shopPolicy(), Options{TrustDomain: "cluster.local"})
	for _, tc := range []struct {
		name      string
		port      uint16
		want      Protocol
		forwarded bool
	}{
		{name: "HTTP/1 server", port: 8080, want: HTTP1},
		{name: "opaque server", port: 6379, want: Opaque, forwarded: true},
		{name: "server without protocol", port: 9090, want: Detect},
		{name: "no server", port: 1234, want: Detect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := p.Protocol(tc.port)
			if got != tc.want || got.Forwarded() != tc.forwarded {
				t.Errorf("Protocol(%d) = %v (forwarded %v), want %v (forwarded %v)", tc.port, got, got.Forwarded(), tc.want, tc.forwarded)
			}
		})
	}
}

func TestIsProbe(t *testing.T) {
	p, _ := Compile(shopPolicy(), Options{TrustDomain: "cluster.local"})
	tests := []struct {
		name   string
		port   uint16
		method string
		path   string
		query  string
		want   bool
	}{
		{name: "HTTP probe", port: 8080, method: "GET", path: "/healthz", want: true},
		{name: "HEAD of an HTTP probe", port: 8080, method: "HEAD", path: "/healthz", want: true},
		{name: "POST to an HTTP probe's path", port: 8080, method: "POST", path: "/healthz"},
		{name: "HTTP probe with its query", port: 8080, method: "GET", path: "/ready", query: "full=1", want: true},
		{name: "a probe declared without a query matches any", port: 8080, method: "GET", path: "/healthz", query: "x=1", want: true},
		{name: "probe path with another query", port: 8080, method: "GET", path: "/ready", query: "full=2"},
		{name: "probe path without its query", port: 8080, method: "GET", path: "/ready"},
		{name: "path without a leading slash", port: 8080, method: "GET", path: "/live", want: true},
		{name: "encoded path, decoded by the request", port: 8080, method: "GET", path: "/a b", want: true},
		{name: "a literal percent", port: 8080, method: "GET", path: "/100%", want: true},
		{name: "another path", port: 8080, method: "GET", path: "/healthz/x"},
		{name: "probe path on another port", port: 6379, method: "GET", path: "/healthz"},
		{name: "gRPC probe", port: 9090, method: "POST", path: GRPCHealthCheck, want: true},
		{name: "another gRPC method", port: 9090, method: "POST", path: "/grpc.health.v1.Health/Watch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.IsProbe(tc.port, tc.method, tc.path, tc.query); got != tc.want {
				t.Errorf("IsProbe(%d, %s, %q, %q) = %v, want %v", tc.port, tc.method, tc.path, tc.query, got, tc.want)
			}
		})
	}
}

// TestCompileDrops: malformed entries are reported and never widen what
// is allowed.
func TestCompileDrops(t *testing.T) {
	msg := &inboundv1.PodPolicy{
		DefaultPolicy: "cluster-unauthenticated",
		DefaultAuthorizations: []*inboundv1.Authorization{
			at.Authz("bad-except", at.Networks("n", at.CIDR("0.0.0.0/0", "10.0.0.0/33"))),
			at.Authz("bad-cidr", at.Networks("n", at.CIDR("10.0.0.0/8x"), at.CIDR("192.168.0.0/16"))),
			at.Authz("no-kind", &inboundv1.Authentication{Name: "empty"}),
			at.Authz("bad-patterns", at.MeshTLS("m", "spiffe://cluster.local/ns/*/sa/web", "web", "spiffe://Cluster.local/x", admin)),
		},
		Ports: []*inboundv1.PortPolicy{
			{Port: 0, Server: "zero"},
			{Port: 70000, Server: "huge"},
			{Port: 80, Server: "first", Authorizations: []*inboundv1.Authorization{at.Authz("all")}},
			{Port: 80, Server: "second"},
			{Port: 81, Server: "future", Protocol: 42},
		},
		Probes: []*inboundv1.Probe{{Port: 0, Path: "/x"}},
	}
	p, dropped := Compile(msg, Options{TrustDomain: "cluster.local"})
	var got []string
	for _, err := range dropped {
		got = append(got, err.Error())
	}
	for _, want := range []string{
		`except "10.0.0.0/33"`, `network "10.0.0.0/8x"`, "neither networks nor mesh_tls",
		`pattern "spiffe://cluster.local/ns/*/sa/web"`, `pattern "web"`, `pattern "spiffe://Cluster.local/x"`,
		"port 0 is not a TCP port", "port 70000", `port 80 is already selected by server "first"`,
		"unknown proxy protocol 42", `probe "/x": port 0`,
	} {
		found := false
		for _, g := range got {
			found = found || strings.Contains(g, want)
		}
		if !found {
			t.Errorf("no dropped entry mentions %q; dropped:\n%s", want, strings.Join(got, "\n"))
		}
	}
	for _, tc := range []struct {
		name   string
		port   uint16
		client Client
		want   Decision
	}{
		{name: "a network with a bad except matches nothing", port: 1, client: client("10.1.1.1", ""),
			want: Decision{Server: "default:cluster-unauthenticated"}},
		{name: "good networks of the same authentication still match", port: 1, client: client("192.168.1.1", ""),
			want: Decision{Allowed: true, Server: "default:cluster-unauthenticated", Authz: "bad-cidr"}},
		{name: "good patterns still match", port: 1, client: client("203.0.113.1", admin),
			want: Decision{Allowed: true, Server: "default:cluster-unauthenticated", Authz: "bad-patterns"}},
		{name: "a bad pattern matches nothing", port: 1, client: client("203.0.113.1", web),
			want: Decision{Server: "default:cluster-unauthenticated"}},
		{name: "the first server of a port wins", port: 80, client: client("203.0.113.1", ""),
			want: Decision{Allowed: true, Server: "first", Authz: "all"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, p.Authorize(tc.port, tc.client)); diff != "" {
				t.Errorf("Authorize (-want +got):\n%s", diff)
			}
		})
	}
	if got := p.Protocol(81); got != Detect {
		t.Errorf("unknown protocol compiles to %v, want detection", got)
	}
}

func TestAnyNeedsTrustDomain(t *testing.T) {
	msg := &inboundv1.PodPolicy{DefaultAuthorizations: []*inboundv1.Authorization{at.Authz("any", at.MeshTLS("m", "*"))}}
	for _, tc := range []struct {
		name        string
		trustDomain string
		wantDropped bool
	}{
		{name: "none configured", wantDropped: true},
		{name: "invalid", trustDomain: "Not A Domain", wantDropped: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, dropped := Compile(msg, Options{TrustDomain: tc.trustDomain})
			if (len(dropped) > 0) != tc.wantDropped {
				t.Errorf("dropped = %v, want some: %v", dropped, tc.wantDropped)
			}
			if d := p.Authorize(80, client("10.0.0.1", web)); d.Allowed {
				t.Errorf("\"*\" without a trust domain allowed %s", web)
			}
		})
	}
}

// FuzzAuthorize compiles arbitrary networks, patterns and probe paths and
// decides arbitrary clients: it must never panic, never allow a client an
// authorization with a bad entry would not, and always name the server.
// Run it with
//
//	go test -run '^$' -fuzz FuzzAuthorize ./proxy/authz/
func FuzzAuthorize(f *testing.F) {
	// cidr, except, pattern, probe path, client address, client ID, port
	f.Add("10.0.0.0/8", "10.9.0.0/16", web, "/healthz", "10.1.2.3", web, uint16(8080))           // all match
	f.Add("10.0.0.0/8", "10.9.0.0/16", web, "/healthz", "10.9.2.3", web, uint16(8080))           // in the except
	f.Add("fd00::/8", "", "spiffe://cluster.local/ns/shop/*", "/", "fd00::1", web, uint16(1))    // IPv6 and a prefix
	f.Add("::ffff:10.0.0.0/104", "", "*", "", "10.0.0.1", web, uint16(80))                       // mapped prefix, any ID
	f.Add("10.0.0.1", "", "*", "/ready?full=1", "::ffff:10.0.0.1", "", uint16(65535))            // bare address, plain text
	f.Add("10.0.0.0/33", "x", "spiffe://cluster.local/ns/*/sa/a", "//h/x", "bad", "", uint16(0)) // all malformed
	f.Add("0.0.0.0/0", "0.0.0.0/0", "/*", "%zz", "1.2.3.4", "spiffe://cluster.local", uint16(9)) // except everything
	f.Fuzz(func(t *testing.T, cidrS, except, pattern, probePath, addr, id string, port uint16) {
		excepts := []string{}
		if except != "" {
			excepts = append(excepts, except)
		}
		msg := &inboundv1.PodPolicy{
			Ports: []*inboundv1.PortPolicy{{Port: uint32(port), Server: "s", Authorizations: []*inboundv1.Authorization{
				at.Authz("both", at.Networks("n", at.CIDR(cidrS, excepts...)), at.MeshTLS("m", pattern)),
			}}},
			DefaultPolicy: "deny",
			Probes:        []*inboundv1.Probe{{Port: uint32(port), Path: probePath}},
		}
		p, dropped := Compile(msg, Options{TrustDomain: "cluster.local"})
		c := Client{ID: id}
		c.Addr, _ = netip.ParseAddr(addr)
		d := p.Authorize(port, c)
		if d.Server == "" || d.Audit {
			t.Fatalf("decision %+v: want a server and no audit", d)
		}
		if d.Allowed {
			if id == "" || !c.Addr.IsValid() {
				t.Fatalf("allowed a client without an identity or address: %+v", d)
			}
			for _, err := range dropped {
				if strings.HasPrefix(err.Error(), `server s: authorization "both"`) {
					t.Fatalf("allowed %+v through an authorization with a dropped entry (%v)", c, err)
				}
			}
		}
		p.IsProbe(port, "GET", probePath, "")
		_ = fmt.Sprint(p.Protocol(port))
	})
}

// BenchmarkAuthorize is the per-connection cost of a decision: a pod with
// servers Servers, each with authorizations AuthorizationPolicies of two
// required authentications, the client's the last one of its port. Run
// with
//
//	go test -run '^$' -bench Authorize -benchmem ./proxy/authz/
func BenchmarkAuthorize(b *testing.B) {
	for _, size := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("servers=%d,authorizations=%d", size, size), func(b *testing.B) {
			msg := at.Large(size, size, 8080, at.MeshTLS("m", web), at.Networks("n", at.CIDR("10.0.0.0/8")))
			p, dropped := Compile(msg, Options{TrustDomain: "cluster.local"})
			if len(dropped) > 0 {
				b.Fatal(dropped)
			}
			c := client("10.1.2.3", web)
			b.ReportAllocs()
			for b.Loop() {
				if d := p.Authorize(8080, c); !d.Allowed {
					b.Fatalf("denied: %+v", d)
				}
			}
		})
	}
}
