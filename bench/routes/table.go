package main

import (
	"fmt"
	"net"
	"strconv"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// tableKind is the route table of one of the lab's three Services.
type tableKind string

const (
	// noRoutes is a Service no route attaches to: the table the
	// controller sends for one (controller/destination translateTable of
	// no route), its parent and nothing else, so requests go to the
	// Service's own endpoints as with no table at all.
	noRoutes tableKind = "none"
	// byPath is routeCount HTTPRoutes of ruleCount rules, each rule a path
	// prefix of its own, "/api/svcRR/opN": the index files every rule
	// under its path, so a request looks at its own path's candidates.
	byPath tableKind = "by path"
	// byHeader is as many routes and rules on the root prefix, told apart
	// by one header alone, as a header-based canary is: the index cannot
	// narrow them by path, and a request is checked against every rule in
	// turn.
	byHeader tableKind = "by header"
)

// Sizes of the two tables with routes: issue 14's benchmark.
const (
	routeCount = 100
	ruleCount  = 10
)

// allKinds in the order the first round runs them; each next round
// starts one further along.
var allKinds = []tableKind{noRoutes, byPath, byHeader}

// The request every load sends to every Service: it matches the last rule
// of the last route of both tables, the worst case for the order the
// controller sends rules in, and is the same whatever the table, so the
// three Services differ by their table alone.
const (
	requestPath  = "/api/svc99/op9"
	headerName   = "x-route"
	headerValue  = "99-9"
	lastRoute    = "route-99"
	lastRuleName = "9"
)

// Names of the lab's fake cluster.
const (
	appNamespace = "bench"
	// clusterDomain is the cluster's DNS domain, in backend authorities.
	clusterDomain = "cluster.local"
	// appService is the backend of the rule the request matches, whose
	// endpoint is the application; decoyService is the backend of every
	// other rule, whose endpoint answers 421, so a request matched to the
	// wrong rule is an error the client counts.
	appService   = "app"
	decoyService = "decoy"
)

// serviceAuthority is the authority a route names service by on port.
func serviceAuthority(service string, port int) string {
	return net.JoinHostPort(service+"."+appNamespace+".svc."+clusterDomain, strconv.Itoa(port))
}

// buildTable returns the table of a Service of kind on port, as
// controller/destination would send it: rules in precedence order, each
// rule one match and one backend of weight 1 on the same port.
func buildTable(kind tableKind, service string, port int) *destinationv1.RouteTable {
	t := &destinationv1.RouteTable{
		Version: 1,
		Parent:  &destinationv1.Resource{Kind: "Service", Namespace: appNamespace, Name: service, Port: uint32(port)},
	}
	if kind == noRoutes {
		return t
	}
	for i := range routeCount {
		for j := range ruleCount {
			backend := decoyService
			if i == routeCount-1 && j == ruleCount-1 {
				backend = appService
			}
			t.HttpRules = append(t.HttpRules, &destinationv1.Rule{
				Route: &destinationv1.Resource{
					Group: "gateway.networking.k8s.io", Kind: "HTTPRoute",
					Namespace: appNamespace, Name: fmt.Sprintf("route-%02d", i),
				},
				RuleName: strconv.Itoa(j),
				Matches:  []*destinationv1.Match{ruleMatch(kind, i, j)},
				Backends: []*destinationv1.Backend{{Authority: serviceAuthority(backend, port), Weight: 1}},
			})
		}
	}
	return t
}

// ruleMatch is the match of rule j of route i in a table of kind.
func ruleMatch(kind tableKind, i, j int) *destinationv1.Match {
	if kind == byPath {
		return &destinationv1.Match{Path: &destinationv1.Match_Prefix{Prefix: fmt.Sprintf("/api/svc%02d/op%d", i, j)}}
	}
	// A Gateway API match without a path is the prefix "/".
	return &destinationv1.Match{
		Path: &destinationv1.Match_Prefix{Prefix: "/"},
		Headers: []*destinationv1.HeaderMatch{{
			Name: headerName, Value: &destinationv1.HeaderMatch_Exact{Exact: fmt.Sprintf("%d-%d", i, j)},
		}},
	}
}
