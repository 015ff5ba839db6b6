package dnsresolve

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

func TestSearchNames(t *testing.T) {
	k8s := []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"}
	tests := []struct {
		name   string
		host   string
		search []string
		ndots  int
		want   []string
	}{
		{
			name: "absolute name is queried alone", host: "mesh-controller.mesh-system.svc.cluster.local.",
			search: k8s, ndots: 5,
			want: []string{"mesh-controller.mesh-system.svc.cluster.local."},
		},
		{
			name: "fewer dots than ndots: search list first, as is last", host: "web",
			search: k8s, ndots: 5,
			want: []string{
				"web.shop.svc.cluster.local.", "web.svc.cluster.local.", "web.cluster.local.", "web.",
			},
		},
		{
			name: "the kubernetes ndots:5 trap: four dots still search first",
			host: "api.github.com.example.org", search: []string{"svc.cluster.local"}, ndots: 5,
			want: []string{"api.github.com.example.org.svc.cluster.local.", "api.github.com.example.org."},
		},
		{
			name: "dots equal to ndots: as is first", host: "example.com",
			search: k8s, ndots: 1,
			want: []string{
				"example.com.", "example.com.shop.svc.cluster.local.",
				"example.com.svc.cluster.local.", "example.com.cluster.local.",
			},
		},
		{
			name: "ndots 0: even a single label is tried as is first", host: "web",
			search: []string{"svc.test"}, ndots: 0,
			want: []string{"web.", "web.svc.test."},
		},
		{
			name: "no search list", host: "web", ndots: 1,
			want: []string{"web."},
		},
		{
			name: "candidate over 253 characters is skipped", host: strings.Repeat("a.", 100) + "b",
			search: []string{strings.Repeat("c", 60), "short"}, ndots: 200,
			want: []string{strings.Repeat("a.", 100) + "b.short.", strings.Repeat("a.", 100) + "b."},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := searchNames(tc.host, tc.search, tc.ndots)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("searchNames(%q, ndots %d) (-want +got):\n%s", tc.host, tc.ndots, diff)
			}
		})
	}
}

func TestNormalizeName(t *testing.T) {
	tests := []struct {
		name    string
		host    string
		want    string
		wantErr string // substring; empty means no error
	}{
		{name: "lower-cased", host: "Mesh-Controller.Mesh-System.SVC", want: "mesh-controller.mesh-system.svc"},
		{name: "trailing dot kept", host: "svc.test.", want: "svc.test."},
		{name: "underscore allowed", host: "_grpc._tcp.svc.test", want: "_grpc._tcp.svc.test"},
		{name: "digits only label", host: "123.test", want: "123.test"},
		{name: "longest name", host: longName(253), want: longName(253)},
		{name: "empty", host: "", wantErr: "empty"},
		{name: "root only", host: ".", wantErr: "empty"},
		{name: "too long", host: longName(254), wantErr: "more than 253"},
		{name: "empty label", host: "a..test", wantErr: "empty label"},
		{name: "leading dot", host: ".test", wantErr: "empty label"},
		{name: "label of 64", host: strings.Repeat("x", 64) + ".test", wantErr: "longer than 63"},
		{name: "leading hyphen", host: "-web.test", wantErr: "hyphen"},
		{name: "trailing hyphen", host: "web-.test", wantErr: "hyphen"},
		{name: "space", host: "my host.test", wantErr: "character ' '"},
		{name: "host:port", host: "svc.test:8086", wantErr: "character ':'"},
		{name: "brackets", host: "[::1]", wantErr: "character '['"},
		{name: "non-ASCII", host: "bücher.test", wantErr: "character"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := normalizeName(tc.host)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("normalizeName(%q) error = %v, want ErrInvalidName containing %q", tc.host, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("normalizeName(%q) = %q, %v; want %q", tc.host, got, err, tc.want)
			}
		})
	}
}

// longName returns a valid name of n characters.
func longName(n int) string {
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strings.Repeat("a", min(63, n-b.Len())))
	}
	return strings.TrimSuffix(b.String(), ".")
}

func TestChase(t *testing.T) {
	tests := []struct {
		name      string
		answer    []string
		qtype     uint16
		wantAddrs []string
		wantTTL   time.Duration
	}{
		{
			name:      "plain A records",
			answer:    []string{"svc.test. 30 IN A 10.0.0.1", "svc.test. 10 IN A 10.0.0.2"},
			qtype:     dns.TypeA,
			wantAddrs: []string{"10.0.0.1", "10.0.0.2"}, wantTTL: 10 * time.Second,
		},
		{
			name: "CNAME chain, smallest TTL along it",
			answer: []string{
				"svc.test. 5 IN CNAME mid.test.", "mid.test. 60 IN CNAME end.test.", "end.test. 60 IN AAAA fd00::1",
			},
			qtype:     dns.TypeAAAA,
			wantAddrs: []string{"fd00::1"}, wantTTL: 5 * time.Second,
		},
		{
			name:      "chain out of order and in mixed case",
			answer:    []string{"END.test. 60 IN A 10.0.0.3", "Svc.Test. 60 IN CNAME end.TEST."},
			qtype:     dns.TypeA,
			wantAddrs: []string{"10.0.0.3"}, wantTTL: 60 * time.Second,
		},
		{
			name:      "records off the chain are ignored",
			answer:    []string{"evil.test. 1 IN A 10.6.6.6", "svc.test. 60 IN A 10.0.0.1"},
			qtype:     dns.TypeA,
			wantAddrs: []string{"10.0.0.1"}, wantTTL: 60 * time.Second,
		},
		{
			name:   "addresses of the CNAME owner are not the target's",
			answer: []string{"svc.test. 60 IN CNAME end.test.", "svc.test. 60 IN A 10.6.6.6"},
			qtype:  dns.TypeA,
		},
		{
			name:   "CNAME loop ends without addresses",
			answer: []string{"svc.test. 60 IN CNAME loop.test.", "loop.test. 60 IN CNAME svc.test."},
			qtype:  dns.TypeA,
		},
		{
			name:      "duplicates dropped",
			answer:    []string{"svc.test. 60 IN A 10.0.0.1", "svc.test. 60 IN A 10.0.0.1"},
			qtype:     dns.TypeA,
			wantAddrs: []string{"10.0.0.1"}, wantTTL: 60 * time.Second,
		},
		{
			name:   "other type only",
			answer: []string{"svc.test. 60 IN A 10.0.0.1"},
			qtype:  dns.TypeAAAA,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rrs []dns.RR
			for _, s := range tc.answer {
				rr, err := dns.NewRR(s)
				if err != nil {
					t.Fatal(err)
				}
				rrs = append(rrs, rr)
			}
			got, ttl := chase(rrs, "svc.test.", tc.qtype)
			var gotStrs []string
			for _, a := range got {
				gotStrs = append(gotStrs, a.String())
			}
			if diff := cmp.Diff(tc.wantAddrs, gotStrs); diff != "" {
				t.Errorf("addresses (-want +got):\n%s", diff)
			}
			if len(got) > 0 && ttl != tc.wantTTL {
				t.Errorf("ttl = %v, want %v", ttl, tc.wantTTL)
			}
		})
	}
}

func TestSplitTarget(t *testing.T) {
	tests := []struct {
		name        string
		endpoint    string
		defaultPort string
		wantHost    string
		wantPort    uint16
		wantErr     string
	}{
		{name: "name and port", endpoint: "mesh-controller.mesh-system.svc.cluster.local.:8086",
			wantHost: "mesh-controller.mesh-system.svc.cluster.local.", wantPort: 8086},
		{name: "IPv4 and port", endpoint: "10.0.0.1:8086", wantHost: "10.0.0.1", wantPort: 8086},
		{name: "IPv6 and port", endpoint: "[fd00::1]:8086", wantHost: "fd00::1", wantPort: 8086},
		{name: "default port", endpoint: "svc.test", defaultPort: "443", wantHost: "svc.test", wantPort: 443},
		{name: "bare IPv6 with default port", endpoint: "fd00::1", defaultPort: "443", wantHost: "fd00::1", wantPort: 443},
		{name: "missing port", endpoint: "svc.test", wantErr: "want host:port"},
		{name: "port zero", endpoint: "svc.test:0", wantErr: "port \"0\""},
		{name: "named port", endpoint: "svc.test:grpc", wantErr: "port \"grpc\""},
		{name: "port too big", endpoint: "svc.test:65536", wantErr: "port \"65536\""},
		{name: "bad host", endpoint: "bad..name:80", wantErr: "invalid host name"},
		{name: "empty", endpoint: "", wantErr: "want host:port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host, port, err := splitTarget(tc.endpoint, tc.defaultPort)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("splitTarget(%q) error = %v, want one containing %q", tc.endpoint, err, tc.wantErr)
				}
				return
			}
			if err != nil || host != tc.wantHost || port != tc.wantPort {
				t.Errorf("splitTarget(%q) = %q, %d, %v; want %q, %d", tc.endpoint, host, port, err, tc.wantHost, tc.wantPort)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{
			name: "NXDOMAIN",
			err:  &Error{Name: "svc.test", Query: "svc.test.", Server: "10.0.0.10:53", Rcode: dns.RcodeNameError, Err: ErrNotFound},
			want: "dnsresolve: lookup svc.test via 10.0.0.10:53: no such host (NXDOMAIN)",
		},
		{
			name: "NODATA after the search list",
			err:  &Error{Name: "web", Query: "web.", Server: "10.0.0.10:53", Rcode: dns.RcodeSuccess, Err: ErrNotFound},
			want: "dnsresolve: lookup web via 10.0.0.10:53: no such host (no A or AAAA records)",
		},
		{
			name: "search domain named",
			err:  &Error{Name: "web", Query: "web.svc.test.", Server: "10.0.0.10:53", Rcode: dns.RcodeServerFailure, Err: ErrServerMisbehaving},
			want: "dnsresolve: lookup web (as web.svc.test.) via 10.0.0.10:53: server misbehaving (SERVFAIL)",
		},
		{
			name: "no response",
			err:  &Error{Name: "svc.test", Query: "svc.test.", Server: "10.0.0.10:53", Rcode: NoResponse, Err: errors.New("i/o timeout")},
			want: "dnsresolve: lookup svc.test via 10.0.0.10:53: i/o timeout",
		},
		{
			name: "invalid name, nothing sent",
			err:  &Error{Name: "a..b", Rcode: NoResponse, Err: ErrInvalidName},
			want: "dnsresolve: lookup a..b: invalid host name",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestMerge checks how the A and AAAA answers for one name combine.
func TestMerge(t *testing.T) {
	v4 := result{addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, ttl: 30 * time.Second}
	v6 := result{addrs: []netip.Addr{netip.MustParseAddr("fd00::1")}, ttl: 20 * time.Second}
	missing := result{err: &Error{Err: ErrNotFound}, ttl: 10 * time.Second}
	failed := result{err: &Error{Err: ErrServerMisbehaving}}
	tests := []struct {
		name      string
		v4, v6    result
		wantAddrs int
		wantTTL   time.Duration
		wantErr   error
	}{
		{name: "both", v4: v4, v6: v6, wantAddrs: 2, wantTTL: 20 * time.Second},
		{name: "IPv4 only", v4: v4, v6: missing, wantAddrs: 1, wantTTL: 30 * time.Second},
		{name: "IPv6 only", v4: missing, v6: v6, wantAddrs: 1, wantTTL: 20 * time.Second},
		{name: "IPv6 failed: ask again soon", v4: v4, v6: failed, wantAddrs: 1, wantTTL: 0},
		{name: "neither exists", v4: missing, v6: missing, wantTTL: 10 * time.Second, wantErr: ErrNotFound},
		{name: "one failed, one missing", v4: missing, v6: failed, wantErr: ErrServerMisbehaving},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := merge(tc.v4, tc.v6)
			if len(got.addrs) != tc.wantAddrs || got.ttl != tc.wantTTL || !errors.Is(got.err, tc.wantErr) ||
				(tc.wantErr == nil) != (got.err == nil) {
				t.Errorf("merge = %d addresses, ttl %v, error %v; want %d, %v, %v",
					len(got.addrs), got.ttl, got.err, tc.wantAddrs, tc.wantTTL, tc.wantErr)
			}
		})
	}
}
