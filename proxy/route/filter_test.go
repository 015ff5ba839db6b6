package route

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fields is a HeaderEditor over a header list, as the HTTP paths keep
// one: names in the case they came, compared in lower case.
type fields []Header

func (f *fields) Set(name, value string) {
	f.Del(name)
	f.Add(name, value)
}

func (f *fields) Add(name, value string) { *f = append(*f, Header{name, value}) }

func (f *fields) Del(name string) {
	*f = slices.DeleteFunc(*f, func(h Header) bool { return strings.EqualFold(h.Name, name) })
}

// get joins the values of name with ",", as the conformance tests read
// them.
func (f fields) get(name string) (string, bool) {
	var vs []string
	for _, h := range f {
		if strings.EqualFold(h.Name, name) {
			vs = append(vs, h.Value)
		}
	}
	return strings.Join(vs, ","), vs != nil
}

// TestHeaderModifierApply has the cases of the conformance test
// MeshHTTPRouteRequestHeaderModifier
// (conformance/tests/mesh/httproute-request-header-modifier.yaml), and
// the order of the actions.
func TestHeaderModifierApply(t *testing.T) {
	tests := []struct {
		name   string
		mod    *HeaderModifier
		in     fields
		want   map[string]string
		absent []string
	}{{
		name: "set",
		mod:  &HeaderModifier{Set: []Header{{"x-header-set", "set-overwrites-values"}}},
		in:   fields{{"Some-Other-Header", "val"}},
		want: map[string]string{"some-other-header": "val", "x-header-set": "set-overwrites-values"},
	}, {
		name: "set overwrites",
		mod:  &HeaderModifier{Set: []Header{{"x-header-set", "set-overwrites-values"}}},
		in:   fields{{"Some-Other-Header", "val"}, {"X-Header-Set", "some-other-value"}},
		want: map[string]string{"some-other-header": "val", "x-header-set": "set-overwrites-values"},
	}, {
		name: "add",
		mod:  &HeaderModifier{Add: []Header{{"x-header-add", "add-appends-values"}}},
		in:   fields{{"Some-Other-Header", "val"}},
		want: map[string]string{"some-other-header": "val", "x-header-add": "add-appends-values"},
	}, {
		name: "add appends",
		mod:  &HeaderModifier{Add: []Header{{"x-header-add", "add-appends-values"}}},
		in:   fields{{"Some-Other-Header", "val"}, {"X-Header-Add", "some-other-value"}},
		want: map[string]string{"some-other-header": "val", "x-header-add": "some-other-value,add-appends-values"},
	}, {
		name:   "remove",
		mod:    &HeaderModifier{Remove: []string{"x-header-remove"}},
		in:     fields{{"X-Header-Remove", "val"}},
		absent: []string{"x-header-remove"},
	}, {
		name: "multiple",
		mod: &HeaderModifier{
			Set:    []Header{{"x-header-set-1", "header-set-1"}, {"x-header-set-2", "header-set-2"}},
			Add:    []Header{{"x-header-add-1", "header-add-1"}, {"x-header-add-2", "header-add-2"}, {"x-header-add-3", "header-add-3"}},
			Remove: []string{"x-header-remove-1", "x-header-remove-2"},
		},
		in: fields{{"X-Header-Set-2", "set-val-2"}, {"X-Header-Add-2", "add-val-2"}, {"X-Header-Remove-2", "remove-val-2"}, {"Another-Header", "another-header-val"}},
		want: map[string]string{
			"x-header-set-1": "header-set-1", "x-header-set-2": "header-set-2",
			"x-header-add-1": "header-add-1", "x-header-add-2": "add-val-2,header-add-2", "x-header-add-3": "header-add-3",
			"another-header": "another-header-val",
		},
		absent: []string{"x-header-remove-1", "x-header-remove-2"},
	}, {
		name: "case-insensitivity",
		mod: &HeaderModifier{
			Set: []Header{{"x-header-set", "header-set"}}, Add: []Header{{"x-header-add", "header-add"}}, Remove: []string{"x-header-remove"},
		},
		in: fields{{"x-header-set", "original-val-set"}, {"x-header-add", "original-val-add"}, {"x-header-remove", "original-val-remove"}, {"Another-Header", "another-header-val"}},
		want: map[string]string{
			"x-header-set": "header-set", "x-header-add": "original-val-add,header-add", "another-header": "another-header-val",
		},
		absent: []string{"x-header-remove"},
	}, {
		// The spec allows one action per name; in filters that break
		// that, Set comes before Add and Remove last.
		name: "set, add, remove",
		mod: &HeaderModifier{
			Set: []Header{{"a", "set"}, {"b", "set"}}, Add: []Header{{"a", "added"}, {"b", "added"}}, Remove: []string{"b"},
		},
		in:     fields{{"A", "old"}, {"B", "old"}},
		want:   map[string]string{"a": "set,added"},
		absent: []string{"b"},
	}, {
		name: "nil modifier",
		in:   fields{{"A", "1"}},
		want: map[string]string{"a": "1"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := slices.Clone(tc.in)
			tc.mod.Apply(&f)
			for name, want := range tc.want {
				if got, _ := f.get(name); got != want {
					t.Errorf("%s = %q, want %q (fields %v)", name, got, want, f)
				}
			}
			for _, name := range tc.absent {
				if got, ok := f.get(name); ok {
					t.Errorf("%s = %q, want it absent", name, got)
				}
			}
			if len(f) != countNames(tc.want, f) {
				t.Errorf("fields %v hold names other than %v", f, tc.want)
			}
		})
	}
}

// countNames counts the fields of f whose names are in want.
func countNames(want map[string]string, f fields) int {
	n := 0
	for _, h := range f {
		if _, ok := want[strings.ToLower(h.Name)]; ok {
			n++
		}
	}
	return n
}

func full(p string) *PathModifier      { return &PathModifier{Full: p} }
func replacing(p string) *PathModifier { return &PathModifier{Prefix: p, IsPrefix: true} }

// TestRedirectLocation has the Location every mesh redirect conformance
// test expects (MeshHTTPRouteRedirectPort, MeshHTTPRouteSchemeRedirect,
// MeshHTTPRouteRedirectPath, MeshHTTPRouteRedirectHostAndStatus; their
// client calls http://echo), and the spec's rules for the port.
func TestRedirectLocation(t *testing.T) {
	tests := []struct {
		name     string
		redirect Redirect
		scheme   string // "http" when empty
		host     string
		path     string
		prefix   string
		want     string
	}{
		// MeshHTTPRouteRedirectPort
		{name: "port", redirect: Redirect{Port: 8083}, host: "echo", path: "/port", prefix: "/port", want: "http://echo:8083/port"},
		{name: "port and host", redirect: Redirect{Hostname: "example.org", Port: 8083}, host: "echo", path: "/port-and-host",
			want: "http://example.org:8083/port-and-host"},
		{name: "port and status", redirect: Redirect{Port: 8083, StatusCode: 301}, host: "echo", path: "/port-and-status",
			want: "http://echo:8083/port-and-status"},
		{name: "port and host and status", redirect: Redirect{Port: 8083, Hostname: "example.org", StatusCode: 302}, host: "echo",
			path: "/port-and-host-and-status", want: "http://example.org:8083/port-and-host-and-status"},
		// MeshHTTPRouteSchemeRedirect
		{name: "scheme", redirect: Redirect{Scheme: "https"}, host: "echo", path: "/scheme", want: "https://echo/scheme"},
		{name: "scheme and host", redirect: Redirect{Scheme: "https", Hostname: "example.org"}, host: "echo", path: "/scheme-and-host",
			want: "https://example.org/scheme-and-host"},
		{name: "scheme and status", redirect: Redirect{Scheme: "https", StatusCode: 301}, host: "echo", path: "/scheme-and-status",
			want: "https://echo/scheme-and-status"},
		{name: "scheme and host and status", redirect: Redirect{Scheme: "https", Hostname: "example.org", StatusCode: 302}, host: "echo",
			path: "/scheme-and-host-and-status", want: "https://example.org/scheme-and-host-and-status"},
		// MeshHTTPRouteRedirectPath
		{name: "prefix", redirect: Redirect{Path: replacing("/replacement-prefix")}, host: "echo", path: "/original-prefix/lemon",
			prefix: "/original-prefix", want: "http://echo/replacement-prefix/lemon"},
		{name: "full path", redirect: Redirect{Path: full("/full-path-replacement")}, host: "echo", path: "/full/path/original",
			prefix: "/full", want: "http://echo/full-path-replacement"},
		{name: "path and host", redirect: Redirect{Hostname: "example.org", Path: replacing("/replacement-prefix")}, host: "echo",
			path: "/path-and-host", prefix: "/path-and-host", want: "http://example.org/replacement-prefix"},
		{name: "path and status", redirect: Redirect{Path: replacing("/replacement-prefix"), StatusCode: 301}, host: "echo",
			path: "/path-and-status", prefix: "/path-and-status", want: "http://echo/replacement-prefix"},
		{name: "full path and host", redirect: Redirect{Hostname: "example.org", Path: full("/replacement-full")}, host: "echo",
			path: "/full-path-and-host", prefix: "/full-path-and-host", want: "http://example.org/replacement-full"},
		{name: "full path and status", redirect: Redirect{Path: full("/replacement-full"), StatusCode: 301}, host: "echo",
			path: "/full-path-and-status", prefix: "/full-path-and-status", want: "http://echo/replacement-full"},
		// MeshHTTPRouteRedirectHostAndStatus
		{name: "hostname", redirect: Redirect{Hostname: "example.org"}, host: "echo", path: "/hostname-redirect",
			want: "http://example.org/hostname-redirect"},
		{name: "host and status", redirect: Redirect{Hostname: "example.org", StatusCode: 301}, host: "echo", path: "/host-and-status",
			want: "http://example.org/host-and-status"},

		// The spec's Port: without Port, a Scheme implies its well-known
		// port; without either, the port the client called stays.
		{name: "request port stays", redirect: Redirect{Path: full("/b")}, host: "echo:8080", path: "/a", want: "http://echo:8080/b"},
		{name: "request port stays with hostname", redirect: Redirect{Hostname: "example.org"}, host: "echo:8080", path: "/a",
			want: "http://example.org:8080/a"},
		{name: "scheme implies its port", redirect: Redirect{Scheme: "https"}, host: "echo:8080", path: "/a", want: "https://echo/a"},
		{name: "same scheme implies its port", redirect: Redirect{Scheme: "http"}, host: "echo:8080", path: "/a", want: "http://echo/a"},
		{name: "https to http", redirect: Redirect{Scheme: "http"}, scheme: "https", host: "echo", path: "/a", want: "http://echo/a"},
		{name: "default port left out", redirect: Redirect{Port: 80}, host: "echo:8080", path: "/a", want: "http://echo/a"},
		{name: "https default port left out", redirect: Redirect{Scheme: "https", Port: 443}, host: "echo", path: "/a", want: "https://echo/a"},
		{name: "port 80 with https", redirect: Redirect{Scheme: "https", Port: 80}, host: "echo", path: "/a", want: "https://echo:80/a"},
		{name: "port 443 with http", redirect: Redirect{Port: 443}, host: "echo", path: "/a", want: "http://echo:443/a"},
		{name: "request's default port left out", redirect: Redirect{Hostname: "example.org"}, host: "echo:80", path: "/a",
			want: "http://example.org/a"},
		{name: "scheme without a well-known port", redirect: Redirect{Scheme: "ws"}, host: "echo:8080", path: "/a", want: "ws://echo:8080/a"},
		{name: "IPv6 host", redirect: Redirect{Port: 9090}, host: "[fd00::1]:8080", path: "/a", want: "http://[fd00::1]:9090/a"},
		{name: "IPv6 host without port", redirect: Redirect{Scheme: "https"}, host: "[fd00::1]", path: "/a", want: "https://[fd00::1]/a"},
		{name: "query stays", redirect: Redirect{Path: replacing("/new")}, host: "echo", path: "/old/x?a=1&b=/c", prefix: "/old",
			want: "http://echo/new/x?a=1&b=/c"},
		{name: "query stays with full path", redirect: Redirect{Path: full("/new")}, host: "echo", path: "/old?a=1", want: "http://echo/new?a=1"},
		{name: "no path modifier", redirect: Redirect{Hostname: "example.org"}, host: "echo", path: "/a/b?c", want: "http://example.org/a/b?c"},
		{name: "no host", redirect: Redirect{Path: full("/b")}, host: "", path: "/a?x", want: "/b?x"},
		{name: "no host but a hostname", redirect: Redirect{Hostname: "example.org"}, host: "", path: "/a", want: "http://example.org/a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			scheme := tc.scheme
			if scheme == "" {
				scheme = "http"
			}
			if got := tc.redirect.Location(scheme, tc.host, tc.path, tc.prefix); got != tc.want {
				t.Errorf("Location(%q, %q, %q, %q) = %q, want %q", scheme, tc.host, tc.path, tc.prefix, got, tc.want)
			}
		})
	}
}

// TestReplacePrefixMatch is the table of the spec's ReplacePrefixMatch
// (httproute_types.go) and the paths of the conformance test
// MeshHTTPRouteRewritePath (conformance/tests/mesh/httproute-rewrite-path.yaml).
func TestReplacePrefixMatch(t *testing.T) {
	tests := []struct {
		path, prefix, replace, want string
	}{
		// The spec's table.
		{"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
		{"/foo", "/foo", "/xyz", "/xyz"},
		{"/foo/", "/foo", "/xyz", "/xyz/"},
		{"/foo/bar", "/foo", "", "/bar"},
		{"/foo/", "/foo", "", "/"},
		{"/foo", "/foo", "", "/"},
		{"/foo/", "/foo", "/", "/"},
		{"/foo", "/foo", "/", "/"},
		// MeshHTTPRouteRewritePath.
		{"/prefix/one/two", "/prefix/one", "/one", "/one/two"},
		{"/strip-prefix/three", "/strip-prefix", "/", "/three"},
		{"/strip-prefix", "/strip-prefix", "/", "/"},
		{"/prefix/rewrite-path-and-modify-headers/one", "/prefix/rewrite-path-and-modify-headers", "/prefix", "/prefix/one"},
		// The root prefix, as "/" or as a match without a prefix ("").
		{"/a/b", "/", "/x", "/x/a/b"},
		{"/a/b", "", "/x", "/x/a/b"},
		{"/", "/", "/x", "/x/"},
		// The query stays.
		{"/foo/bar?a=/foo", "/foo", "/xyz", "/xyz/bar?a=/foo"},
		{"/foo?a", "/foo", "", "/?a"},
		// A prefix the path does not hold on leaves the path.
		{"/foobar", "/foo", "/xyz", "/foobar"},
		{"/other", "/foo", "/xyz", "/other"},
		{"*", "", "/xyz", "*"},
	}
	for _, tc := range tests {
		w := &Rewrite{Path: replacing(tc.replace)}
		if host, got := w.Apply("echo", tc.path, tc.prefix); got != tc.want || host != "echo" {
			t.Errorf("rewrite %q matched by %q with ReplacePrefixMatch %q = %q, %q; want %q, %q",
				tc.path, tc.prefix, tc.replace, host, got, "echo", tc.want)
		}
	}
}

// TestRewriteApply checks the rest of URLRewrite: the conformance test's
// ReplaceFullPath and the hostname, which replaces the whole host.
func TestRewriteApply(t *testing.T) {
	tests := []struct {
		name                string
		rewrite             *Rewrite
		host, path, prefix  string
		wantHost, wantPathQ string
	}{
		{name: "full path", rewrite: &Rewrite{Path: full("/one")}, host: "echo", path: "/full/one/two", prefix: "/full/one",
			wantHost: "echo", wantPathQ: "/one"},
		{name: "full path and headers", rewrite: &Rewrite{Path: full("/test")}, host: "echo",
			path: "/full/rewrite-path-and-modify-headers/test", wantHost: "echo", wantPathQ: "/test"},
		{name: "full path keeps the query", rewrite: &Rewrite{Path: full("/one")}, host: "echo", path: "/x?y=1", wantHost: "echo", wantPathQ: "/one?y=1"},
		{name: "empty full path", rewrite: &Rewrite{Path: full("")}, host: "echo", path: "/x?y", wantHost: "echo", wantPathQ: "/?y"},
		{name: "hostname replaces host and port", rewrite: &Rewrite{Hostname: "example.org"}, host: "echo:8080", path: "/x?y",
			wantHost: "example.org", wantPathQ: "/x?y"},
		{name: "hostname and prefix", rewrite: &Rewrite{Hostname: "example.org", Path: replacing("/b")}, host: "echo", path: "/a/c",
			prefix: "/a", wantHost: "example.org", wantPathQ: "/b/c"},
		{name: "nil rewrite", host: "echo:80", path: "/x?y", wantHost: "echo:80", wantPathQ: "/x?y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host, pathQ := tc.rewrite.Apply(tc.host, tc.path, tc.prefix)
			if diff := cmp.Diff([]string{tc.wantHost, tc.wantPathQ}, []string{host, pathQ}); diff != "" {
				t.Errorf("Apply(%q, %q, %q) (-want +got):\n%s", tc.host, tc.path, tc.prefix, diff)
			}
		})
	}
}

func TestSplitHostPort(t *testing.T) {
	for _, tc := range []struct{ in, host, port string }{
		{"echo", "echo", ""},
		{"echo:80", "echo", "80"},
		{"echo:", "echo", ""},
		{"10.0.0.1:8080", "10.0.0.1", "8080"},
		{"[fd00::1]:8080", "[fd00::1]", "8080"},
		{"[fd00::1]", "[fd00::1]", ""},
		{"fd00::1", "fd00::1", ""},
		{"", "", ""},
	} {
		if host, port := splitHostPort(tc.in); host != tc.host || port != tc.port {
			t.Errorf("splitHostPort(%q) = %q, %q; want %q, %q", tc.in, host, port, tc.host, tc.port)
		}
	}
}
