package route

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

func requestHeaders(set, add []*destinationv1.Header, remove ...string) *destinationv1.Filter {
	return &destinationv1.Filter{Kind: &destinationv1.Filter_RequestHeaders{RequestHeaders: &destinationv1.HeaderModifier{Set: set, Add: add, Remove: remove}}}
}

func responseHeaders(set, add []*destinationv1.Header, remove ...string) *destinationv1.Filter {
	return &destinationv1.Filter{Kind: &destinationv1.Filter_ResponseHeaders{ResponseHeaders: &destinationv1.HeaderModifier{Set: set, Add: add, Remove: remove}}}
}

func redirect(r *destinationv1.Redirect) *destinationv1.Filter {
	return &destinationv1.Filter{Kind: &destinationv1.Filter_Redirect{Redirect: r}}
}

func rewrite(w *destinationv1.Rewrite) *destinationv1.Filter {
	return &destinationv1.Filter{Kind: &destinationv1.Filter_Rewrite{Rewrite: w}}
}

func failFilter(status uint32, msg string) *destinationv1.Filter {
	return &destinationv1.Filter{Kind: &destinationv1.Filter_Fail{Fail: &destinationv1.Fail{Status: status, Message: msg}}}
}

// newerFilter is a Filter of a kind this proxy does not know, as a newer
// controller would send it: field 7 of Filter, decoded by this proxy's
// code.
func newerFilter(t testing.TB) *destinationv1.Filter {
	t.Helper()
	b := protowire.AppendTag(nil, 7, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{0x08, 0x01})
	f := &destinationv1.Filter{}
	if err := proto.Unmarshal(b, f); err != nil {
		t.Fatalf("unmarshal a newer filter: %v", err)
	}
	return f
}

func hdrs(nv ...string) []*destinationv1.Header {
	var out []*destinationv1.Header
	for i := 0; i+1 < len(nv); i += 2 {
		out = append(out, &destinationv1.Header{Name: nv[i], Value: nv[i+1]})
	}
	return out
}

// compileRule1 compiles a table of the one rule r and returns its Rule.
func compileRule1(t *testing.T, r *destinationv1.Rule) *Rule {
	t.Helper()
	tab := mustCompile(t, &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{r}})
	return tab.HTTPRules()[0]
}

var serverError = &Fail{Status: 500, Message: "filter not supported by this proxy"}

// TestCompileRule checks what a rule compiles to.
func TestCompileRule(t *testing.T) {
	ref := RouteRef{Kind: "HTTPRoute", Namespace: "ns", Name: "web"}
	tests := []struct {
		name string
		in   func(r *destinationv1.Rule)
		want *Rule
	}{{
		name: "backends and timeouts",
		in: func(r *destinationv1.Rule) {
			r.Backends = []*destinationv1.Backend{
				{Authority: "a.ns.svc.cluster.local:80", Weight: 90},
				{Authority: "zero.ns.svc.cluster.local:80", Weight: 0},
				{Authority: "b.ns.svc.cluster.local:8080", Weight: 10, Filters: []*destinationv1.Filter{requestHeaders(hdrs("X-B", "1"), nil)}},
			}
			r.Timeouts = &destinationv1.Timeouts{Request: seconds(10), BackendRequest: durationpb.New(1500 * time.Millisecond)}
		},
		want: &Rule{Route: ref, Name: "r", RequestTimeout: 10 * time.Second, BackendRequestTimeout: 1500 * time.Millisecond,
			Backends: []Backend{
				{Authority: "a.ns.svc.cluster.local:80", Weight: 90},
				{Authority: "b.ns.svc.cluster.local:8080", Weight: 10, RequestHeaders: &HeaderModifier{Set: []Header{{"x-b", "1"}}}},
			}},
	}, {
		name: "header filters lower-cased, first of a name",
		in: func(r *destinationv1.Rule) {
			r.Filters = []*destinationv1.Filter{
				requestHeaders(hdrs("X-Set", "1", "x-set", "2"), hdrs("X-Add", "a", "X-ADD", "b"), "X-Remove"),
				responseHeaders(hdrs("Cache-Control", "no-store"), nil),
			}
		},
		want: &Rule{Route: ref, Name: "r",
			RequestHeaders:  &HeaderModifier{Set: []Header{{"x-set", "1"}}, Add: []Header{{"x-add", "a"}}, Remove: []string{"x-remove"}},
			ResponseHeaders: &HeaderModifier{Set: []Header{{"cache-control", "no-store"}}},
		},
	}, {
		name: "redirect with the default status",
		in: func(r *destinationv1.Rule) {
			r.Backends = nil
			r.Filters = []*destinationv1.Filter{redirect(&destinationv1.Redirect{Scheme: "HTTPS", Hostname: "example.org", Port: 8443,
				Path: &destinationv1.PathModifier{Replace: &destinationv1.PathModifier_Prefix{Prefix: "/new"}}})}
		},
		want: &Rule{Route: ref, Name: "r", Redirect: &Redirect{Scheme: "https", Hostname: "example.org", Port: 8443, StatusCode: 302,
			Path: &PathModifier{Prefix: "/new", IsPrefix: true}}},
	}, {
		name: "rewrite paths made paths",
		in: func(r *destinationv1.Rule) {
			r.Backends = nil
			r.Filters = []*destinationv1.Filter{rewrite(&destinationv1.Rewrite{Hostname: "other",
				Path: &destinationv1.PathModifier{Replace: &destinationv1.PathModifier_Full{Full: "a b?%41%zz"}}})}
		},
		want: &Rule{Route: ref, Name: "r", Rewrite: &Rewrite{Hostname: "other", Path: &PathModifier{Full: "/a%20b%3F%41%25zz"}}},
	}, {
		name: "fail",
		in: func(r *destinationv1.Rule) {
			r.Backends = nil
			r.Filters = []*destinationv1.Filter{failFilter(503, "unresolved filter x"), failFilter(500, "second")}
		},
		want: &Rule{Route: ref, Name: "r", Fail: &Fail{Status: 503, Message: "unresolved filter x"}},
	}, {
		name: "fault",
		in: func(r *destinationv1.Rule) {
			r.Backends = nil
			r.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_Fault{Fault: &destinationv1.Fault{
				Abort: &destinationv1.Fault_Abort{PerMillion: 500_000, HttpStatus: 503},
				Delay: &destinationv1.Fault_Delay{PerMillion: Million, Duration: durationpb.New(200 * time.Millisecond)},
			}}}}
		},
		want: &Rule{Route: ref, Name: "r", Fault: &Fault{AbortPerMillion: 500_000, AbortStatus: 503, DelayPerMillion: Million, Delay: 200 * time.Millisecond}},
	}, {
		name: "fault of a delay alone",
		in: func(r *destinationv1.Rule) {
			r.Backends = nil
			r.Filters = []*destinationv1.Filter{delayFault(10, 0)}
		},
		want: &Rule{Route: ref, Name: "r", Fault: &Fault{DelayPerMillion: 10}},
	}, {
		name: "invalid backend keeps its weight",
		in: func(r *destinationv1.Rule) {
			r.Backends = []*destinationv1.Backend{{Weight: 3, Filters: []*destinationv1.Filter{failFilter(500, "Service ns/gone not found")}}}
		},
		want: &Rule{Route: ref, Name: "r", Backends: []Backend{{Weight: 3, Fail: &Fail{Status: 500, Message: "Service ns/gone not found"}}}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pr := httpRule("r", prefix("/"))
			pr.Backends = nil
			tc.in(pr)
			if diff := cmp.Diff(tc.want, compileRule1(t, pr)); diff != "" {
				t.Errorf("compiled rule (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCompileUnsupported checks that a rule or backend this proxy cannot
// honour as the table says answers 500 rather than skip a filter
// (docs/traffic.md 2.4 "Versions").
func TestCompileUnsupported(t *testing.T) {
	tests := []struct {
		name        string
		filters     []*destinationv1.Filter
		backend     []*destinationv1.Filter
		wantRule    *Fail
		wantBackend *Fail
	}{
		{name: "newer filter kind", filters: []*destinationv1.Filter{newerFilter(t)}, wantRule: serverError},
		{name: "empty filter", filters: []*destinationv1.Filter{{}}, wantRule: serverError},
		{name: "newer kind after a fail", filters: []*destinationv1.Filter{failFilter(503, "x"), newerFilter(t)}, wantRule: &Fail{Status: 503, Message: "x"}},
		{
			name:     "filter twice",
			filters:  []*destinationv1.Filter{requestHeaders(hdrs("a", "1"), nil), requestHeaders(hdrs("b", "1"), nil)},
			wantRule: &Fail{Status: 500, Message: "filter request_headers given twice, which this proxy does not support"},
		},
		{
			name:     "redirect and rewrite",
			filters:  []*destinationv1.Filter{redirect(&destinationv1.Redirect{}), rewrite(&destinationv1.Rewrite{})},
			wantRule: &Fail{Status: 500, Message: "redirect and rewrite filters in one rule, which this proxy does not support"},
		},
		{
			name:     "header value with a line break",
			filters:  []*destinationv1.Filter{responseHeaders(nil, hdrs("x-a", "1\r\nx-b: 2"))},
			wantRule: &Fail{Status: 500, Message: "header filter: the value of x-a has a control character"},
		},
		{
			name:     "fault twice",
			filters:  []*destinationv1.Filter{abortFault(Million, 503), delayFault(Million, time.Second)},
			wantRule: &Fail{Status: 500, Message: "filter fault given twice, which this proxy does not support"},
		},
		{name: "newer filter kind on a backend", backend: []*destinationv1.Filter{newerFilter(t)}, wantBackend: serverError},
		{
			name:        "fault on a backend",
			backend:     []*destinationv1.Filter{abortFault(Million, 503)},
			wantBackend: &Fail{Status: 500, Message: "this proxy applies no fault filter on a backendRef"},
		},
		{
			name:        "response headers on a backend",
			backend:     []*destinationv1.Filter{responseHeaders(hdrs("a", "1"), nil)},
			wantBackend: &Fail{Status: 500, Message: "this proxy applies no response_headers filter on a backendRef"},
		},
		{
			name:        "backend header value with a line break",
			backend:     []*destinationv1.Filter{requestHeaders(hdrs("x-a", "1\nx"), nil)},
			wantBackend: &Fail{Status: 500, Message: "header filter: the value of x-a has a control character"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pr := httpRule("r", prefix("/"))
			pr.Filters = tc.filters
			pr.Backends[0].Filters = tc.backend
			r := compileRule1(t, pr)
			if diff := cmp.Diff(tc.wantRule, r.Fail); diff != "" {
				t.Errorf("rule's Fail (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantBackend, r.Backends[0].Fail); diff != "" {
				t.Errorf("backend's Fail (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCompileInvalid checks that tables the API's invariants and the
// CRDs' validation rule out are refused, with ErrInvalid.
func TestCompileInvalid(t *testing.T) {
	tests := []struct {
		name string
		edit func(r *destinationv1.Rule)
	}{
		{name: "bad path regex", edit: func(r *destinationv1.Rule) { r.Matches = []*destinationv1.Match{regex("/a(")} }},
		{name: "regex closing the wrapper", edit: func(r *destinationv1.Rule) { r.Matches = []*destinationv1.Match{regex("/a)|(/b")} }},
		{name: "bad header regex", edit: func(r *destinationv1.Rule) { r.Matches = []*destinationv1.Match{with(prefix("/"), "header:x~[")} }},
		{name: "bad query regex", edit: func(r *destinationv1.Rule) { r.Matches = []*destinationv1.Match{with(prefix("/"), "query:x~*")} }},
		{name: "bad grpc regex", edit: func(r *destinationv1.Rule) {
			r.Matches = []*destinationv1.Match{with(anyMatch(), "service=a(", "grpc-regex")}
		}},
		{name: "relative exact path", edit: func(r *destinationv1.Rule) { r.Matches = []*destinationv1.Match{exact("a")} }},
		{name: "empty prefix", edit: func(r *destinationv1.Rule) { r.Matches = []*destinationv1.Match{prefix("")} }},
		{name: "space in prefix", edit: func(r *destinationv1.Rule) { r.Matches = []*destinationv1.Match{prefix("/a b")} }},
		{name: "header match without value", edit: func(r *destinationv1.Rule) {
			r.Matches = []*destinationv1.Match{{Headers: []*destinationv1.HeaderMatch{{Name: "x"}}}}
		}},
		{name: "header match without name", edit: func(r *destinationv1.Rule) { r.Matches = []*destinationv1.Match{with(prefix("/"), "header:=1")} }},
		{name: "bad method", edit: func(r *destinationv1.Rule) { r.Matches = []*destinationv1.Match{with(prefix("/"), "method=G T")} }},
		{name: "negative timeout", edit: func(r *destinationv1.Rule) { r.Timeouts = &destinationv1.Timeouts{Request: seconds(-1)} }},
		{name: "invalid duration", edit: func(r *destinationv1.Rule) {
			r.Timeouts = &destinationv1.Timeouts{BackendRequest: &durationpb.Duration{Seconds: math.MaxInt64}}
		}},
		{name: "redirect status", edit: func(r *destinationv1.Rule) {
			r.Filters = []*destinationv1.Filter{redirect(&destinationv1.Redirect{StatusCode: 200})}
		}},
		{name: "redirect port", edit: func(r *destinationv1.Rule) {
			r.Filters = []*destinationv1.Filter{redirect(&destinationv1.Redirect{Port: 70000})}
		}},
		{name: "redirect scheme", edit: func(r *destinationv1.Rule) {
			r.Filters = []*destinationv1.Filter{redirect(&destinationv1.Redirect{Scheme: "ht tp"})}
		}},
		{name: "redirect hostname", edit: func(r *destinationv1.Rule) {
			r.Filters = []*destinationv1.Filter{redirect(&destinationv1.Redirect{Hostname: "a/b"})}
		}},
		{name: "rewrite hostname", edit: func(r *destinationv1.Rule) {
			r.Filters = []*destinationv1.Filter{rewrite(&destinationv1.Rewrite{Hostname: "a:80"})}
		}},
		{name: "fail status", edit: func(r *destinationv1.Rule) { r.Filters = []*destinationv1.Filter{failFilter(600, "x")} }},
		{name: "backend fail status", edit: func(r *destinationv1.Rule) { r.Backends[0].Filters = []*destinationv1.Filter{failFilter(99, "x")} }},
		{name: "header name", edit: func(r *destinationv1.Rule) {
			r.Filters = []*destinationv1.Filter{requestHeaders(hdrs("x a", "1"), nil)}
		}},
		{name: "pseudo-header name", edit: func(r *destinationv1.Rule) {
			r.Filters = []*destinationv1.Filter{requestHeaders(nil, nil, ":path")}
		}},
		{name: "backend without authority", edit: func(r *destinationv1.Rule) { r.Backends[0].Authority = "" }},
		{name: "abort share above the whole", edit: func(r *destinationv1.Rule) {
			r.Filters = []*destinationv1.Filter{abortFault(Million+1, 503)}
		}},
		{name: "abort status", edit: func(r *destinationv1.Rule) { r.Filters = []*destinationv1.Filter{abortFault(1, 199)} }},
		{name: "abort without status", edit: func(r *destinationv1.Rule) { r.Filters = []*destinationv1.Filter{abortFault(0, 0)} }},
		{name: "delay share above the whole", edit: func(r *destinationv1.Rule) {
			r.Filters = []*destinationv1.Filter{delayFault(Million+1, time.Second)}
		}},
		{name: "negative delay", edit: func(r *destinationv1.Rule) { r.Filters = []*destinationv1.Filter{delayFault(1, -time.Second)} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pr := httpRule("r", prefix("/"))
			tc.edit(pr)
			pt := &destinationv1.RouteTable{HttpRules: []*destinationv1.Rule{httpRule("fine", prefix("/")), pr}}
			tab, err := Compile(pt)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Compile = %v, %v; want an error that is ErrInvalid", tab, err)
			}
			t.Log(err)
		})
	}
}

// TestPickBackend checks the weighted draw: shares within 5 standard
// deviations of the weights' over many draws, and never a backend
// without weight.
func TestPickBackend(t *testing.T) {
	r := &Rule{Backends: []Backend{
		{Authority: "a", Weight: 90},
		{Authority: "none", Weight: 0},
		{Authority: "b", Weight: 10},
	}}
	const draws = 100000
	counts := map[string]int{}
	for range draws {
		b, ok := r.PickBackend()
		if !ok {
			t.Fatal("PickBackend found no backend")
		}
		counts[b.Authority]++
	}
	if counts["none"] != 0 {
		t.Errorf("a backend of weight 0 was drawn %d times", counts["none"])
	}
	// The share of b has a standard deviation of √(0.1·0.9/draws) ≈
	// 0.095 points.
	if share := float64(counts["b"]) / draws; math.Abs(share-0.1) > 5*math.Sqrt(0.1*0.9/draws) {
		t.Errorf("b drawn for %.4f of requests, want 0.1", share)
	}
	if b, _ := (&Rule{Backends: []Backend{{Authority: "only", Weight: 1}}}).PickBackend(); b == nil || b.Authority != "only" {
		t.Errorf("PickBackend of one backend = %v", b)
	}
	for name, r := range map[string]*Rule{
		"no backends":       {},
		"zero weights only": {Backends: []Backend{{Authority: "a"}, {Authority: "b"}}},
	} {
		if b, ok := r.PickBackend(); ok {
			t.Errorf("%s: PickBackend = %v, want none", name, b)
		}
	}
	huge := &Rule{Backends: []Backend{{Authority: "a", Weight: math.MaxUint32}, {Authority: "b", Weight: math.MaxUint32}}}
	if _, ok := huge.PickBackend(); !ok {
		t.Error("PickBackend of the largest weights found none")
	}
}
