package watcher

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseAuthority(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Authority
		wantErr bool
	}{
		{name: "service FQDN", in: "web.shop.svc.cluster.local:80", want: Authority{Host: "web.shop.svc.cluster.local", Port: 80}},
		{name: "absolute name", in: "web.shop.svc.cluster.local.:80", want: Authority{Host: "web.shop.svc.cluster.local", Absolute: true, Port: 80}},
		{name: "short name", in: "web:8080", want: Authority{Host: "web", Port: 8080}},
		{name: "upper case is folded", in: "Web.Shop:80", want: Authority{Host: "web.shop", Port: 80}},
		{name: "underscore is a name, not found later", in: "_grpc.example.com:443", want: Authority{Host: "_grpc.example.com", Port: 443}},
		{name: "IPv4", in: "10.96.0.10:80", want: Authority{IP: netip.MustParseAddr("10.96.0.10"), Port: 80}},
		{name: "IPv6 in brackets", in: "[fd00::a]:80", want: Authority{IP: netip.MustParseAddr("fd00::a"), Port: 80}},
		{name: "IPv4-mapped IPv6 is unmapped", in: "[::ffff:10.0.0.1]:80", want: Authority{IP: netip.MustParseAddr("10.0.0.1"), Port: 80}},
		{name: "highest port", in: "web:65535", want: Authority{Host: "web", Port: 65535}},
		{name: "empty", in: "", wantErr: true},
		{name: "no port", in: "web.shop.svc.cluster.local", wantErr: true},
		{name: "empty port", in: "web:", wantErr: true},
		{name: "port zero", in: "web:0", wantErr: true},
		{name: "port too big", in: "web:65536", wantErr: true},
		{name: "signed port", in: "web:+80", wantErr: true},
		{name: "named port", in: "web:http", wantErr: true},
		{name: "no host", in: ":80", wantErr: true},
		{name: "lone dot", in: ".:80", wantErr: true},
		{name: "empty label", in: "web..shop:80", wantErr: true},
		{name: "leading dot", in: ".web:80", wantErr: true},
		{name: "IPv6 without brackets", in: "fd00::a:80", wantErr: true},
		{name: "IPv4 in brackets", in: "[10.0.0.1]:80", wantErr: true},
		{name: "name in brackets", in: "[web]:80", wantErr: true},
		{name: "IPv6 zone", in: "[fe80::1%eth0]:80", wantErr: true},
		{name: "userinfo", in: "user@web:80", wantErr: true},
		{name: "path", in: "web/x:80", wantErr: true},
		{name: "space", in: "web shop:80", wantErr: true},
		{name: "label too long", in: strings.Repeat("a", 64) + ":80", wantErr: true},
		{name: "name too long", in: strings.Repeat("a.", 127) + "ab:80", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAuthority(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidAuthority) {
					t.Fatalf("ParseAuthority(%q) = %+v, %v; want an ErrInvalidAuthority", tc.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAuthority(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("ParseAuthority(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestParseServiceName(t *testing.T) {
	tests := []struct {
		name   string
		fqdn   string
		domain string
		want   ServiceName
		wantOK bool
	}{
		{name: "service", fqdn: "web.shop.svc.cluster.local", domain: "cluster.local", want: ServiceName{Namespace: "shop", Service: "web"}, wantOK: true},
		{name: "pod of headless service", fqdn: "web-0.web.shop.svc.cluster.local", domain: "cluster.local", want: ServiceName{Namespace: "shop", Service: "web", Hostname: "web-0"}, wantOK: true},
		{name: "custom domain", fqdn: "web.shop.svc.example.org", domain: "example.org", want: ServiceName{Namespace: "shop", Service: "web"}, wantOK: true},
		{name: "other domain", fqdn: "web.shop.svc.cluster.local", domain: "example.org"},
		{name: "no svc label", fqdn: "web.shop.cluster.local", domain: "cluster.local"},
		{name: "namespace only", fqdn: "shop.svc.cluster.local", domain: "cluster.local"},
		{name: "too many labels", fqdn: "a.b.c.d.svc.cluster.local", domain: "cluster.local"},
		{name: "service name starting with a digit", fqdn: "1web.shop.svc.cluster.local", domain: "cluster.local"},
		{name: "underscore", fqdn: "_web.shop.svc.cluster.local", domain: "cluster.local"},
		{name: "external name", fqdn: "www.example.com", domain: "cluster.local"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseServiceName(tc.fqdn, tc.domain)
			if ok != tc.wantOK {
				t.Fatalf("parseServiceName(%q, %q) ok = %v, want %v", tc.fqdn, tc.domain, ok, tc.wantOK)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseServiceName(%q, %q) (-want +got):\n%s", tc.fqdn, tc.domain, diff)
			}
		})
	}
}

func TestSearchNames(t *testing.T) {
	tests := []struct {
		name     string
		host     string
		absolute bool
		ns       string
		want     []string
	}{
		{
			name: "short name in a namespace",
			host: "web", ns: "shop",
			want: []string{"web.shop.svc.cluster.local", "web.svc.cluster.local", "web.cluster.local", "web"},
		},
		{
			name: "no context namespace",
			host: "web.shop",
			want: []string{"web.shop.svc.cluster.local", "web.shop.cluster.local", "web.shop"},
		},
		{
			name: "absolute",
			host: "web.shop.svc.cluster.local", absolute: true, ns: "shop",
			want: []string{"web.shop.svc.cluster.local"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := searchNames(tc.host, tc.absolute, tc.ns, "cluster.local")
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("searchNames (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParseAuthority feeds ParseAuthority what a proxy might send, and the
// names it accepts to parseServiceName and searchNames. Properties: nothing
// panics; an accepted authority has a port and exactly one of a name (lower
// case, at most 253 bytes) and an IP; and it formats back to text that
// parses to the same Authority.
//
//	go test ./controller/destination/watcher -run '^$' -fuzz FuzzParseAuthority
func FuzzParseAuthority(f *testing.F) {
	for _, seed := range []string{
		"web.shop.svc.cluster.local:80",         // a Service's FQDN
		"web-0.web.shop.svc.cluster.local:8080", // a pod of a headless Service
		"web:80",                                // short name, needs the context namespace
		"web.shop.svc.cluster.local.:80",        // absolute: no search path
		"WEB.Shop:80",                           // case folds
		"10.96.0.10:443",                        // a cluster IP
		"[fd00::10]:443",                        // IPv6 in brackets
		"[::ffff:10.0.0.1]:80",                  // IPv4-mapped, unmapped
		"[fe80::1%eth0]:80",                     // zones are refused
		"fd00::10:443",                          // IPv6 without brackets is ambiguous
		"web",                                   // no port
		"web:0",                                 // port zero
		"web:99999",                             // port out of range
		"a..b:1",                                // empty label
		":80",                                   // no host
		"[web]:80",                              // brackets around a name
		"web\x00:80",                            // control byte
		"\xff\xfe:80",                           // not UTF-8
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAuthority(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidAuthority) {
				t.Fatalf("ParseAuthority(%q) error %v does not wrap ErrInvalidAuthority", s, err)
			}
			return
		}
		if a.Port == 0 {
			t.Fatalf("ParseAuthority(%q) accepted port 0", s)
		}
		if (a.Host != "") == a.IP.IsValid() {
			t.Fatalf("ParseAuthority(%q) = %+v: want exactly one of Host and IP", s, a)
		}
		if a.Host != strings.ToLower(a.Host) || len(a.Host) > 253 {
			t.Fatalf("ParseAuthority(%q) host %q is not lower case or is too long", s, a.Host)
		}
		again, err := ParseAuthority(a.String())
		if err != nil {
			t.Fatalf("ParseAuthority(%q).String() = %q does not parse: %v", s, a.String(), err)
		}
		if again != a {
			t.Fatalf("round trip of %q: got %+v, want %+v", s, again, a)
		}
		if a.Host == "" {
			return
		}
		for _, name := range searchNames(a.Host, a.Absolute, "shop", DefaultClusterDomain) {
			n, ok := parseServiceName(name, DefaultClusterDomain)
			if ok && (n.Service == "" || n.Namespace == "" || strings.Contains(n.Service+n.Namespace+n.Hostname, ".")) {
				t.Fatalf("parseServiceName(%q) = %+v: want non-empty single labels", name, n)
			}
		}
	})
}
