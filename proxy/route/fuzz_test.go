package route

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// seedTables are the seed corpus of FuzzCompile and the tables the
// index is checked on: the tables of the tests above, one of each filter,
// and nested prefixes.
func seedTables(tb testing.TB) []*destinationv1.RouteTable {
	filtered := httpRule("filters", prefix("/f/"))
	filtered.Filters = []*destinationv1.Filter{
		requestHeaders(hdrs("X-Set", "1"), hdrs("x-add", "2"), "x-remove"),
		responseHeaders(nil, hdrs("x-resp", "3")),
		rewrite(&destinationv1.Rewrite{Hostname: "example.org", Path: &destinationv1.PathModifier{Replace: &destinationv1.PathModifier_Prefix{Prefix: "/g"}}}),
	}
	filtered.Backends = append(filtered.Backends, &destinationv1.Backend{Weight: 2, Filters: []*destinationv1.Filter{failFilter(500, "gone")}})
	redirected := httpRule("redirect", exact("/r"), regex("/r[0-9]+"))
	redirected.Filters = []*destinationv1.Filter{redirect(&destinationv1.Redirect{Scheme: "https", Port: 8443, StatusCode: 301,
		Path: &destinationv1.PathModifier{Replace: &destinationv1.PathModifier_Full{Full: "/s"}}})}
	newer := httpRule("newer", prefix("/n"))
	newer.Filters = []*destinationv1.Filter{newerFilter(tb)}
	faulty := httpRule("faulty", prefix("/fault"))
	faulty.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_Fault{Fault: &destinationv1.Fault{
		Abort: &destinationv1.Fault_Abort{PerMillion: 500_000, HttpStatus: 503},
		Delay: &destinationv1.Fault_Delay{PerMillion: Million, Duration: seconds(1)},
	}}}}
	retried := httpRule("retried", prefix("/"))
	retried.Retry = &destinationv1.Retry{Http: statuses(500, 504, 429, 429), Grpc: []uint32{14, 4}, Limit: 2, PerTryTimeout: seconds(1)}
	retried.Timeouts = &destinationv1.Timeouts{Response: seconds(1), Idle: seconds(5)}
	return []*destinationv1.RouteTable{
		// A Service with a policy and no route, and one with both.
		{DefaultRule: serviceRule(), FailureAccrual: &destinationv1.FailureAccrual{MaxFailures: 3, MaxBackoff: seconds(30)}},
		{HttpRules: []*destinationv1.Rule{retried}, DefaultRule: serviceRule()},
		{HttpRules: []*destinationv1.Rule{
			httpRule("v2", prefix("/v2")),
			httpRule("v1", with(prefix("/"), "header:version=one")),
			httpRule("v2", with(prefix("/"), "header:version=two")),
			httpRule("v1", prefix("/")),
		}},
		{HttpRules: []*destinationv1.Rule{
			httpRule("m4", with(prefix("/path2"), "method=POST", "header:version=two")),
			httpRule("m7", prefix("/path5")),
			httpRule("m0", with(prefix("/"), "method=POST")),
			httpRule("q", with(prefix("/"), "query:animal=whale", "query:size~[0-9]+")),
		}},
		{GrpcRules: []*destinationv1.Rule{
			grpcRule("v1", with(anyMatch(), "service=pkg.Echo", "method-of=Echo")),
			grpcRule("service", with(anyMatch(), "service=pkg.Echo")),
			grpcRule("method", with(anyMatch(), "method-of=Check")),
			grpcRule("regex", with(anyMatch(), "service=pkg\\..*", "method-of=Get|List", "grpc-regex")),
			grpcRule("all", anyMatch()),
		}},
		// Rules told apart by a header, long enough stretches of them
		// to be runs (see list.seal): values repeated, a method beside
		// the header, a regex on the header, a stretch broken by a rule
		// whose first exact header is another, one on another path in
		// the middle, and a rule whose header is not the first it names.
		{HttpRules: []*destinationv1.Rule{
			httpRule("h0", with(prefix("/"), "header:version=one", "method=POST")),
			httpRule("h1", with(prefix("/"), "header:version=two")),
			httpRule("h2", with(prefix("/"), "header:version=one")),
			httpRule("h3", with(prefix("/a"), "header:version=two")),
			httpRule("h4", with(prefix("/"), "header:version=three")),
			httpRule("h5", with(prefix("/"), "header:version~o.*", "header:x-first=two")),
			httpRule("h6", with(prefix("/"), "header:x-first=one", "header:version=one")),
			httpRule("h7", with(prefix("/"), "header:x-first=two")),
			httpRule("h8", with(prefix("/"), "header:x-first=one")),
			httpRule("h9", with(prefix("/"), "header:x-first~.*", "header:x-first=one")),
			httpRule("h10", with(prefix("/"), "header:x-first=")),
			httpRule("h11", with(exact("/a"), "header:version=one")),
			httpRule("h12", with(exact("/a"), "header:version=two")),
			httpRule("h13", with(exact("/a"), "header:version=one", "header:x-first=one")),
			httpRule("h14", with(exact("/a"), "header:version=three")),
			httpRule("h15", with(regex("/a.*"), "header:version=two")),
			httpRule("h16", prefix("/")),
		}},
		{Version: 7, HttpRules: []*destinationv1.Rule{
			filtered, redirected, newer, faulty,
			httpRule("deep", prefix("/a/b/c/")),
			httpRule("mid", prefix("/a/b"), exact("/a/b/c/d")),
			httpRule("top", prefix("/a")),
			httpRule("empty element", prefix("/a//b")),
			httpRule("root", with(prefix("/"), "method=DELETE")),
		}},
	}
}

// FuzzCompile checks that Compile never panics on a table decoded from
// any bytes and refuses only with ErrInvalid, and that a compiled table
// matches, redirects, rewrites and picks without panicking: the index
// finds what evaluating every match in order finds, headers it writes
// carry no control characters, and a draw never takes a backend without
// weight. Run it with
//
//	go test -run '^$' -fuzz FuzzCompile -fuzztime 1m ./proxy/route/
func FuzzCompile(f *testing.F) {
	for _, pt := range seedTables(f) {
		b, err := proto.Marshal(pt)
		if err != nil {
			f.Fatalf("marshal a seed: %v", err)
		}
		f.Add(b, "GET", "/a/b/c/d?animal=whale&size=3", "one")
		f.Add(b, "POST", "/pkg.Echo/List", "two")
	}
	f.Add([]byte{}, "GET", "/", "")
	f.Fuzz(func(t *testing.T, data []byte, method, path, value string) {
		pt := &destinationv1.RouteTable{}
		if err := proto.Unmarshal(data, pt); err != nil {
			return
		}
		tab, err := Compile(pt)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Compile: %v, which is not ErrInvalid", err)
			}
			return
		}
		r := req(method, path, "version", value, "x-first", value)
		for _, grpc := range []bool{false, true} {
			checkMatch(t, pt, tab, r, grpc)
		}
	})
}

// checkMatch checks tab.Match(r, grpc) against the reference, and uses
// what it matched.
func checkMatch(t *testing.T, pt *destinationv1.RouteTable, tab *Table, r request, grpc bool) {
	t.Helper()
	protoRules, rules := pt.GetHttpRules(), tab.HTTPRules()
	if grpc && len(pt.GetGrpcRules()) > 0 {
		protoRules, rules = pt.GetGrpcRules(), tab.GRPCRules()
	}
	m, ok := tab.Match(r, grpc)
	i, prefix := referenceMatch(t, protoRules, r)
	if len(pt.GetHttpRules())+len(pt.GetGrpcRules()) == 0 && pt.GetDefaultRule() != nil {
		// No rules: every request takes the default rule, as the last
		// and only rule.
		protoRules, rules = append(protoRules, pt.GetDefaultRule()), []*Rule{tab.Default()}
		i = 0
	}
	switch {
	case !ok && i >= 0:
		t.Fatalf("Match(%s %q, grpc %v) found no rule, the reference rule %d", r.method, r.path, grpc, i)
	case ok && i < 0:
		t.Fatalf("Match(%s %q, grpc %v) found rule %q, the reference none", r.method, r.path, grpc, m.Rule.Name)
	case !ok:
		return
	case m.Rule != rules[i] || m.Prefix != prefix:
		t.Fatalf("Match(%s %q, grpc %v) = rule %q prefix %q, the reference rule %d (%q) prefix %q",
			r.method, r.path, grpc, m.Rule.Name, m.Prefix, i, rules[i].Name, prefix)
	}

	rule := m.Rule
	checkRetry(t, protoRules[i].GetRetry(), rule.Retry)
	clean := !hasControl(r.path) && !hasControl(r.header["version"])
	if rule.Redirect != nil {
		loc := rule.Redirect.Location("http", r.header["version"], r.path, m.Prefix)
		if clean && hasControl(loc) {
			t.Fatalf("Location %q has a control character", loc)
		}
	}
	host, pathQ := rule.Rewrite.Apply(r.header["version"], r.path, m.Prefix)
	if clean && (hasControl(host) || hasControl(pathQ)) {
		t.Fatalf("rewrite to %q %q has a control character", host, pathQ)
	}
	checkFault(t, protoRules[i], rule)
	var f fields
	rule.RequestHeaders.Apply(&f)
	rule.ResponseHeaders.Apply(&f)
	if b, ok := rule.PickBackend(); ok {
		if b.Weight == 0 {
			t.Fatalf("PickBackend drew %q of weight 0", b.Authority)
		}
		if b.Fail == nil {
			b.RequestHeaders.Apply(&f)
		}
	}
	if rule.Fail == nil {
		for _, h := range f {
			if hasControl(h.Value) || !isToken(h.Name) {
				t.Fatalf("a header filter wrote %q: %q", h.Name, h.Value)
			}
		}
	}
}

// checkFault checks a draw of the rule's fault against the table's: a
// delay is none or the fault's, never with a share of 0 and always with
// the whole; likewise an abort, whose status is the fault's. A rule whose
// filters hold two faults fails instead, and its Fault is not checked.
func checkFault(t *testing.T, pr *destinationv1.Rule, rule *Rule) {
	t.Helper()
	var pf *destinationv1.Fault
	for _, f := range pr.GetFilters() {
		if f.GetFault() != nil {
			if pf != nil {
				return
			}
			pf = f.GetFault()
		}
	}
	if (pf == nil) != (rule.Fault == nil) {
		t.Fatalf("fault %v compiled to %+v", pf, rule.Fault)
	}
	delay, abort, status := rule.Fault.Draw()
	want := pf.GetDelay().GetDuration().AsDuration()
	switch share := pf.GetDelay().GetPerMillion(); {
	case delay != 0 && delay != want:
		t.Fatalf("Draw delayed %v, want 0 or %v", delay, want)
	case share == 0 && delay != 0, share == Million && delay != want:
		t.Fatalf("Draw delayed %v with a share of %d per million of %v", delay, share, want)
	}
	switch share := pf.GetAbort().GetPerMillion(); {
	case abort && status != int(pf.GetAbort().GetHttpStatus()):
		t.Fatalf("Draw aborted with %d, want %d", status, pf.GetAbort().GetHttpStatus())
	case abort && (status < 200 || status > 599):
		t.Fatalf("Draw aborted with status %d", status)
	case share == 0 && abort, share == Million && !abort:
		t.Fatalf("Draw aborted %v with a share of %d per million", abort, share)
	}
}

// checkRetry checks the compiled retry conditions against the table's:
// every status and code the table lists, and no other.
func checkRetry(t *testing.T, pr *destinationv1.Retry, p *RetryPolicy) {
	t.Helper()
	if (pr == nil) != (p == nil) {
		t.Fatalf("retry %v compiled to %+v", pr, p)
	}
	for status := 0; status < 700; status++ {
		want := false
		for _, r := range pr.GetHttp() {
			want = want || uint32(status) >= r.GetMin() && uint32(status) <= r.GetMax()
		}
		if got := p.RetryHTTP(status); got != want {
			t.Fatalf("RetryHTTP(%d) = %v with ranges %v, want %v", status, got, pr.GetHttp(), want)
		}
	}
	for code := range 20 {
		if got, want := p.RetryGRPC(code), slices.Contains(pr.GetGrpc(), uint32(code)); got != want {
			t.Fatalf("RetryGRPC(%d) = %v with codes %v, want %v", code, got, pr.GetGrpc(), want)
		}
	}
}

// referenceMatch evaluates every match of rules in order, each path
// match by its definition rather than by the index: the index of the
// first rule that matches r (-1 for none) and its prefix.
func referenceMatch(t *testing.T, rules []*destinationv1.Rule, r request) (int, string) {
	t.Helper()
	path, query, _ := strings.Cut(r.path, "?")
	for i, pr := range rules {
		for _, pm := range pr.GetMatches() {
			c, err := compileMatch(pm)
			if err != nil {
				t.Fatalf("a match of a compiled table does not compile: %v", err)
			}
			prefix, held := "", true
			switch p := pm.GetPath().(type) {
			case *destinationv1.Match_Exact:
				held = path == p.Exact
			case *destinationv1.Match_Prefix:
				prefix = p.Prefix
				base := strings.TrimSuffix(p.Prefix, "/")
				held = base == "" || path == base || strings.HasPrefix(path, base+"/")
			}
			if held && c.holds(r, path, query, "") {
				return i, prefix
			}
		}
	}
	return -1, ""
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f })
}

// TestIndexAgreesWithReference runs the seed tables against requests for
// every path their matches name, and a few more, through checkMatch.
func TestIndexAgreesWithReference(t *testing.T) {
	paths := []string{"/", "", "*", "/a", "/a/", "/a/b", "/a/b/c", "/a/b/c/d", "/a/b/cd", "/a//b/x", "/ab",
		"/v2", "/v2x", "/f", "/f/x", "/r", "/r12", "/n/x", "/path5/x", "/pkg.Echo/Echo", "/pkg.Echo/Other",
		"/pkg.X/List", "/other.S/Check", "/pkg.Echo", "/pkg.Echo/a/b", "/path2?animal=whale&size=12"}
	for ti, pt := range seedTables(t) {
		tab := mustCompile(t, pt)
		for _, p := range paths {
			for _, method := range []string{"GET", "POST", "DELETE"} {
				for _, version := range []string{"", "one", "two", "three"} {
					for _, first := range []string{"-", "", "one", "two"} {
						t.Run(fmt.Sprintf("table %d %s %s %s %s", ti, method, p, version, first), func(t *testing.T) {
							r := req(method, p)
							if version != "" {
								r.header["version"] = version
							}
							if first != "-" {
								r.header["x-first"] = first
							}
							checkMatch(t, pt, tab, r, false)
							checkMatch(t, pt, tab, r, true)
						})
					}
				}
			}
		}
	}
}
