package route

import (
	"fmt"
	"testing"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// BenchmarkMatch measures Match over a table of 100 routes of 10 rules
// each, for a request only the last rule matches, with every rule's
// match of one kind. Exact paths, prefixes and exact gRPC methods are
// indexed, so the request looks at its own candidates only; a prefix
// shared by a route's rules, with a header telling them apart, gives the
// request that route's 10 (a header run, list.seal); headers on the root
// prefix are one run of 1,000, which the request looks its header up in
// once; regexes are tried in order, all 1,000 of them. Run it with
//
//	go test -run '^$' -bench Match -benchmem ./proxy/route/
func BenchmarkMatch(b *testing.B) {
	const routes, rules = 100, 10
	cases := []struct {
		name  string
		match func(route, rule int) *destinationv1.Match
		req   request
		grpc  bool
	}{{
		name:  "exact",
		match: func(i, j int) *destinationv1.Match { return exact(fmt.Sprintf("/api/svc%d/op%d", i, j)) },
		req:   get("/api/svc99/op9?x=1"),
	}, {
		name:  "prefix",
		match: func(i, j int) *destinationv1.Match { return prefix(fmt.Sprintf("/api/svc%d/op%d", i, j)) },
		req:   get("/api/svc99/op9/items/42?x=1"),
	}, {
		name: "prefix+header",
		match: func(i, j int) *destinationv1.Match {
			return with(prefix(fmt.Sprintf("/api/svc%d", i)), fmt.Sprintf("header:x-op=op%d", j))
		},
		req: get("/api/svc99/items/42", "x-op", "op9"),
	}, {
		name: "grpc",
		match: func(i, j int) *destinationv1.Match {
			return with(anyMatch(), fmt.Sprintf("service=pkg.Svc%d", i), fmt.Sprintf("method-of=Op%d", j))
		},
		req:  req("POST", "/pkg.Svc99/Op9"),
		grpc: true,
	}, {
		name: "header",
		match: func(i, j int) *destinationv1.Match {
			return with(prefix("/"), fmt.Sprintf("header:x-route=%d-%d", i, j))
		},
		req: get("/api/items/42", "x-route", "99-9"),
	}, {
		name:  "regex",
		match: func(i, j int) *destinationv1.Match { return regex(fmt.Sprintf("/api/svc%d/op%d/[0-9]+", i, j)) },
		req:   get("/api/svc99/op9/42"),
	}}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			pt := &destinationv1.RouteTable{}
			for i := range routes {
				for j := range rules {
					r := httpRule(fmt.Sprintf("%d-%d", i, j), bc.match(i, j))
					r.Route.Name = fmt.Sprintf("route%d", i)
					if bc.grpc {
						r.Route.Kind = "GRPCRoute"
						pt.GrpcRules = append(pt.GrpcRules, r)
					} else {
						pt.HttpRules = append(pt.HttpRules, r)
					}
				}
			}
			tab := mustCompile(b, pt)
			last := fmt.Sprintf("%d-%d", routes-1, rules-1)
			if m, ok := tab.Match(bc.req, bc.grpc); !ok || m.Rule.Name != last {
				b.Fatalf("the request matched %v %v, want rule %s", m.Rule, ok, last)
			}
			// A pointer, as the HTTP paths pass theirs: boxing the
			// struct would allocate per call.
			var r Request = &bc.req
			b.ReportAllocs()
			for b.Loop() {
				tab.Match(r, bc.grpc)
			}
		})
	}
}

// BenchmarkCompile measures compiling the prefix table of BenchmarkMatch,
// which the discovery cache does once per table the controller sends.
func BenchmarkCompile(b *testing.B) {
	pt := &destinationv1.RouteTable{}
	for i := range 100 {
		for j := range 10 {
			pt.HttpRules = append(pt.HttpRules, httpRule(fmt.Sprintf("%d-%d", i, j),
				with(prefix(fmt.Sprintf("/api/svc%d/op%d", i, j)), "header:x-env=prod")))
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(pt); err != nil {
			b.Fatal(err)
		}
	}
}
