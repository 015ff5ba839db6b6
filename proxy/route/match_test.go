package route

import (
	"fmt"
	"testing"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// matchCase is a request and the rule it must match ("" for none), with
// the prefix Match reports.
type matchCase struct {
	name   string
	req    request
	grpc   bool
	want   string
	prefix string
}

func checkMatches(t *testing.T, tab *Table, cases []matchCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, ok := tab.Match(tc.req, tc.grpc)
			got := ""
			if ok {
				got = m.Rule.Name
			}
			if got != tc.want {
				t.Fatalf("Match(%s %s, grpc %v) = rule %q, want %q", tc.req.method, tc.req.path, tc.grpc, got, tc.want)
			}
			if ok && m.Prefix != tc.prefix {
				t.Errorf("Match(%s %s).Prefix = %q, want %q", tc.req.method, tc.req.path, m.Prefix, tc.prefix)
			}
		})
	}
}

// TestMatchMeshMatching is the conformance test MeshHTTPRouteMatching
// (conformance/tests/mesh/httproute-matching.yaml): rule "v1" has
// matches prefix "/" or header version=one, rule "v2" prefix "/v2" or
// version=two. The controller splits them by match and sorts them: the
// longer prefix first, then of the prefixes "/" the ones with a header.
func TestMatchMeshMatching(t *testing.T) {
	tab := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{
		httpRule("v2", prefix("/v2")),
		httpRule("v1", with(prefix("/"), "header:version=one")),
		httpRule("v2", with(prefix("/"), "header:version=two")),
		httpRule("v1", prefix("/")),
	}})
	checkMatches(t, tab, []matchCase{
		{name: "root", req: get("/"), want: "v1", prefix: "/"},
		{name: "example", req: get("/example"), want: "v1", prefix: "/"},
		{name: "root version one", req: get("/", "version", "one"), want: "v1", prefix: "/"},
		{name: "v2", req: get("/v2"), want: "v2", prefix: "/v2"},
		{name: "v2 example", req: get("/v2/example"), want: "v2", prefix: "/v2"},
		{name: "root version two", req: get("/", "version", "two"), want: "v2", prefix: "/"},
		{name: "v2 slash", req: get("/v2/"), want: "v2", prefix: "/v2"},
		{name: "not a path element", req: get("/v2example"), want: "v1", prefix: "/"},
		{name: "v2 deeper", req: get("/foo/v2/example"), want: "v1", prefix: "/"},
	})
}

// TestMatchMethods is the conformance test HTTPRouteMethodMatching
// (conformance/tests/httproute-method-matching.yaml) with its matches in
// the spec's precedence: the longest prefix, then a method, then the
// most headers, then the rule order. "m0" is the first rule's match.
func TestMatchMethods(t *testing.T) {
	tab := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{
		httpRule("m4", with(prefix("/path2"), "method=POST", "header:version=two")),
		httpRule("m6", with(prefix("/path4"), "method=DELETE", "header:version=three")),
		httpRule("m2", with(prefix("/path1"), "method=GET")),
		httpRule("m5", with(prefix("/path3"), "method=PATCH")),
		httpRule("m7", prefix("/path5")),
		httpRule("m3", with(prefix("/"), "method=PUT", "header:version=one")),
		httpRule("m0", with(prefix("/"), "method=POST")),
		httpRule("m1", with(prefix("/"), "method=GET")),
		httpRule("m8", with(prefix("/"), "method=PATCH")),
		httpRule("m9", with(prefix("/"), "header:version=four")),
	}})
	checkMatches(t, tab, []matchCase{
		{name: "POST", req: req("POST", "/"), want: "m0", prefix: "/"},
		{name: "GET", req: req("GET", "/"), want: "m1", prefix: "/"},
		{name: "HEAD", req: req("HEAD", "/"), want: ""},
		{name: "GET path1", req: req("GET", "/path1"), want: "m2", prefix: "/path1"},
		{name: "PUT one", req: req("PUT", "/", "version", "one"), want: "m3", prefix: "/"},
		{name: "POST path2 two", req: req("POST", "/path2", "version", "two"), want: "m4", prefix: "/path2"},
		{name: "PATCH path3", req: req("PATCH", "/path3"), want: "m5", prefix: "/path3"},
		{name: "DELETE path4 three", req: req("DELETE", "/path4", "version", "three"), want: "m6", prefix: "/path4"},
		{name: "PUT without header", req: req("PUT", "/"), want: ""},
		{name: "DELETE path4 without header", req: req("DELETE", "/path4"), want: ""},
		{name: "longest prefix before method", req: req("PATCH", "/path5"), want: "m7", prefix: "/path5"},
		{name: "method before header", req: req("PATCH", "/", "version", "four"), want: "m8", prefix: "/"},
		{name: "methods are case-sensitive", req: req("get", "/"), want: ""},
	})
}

// TestMatchQuery is the conformance test MeshHTTPRouteQueryParamMatching
// (conformance/tests/mesh/httproute-query-param-matching.yaml), in the
// controller's order, and how query values are read.
func TestMatchQuery(t *testing.T) {
	tab := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{
		httpRule("path4", with(prefix("/path4"), "header:version=three", "query:animal=kraken")),
		httpRule("path1", with(prefix("/path1"), "query:animal=whale")),
		httpRule("path3", with(prefix("/path3"), "query:animal=shark")),
		httpRule("path5", prefix("/path5")),
		httpRule("one-whale", with(prefix("/"), "header:version=one", "query:animal=whale")),
		httpRule("whale", with(prefix("/"), "query:animal=whale")),
		httpRule("dolphin", with(prefix("/"), "query:animal=dolphin")),
		httpRule("hydra", with(prefix("/"), "query:animal=hydra")),
		httpRule("spaced", with(prefix("/"), "query:color=light blue")),
		httpRule("regex", with(prefix("/"), "query:size~[0-9]+")),
		httpRule("empty", with(prefix("/"), "query:flag=")),
	}})
	checkMatches(t, tab, []matchCase{
		{name: "whale", req: get("/?animal=whale"), want: "whale", prefix: "/"},
		{name: "dolphin", req: get("/?animal=dolphin"), want: "dolphin", prefix: "/"},
		{name: "whale and another", req: get("/?animal=whale&otherparam=irrelevant"), want: "whale", prefix: "/"},
		{name: "dolphin and another", req: get("/?animal=dolphin&color=yellow"), want: "dolphin", prefix: "/"},
		{name: "other name", req: get("/?color=blue"), want: ""},
		{name: "other value", req: get("/?animal=dog"), want: ""},
		{name: "values compare whole", req: get("/?animal=whaledolphin"), want: ""},
		{name: "no query", req: get("/"), want: ""},
		{name: "path and query", req: get("/path1?animal=whale"), want: "path1", prefix: "/path1"},
		{name: "header and query", req: get("/?animal=whale", "version", "one"), want: "one-whale", prefix: "/"},
		{name: "or", req: get("/path4?animal=kraken", "version", "three"), want: "path4", prefix: "/path4"},
		{name: "prefix before query", req: get("/path5?animal=hydra"), want: "path5", prefix: "/path5"},
		{name: "query without prefix", req: get("/?animal=hydra"), want: "hydra", prefix: "/"},
		{name: "first of a repeated parameter", req: get("/?animal=dolphin&animal=whale"), want: "dolphin", prefix: "/"},
		{name: "names compare exactly", req: get("/?Animal=whale"), want: ""},
		{name: "percent-encoded value", req: get("/?color=light%20blue"), want: "spaced", prefix: "/"},
		{name: "plus is a space", req: get("/?color=light+blue"), want: "spaced", prefix: "/"},
		{name: "percent-encoded name", req: get("/?ani%6Dal=whale"), want: "whale", prefix: "/"},
		{name: "bad encoding compares raw", req: get("/?animal=wh%zzale"), want: ""},
		{name: "regex value", req: get("/?size=42"), want: "regex", prefix: "/"},
		{name: "regex whole value", req: get("/?size=42b"), want: ""},
		{name: "parameter without value", req: get("/?flag"), want: "empty", prefix: "/"},
		{name: "empty pairs", req: get("/?&&flag=&"), want: "empty", prefix: "/"},
	})
}

// TestMatchPaths checks path matches: exact, element-wise prefixes with
// a trailing "/" ignored, RE2 regexes of the whole path, all without the
// query.
func TestMatchPaths(t *testing.T) {
	tab := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{
		httpRule("exact", exact("/exact")),
		httpRule("a", prefix("/a")),
		httpRule("b-slash", prefix("/b/")),
		httpRule("deep", prefix("/c/d/e")),
		httpRule("numbers", regex("/n/[0-9]+")),
		httpRule("alternation", regex("/alt|/alt/long")),
		httpRule("quoted", regex(`/q\Q)(\`)),
		httpRule("encoded", prefix("/%7Euser")),
	}})
	checkMatches(t, tab, []matchCase{
		{name: "exact", req: get("/exact"), want: "exact"},
		{name: "exact with query", req: get("/exact?x=1"), want: "exact"},
		{name: "exact is not a prefix", req: get("/exact/more"), want: ""},
		{name: "exact with a slash more", req: get("/exact/"), want: ""},
		{name: "prefix itself", req: get("/a"), want: "a", prefix: "/a"},
		{name: "prefix with slash", req: get("/a/"), want: "a", prefix: "/a"},
		{name: "prefix element", req: get("/a/x/y"), want: "a", prefix: "/a"},
		{name: "prefix with query", req: get("/a?x=/b"), want: "a", prefix: "/a"},
		{name: "prefix is element-wise", req: get("/ab"), want: ""},
		{name: "prefix is case-sensitive", req: get("/A"), want: ""},
		{name: "trailing slash of prefix ignored", req: get("/b"), want: "b-slash", prefix: "/b/"},
		{name: "trailing slash prefix element", req: get("/b/x"), want: "b-slash", prefix: "/b/"},
		{name: "trailing slash prefix not element", req: get("/bx"), want: ""},
		{name: "deep prefix", req: get("/c/d/e/f"), want: "deep", prefix: "/c/d/e"},
		{name: "deep prefix partial", req: get("/c/d"), want: ""},
		{name: "deep prefix not element", req: get("/c/d/ef"), want: ""},
		{name: "empty element", req: get("/c//d/e"), want: ""},
		{name: "regex", req: get("/n/42"), want: "numbers"},
		{name: "regex anchored at the end", req: get("/n/42x"), want: ""},
		{name: "regex anchored at the start", req: get("/x/n/42"), want: ""},
		{name: "regex without query", req: get("/n/42?y=1"), want: "numbers"},
		{name: "regex whole-path alternation", req: get("/alt/long"), want: "alternation"},
		{name: "regex open quote", req: get(`/q)(\`), want: "quoted"},
		{name: "encoded path compares raw", req: get("/%7Euser/x"), want: "encoded", prefix: "/%7Euser"},
		{name: "decoded path does not match", req: get("/~user/x"), want: ""},
		{name: "asterisk", req: req("OPTIONS", "*"), want: ""},
		{name: "no path", req: req("CONNECT", ""), want: ""},
	})

	root := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{httpRule("root", prefix("/"))}})
	checkMatches(t, root, []matchCase{
		{name: "root", req: get("/"), want: "root", prefix: "/"},
		{name: "anything", req: get("/x/y?z"), want: "root", prefix: "/"},
		{name: "asterisk", req: req("OPTIONS", "*"), want: "root", prefix: "/"},
	})
}

// TestMatchOrder checks that the proxy takes the rules in the order
// given, whatever their kinds, across the index's lists, and that a rule
// matches when any of its matches holds.
func TestMatchOrder(t *testing.T) {
	tab := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{
		httpRule("header", with(prefix("/"), "header:x-first=yes")),
		httpRule("regex", regex("/r/.*")),
		httpRule("prefix", prefix("/r")),
		httpRule("exact", exact("/r/exact")),
		httpRule("either", exact("/e1"), with(prefix("/e2"), "method=POST"), regex("/e3/[a-z]+")),
		httpRule("shadowed", exact("/e1")),
		httpRule("any", anyMatch()),
	}})
	checkMatches(t, tab, []matchCase{
		{name: "header first", req: get("/r/exact", "x-first", "yes"), want: "header", prefix: "/"},
		{name: "regex before prefix", req: get("/r/x"), want: "regex"},
		{name: "prefix before exact", req: get("/r"), want: "prefix", prefix: "/r"},
		{name: "regex before exact", req: get("/r/exact"), want: "regex"},
		{name: "either exact", req: get("/e1"), want: "either"},
		{name: "either prefix", req: req("POST", "/e2/x"), want: "either", prefix: "/e2"},
		{name: "either regex", req: get("/e3/abc"), want: "either"},
		{name: "none of either", req: get("/e2/x"), want: "any"},
		{name: "any", req: get("/elsewhere"), want: "any"},
	})

	none := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{httpRule("no matches")}})
	if none.Empty() {
		t.Error("a table with a rule is Empty")
	}
	checkMatches(t, none, []matchCase{{name: "rule without matches", req: get("/"), want: ""}})
}

// TestMatchHeaders checks header matches: names compare in lower case,
// values exactly or by a regex of the whole value, repeated fields as
// joined, and only the first match of a name counts.
func TestMatchHeaders(t *testing.T) {
	tab := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{
		httpRule("exact", with(prefix("/"), "header:X-Env=prod")),
		httpRule("regex", with(prefix("/"), "header:x-version~v[0-9]+")),
		httpRule("two", with(prefix("/"), "header:a=1", "header:b=2")),
		httpRule("first counts", with(prefix("/"), "header:dup=one", "header:dup=two")),
		httpRule("empty value", with(prefix("/"), "header:x-empty=")),
	}})
	checkMatches(t, tab, []matchCase{
		{name: "exact", req: get("/", "x-env", "prod"), want: "exact", prefix: "/"},
		{name: "exact is whole", req: get("/", "x-env", "production"), want: ""},
		{name: "exact is case-sensitive", req: get("/", "x-env", "Prod"), want: ""},
		{name: "regex", req: get("/", "x-version", "v12"), want: "regex", prefix: "/"},
		{name: "regex is whole", req: get("/", "x-version", "v12-beta"), want: ""},
		{name: "regex on joined fields", req: get("/", "x-version", "v1, v2"), want: ""},
		{name: "exact on joined fields", req: get("/", "x-env", "prod, prod"), want: ""},
		{name: "both", req: get("/", "a", "1", "b", "2"), want: "two", prefix: "/"},
		{name: "one of both", req: get("/", "a", "1"), want: ""},
		{name: "first of a name", req: get("/", "dup", "one"), want: "first counts", prefix: "/"},
		{name: "later of a name ignored", req: get("/", "dup", "two"), want: ""},
		{name: "empty value present", req: get("/", "x-empty", ""), want: "empty value", prefix: "/"},
		{name: "absent", req: get("/"), want: ""},
	})
}

// countingRequest counts the header lookups of a match.
type countingRequest struct {
	request
	lookups int
}

func (r *countingRequest) Header(name string) (string, bool) {
	r.lookups++
	return r.request.Header(name)
}

// TestMatchHeaderRunsLookUpOnce checks that rules on one path told apart
// by a header cost a request one lookup of it, not one per rule: a
// canary by header across 1,000 rules costs what one does (the routes
// benchmark's header case, docs/traffic.md 4.3).
func TestMatchHeaderRunsLookUpOnce(t *testing.T) {
	pt := &destinationv1.RouteTable{}
	for i := range 1000 {
		pt.HttpRules = append(pt.HttpRules, httpRule(fmt.Sprint(i), with(prefix("/"), fmt.Sprintf("header:x-route=%d", i))))
	}
	pt.HttpRules = append(pt.HttpRules, httpRule("rest", prefix("/")))
	tab := mustCompile(t, pt)
	for _, tc := range []struct {
		value, want string // value "": the request has no x-route
	}{{"999", "999"}, {"0", "0"}, {"1000", "rest"}, {"", "rest"}} {
		r := &countingRequest{request: get("/api/items/42")}
		if tc.value != "" {
			r.header["x-route"] = tc.value
		}
		m, ok := tab.Match(r, false)
		if !ok || m.Rule.Name != tc.want {
			t.Errorf("x-route %q matched %v %v, want rule %s", tc.value, m.Rule, ok, tc.want)
		}
		if r.lookups != 1 {
			t.Errorf("x-route %q: %d header lookups, want 1", tc.value, r.lookups)
		}
	}
}

// TestMatchGRPC checks GRPCRoute method matches (the conformance test
// GRPCExactMethodMatching's and more), and which rules gRPC and other
// requests use.
func TestMatchGRPC(t *testing.T) {
	const svc = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
	tab := mustCompile(t, &destinationv1.RouteTable{GrpcRules: []*destinationv1.Rule{
		grpcRule("v1", with(anyMatch(), "service="+svc, "method-of=Echo")),
		grpcRule("v2", with(anyMatch(), "service="+svc, "method-of=EchoTwo")),
		grpcRule("header", with(anyMatch(), "service="+svc, "header:x-v=3")),
		grpcRule("service", with(anyMatch(), "service=pkg.Other")),
		grpcRule("method", with(anyMatch(), "method-of=Check")),
		grpcRule("regex", with(anyMatch(), "service=pkg\\.R.*", "method-of=Get|List", "grpc-regex")),
		grpcRule("regex method", with(anyMatch(), "method-of=Watch.*", "grpc-regex")),
	}})
	post := func(path string, header ...string) request { return req("POST", path, header...) }
	cases := []matchCase{
		{name: "exact", req: post("/" + svc + "/Echo"), grpc: true, want: "v1"},
		{name: "exact two", req: post("/" + svc + "/EchoTwo"), grpc: true, want: "v2"},
		{name: "service and header", req: post("/"+svc+"/EchoThree", "x-v", "3"), grpc: true, want: "header"},
		{name: "no method", req: post("/" + svc + "/EchoThree"), grpc: true, want: ""},
		{name: "service only", req: post("/pkg.Other/Anything"), grpc: true, want: "service"},
		{name: "service is whole", req: post("/pkg.OtherX/Anything"), grpc: true, want: ""},
		{name: "method only", req: post("/any.Service/Check"), grpc: true, want: "method"},
		{name: "regex", req: post("/pkg.Repo/List"), grpc: true, want: "regex"},
		{name: "regex is whole", req: post("/pkg.Repo/ListAll"), grpc: true, want: ""},
		{name: "regex service is whole", req: post("/xpkg.Repo/List"), grpc: true, want: ""},
		{name: "regex method only", req: post("/a.B/WatchAll"), grpc: true, want: "regex method"},
		{name: "not a gRPC path", req: post("/pkg.Other/a/b"), grpc: true, want: ""},
		{name: "not a gRPC path either", req: post("/pkg.Other"), grpc: true, want: ""},
		{name: "with query", req: post("/" + svc + "/Echo?x"), grpc: true, want: "v1"},
		{name: "HTTP request", req: post("/" + svc + "/Echo"), grpc: false, want: ""},
	}
	checkMatches(t, tab, cases)

	both := mustCompile(t, &destinationv1.RouteTable{
		HttpRules: []*destinationv1.Rule{httpRule("http", prefix("/"))},
		GrpcRules: []*destinationv1.Rule{grpcRule("grpc", anyMatch())},
	})
	httpOnly := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{httpRule("http", prefix("/"))}})
	checkMatches(t, both, []matchCase{
		{name: "both grpc", req: post("/a.B/C"), grpc: true, want: "grpc"},
		{name: "both http", req: post("/a.B/C"), want: "http", prefix: "/"},
	})
	checkMatches(t, httpOnly, []matchCase{
		{name: "http only grpc", req: post("/a.B/C"), grpc: true, want: "http", prefix: "/"},
	})
}

func TestMatchEmpty(t *testing.T) {
	var nilTable *Table
	for name, tab := range map[string]*Table{
		"nil table":  nilTable,
		"nil proto":  mustCompile(t, nil),
		"no rules":   mustCompile(t, &destinationv1.RouteTable{Version: 3}),
		"grpc rules": mustCompile(t, &destinationv1.RouteTable{GrpcRules: []*destinationv1.Rule{grpcRule("g", anyMatch())}}),
	} {
		t.Run(name, func(t *testing.T) {
			if _, ok := tab.Match(get("/"), false); ok {
				t.Error("an HTTP request matched")
			}
			if empty := tab.Empty(); empty != (name != "grpc rules") {
				t.Errorf("Empty() = %v", empty)
			}
		})
	}
	if v := mustCompile(t, &destinationv1.RouteTable{Version: 3}).Version(); v != 3 {
		t.Errorf("Version() = %d, want 3", v)
	}
}
