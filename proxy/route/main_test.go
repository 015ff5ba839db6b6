package route

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// request is a Request from a test: header names are lower case, and a
// repeated field is given joined, as the HTTP paths join them.
type request struct {
	method string
	path   string
	header map[string]string
}

func (r request) Method() string { return r.method }
func (r request) Path() string   { return r.path }
func (r request) Header(name string) (string, bool) {
	v, ok := r.header[name]
	return v, ok
}

func get(path string, header ...string) request {
	return req("GET", path, header...)
}

// req is a request; header is name, value, name, value...
func req(method, path string, header ...string) request {
	r := request{method: method, path: path, header: map[string]string{}}
	for i := 0; i+1 < len(header); i += 2 {
		r.header[header[i]] = header[i+1]
	}
	return r
}

// httpRule is a rule of HTTPRoute ns/web named name, with a backend named
// after it ("name.ns.svc.cluster.local:80"), so that a test can tell
// rules apart by their rule name.
func httpRule(name string, ms ...*destinationv1.Match) *destinationv1.Rule {
	return &destinationv1.Rule{
		Route:    &destinationv1.Resource{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "ns", Name: "web"},
		RuleName: name,
		Matches:  ms,
		Backends: []*destinationv1.Backend{{Authority: name + ".ns.svc.cluster.local:80", Weight: 1}},
	}
}

// grpcRule is httpRule for a GRPCRoute.
func grpcRule(name string, ms ...*destinationv1.Match) *destinationv1.Rule {
	r := httpRule(name, ms...)
	r.Route.Kind = "GRPCRoute"
	return r
}

func prefix(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Prefix{Prefix: p}}
}

func exact(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Exact{Exact: p}}
}

func regex(p string) *destinationv1.Match {
	return &destinationv1.Match{Path: &destinationv1.Match_Regex{Regex: p}}
}

// with adds to m: "method=GET", "header:name=value", "header:name~regex",
// "query:name=value", "query:name~regex", "service=S", "method-of=M",
// "grpc-regex".
func with(m *destinationv1.Match, conds ...string) *destinationv1.Match {
	for _, c := range conds {
		kind, rest, _ := strings.Cut(c, ":")
		switch kind {
		case "header", "query":
			hm := valueOf(rest)
			if kind == "header" {
				m.Headers = append(m.Headers, hm)
			} else {
				m.Query = append(m.Query, hm)
			}
		default:
			k, v, _ := strings.Cut(c, "=")
			switch k {
			case "method":
				m.Method = v
			case "service":
				m.GrpcService = v
			case "method-of":
				m.GrpcMethod = v
			case "grpc-regex":
				m.GrpcRegex = true
			default:
				panic("with: unknown condition " + c)
			}
		}
	}
	return m
}

func valueOf(s string) *destinationv1.HeaderMatch {
	if i := strings.IndexAny(s, "=~"); i >= 0 {
		if s[i] == '~' {
			return &destinationv1.HeaderMatch{Name: s[:i], Value: &destinationv1.HeaderMatch_Regex{Regex: s[i+1:]}}
		}
		return &destinationv1.HeaderMatch{Name: s[:i], Value: &destinationv1.HeaderMatch_Exact{Exact: s[i+1:]}}
	}
	panic("valueOf: no = or ~ in " + s)
}

// anyMatch is a match of every request.
func anyMatch() *destinationv1.Match { return &destinationv1.Match{} }

func mustCompile(t testing.TB, pt *destinationv1.RouteTable) *Table {
	t.Helper()
	tab, err := Compile(pt)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tab
}

func seconds(s int64) *durationpb.Duration { return &durationpb.Duration{Seconds: s} }
