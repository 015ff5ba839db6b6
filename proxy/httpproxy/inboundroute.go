package httpproxy

import (
	"fmt"

	"github.com/mesh-dev/mesh/proxy/route"
)

// NoInboundRoute is the error an Authorizer returns for a request on a
// port whose Server has inbound routes (HTTPRoutes or GRPCRoutes attached
// to it, docs/policy.md) when it matches none of them: the forwarders
// answer it with 404 Not Found, header Mesh-Proxy-Error: no route (gRPC:
// UNIMPLEMENTED, as an outbound request no route matches), where any
// other error of an Authorizer but RateLimited is a 403. Test for it with
// errors.As.
type NoInboundRoute struct {
	// Server is the Server whose routes the request matched none of.
	Server string
	// Method and Path are the request's, Path percent-decoded.
	Method, Path string
	// Ambiguous: the path is one an application could read as another
	// ("." or ".." segments, "//", an encoded "?"), which no route takes.
	Ambiguous bool
}

// Error says which Server's routes the request missed, for the body of
// the 404 and the grpc-message.
func (e *NoInboundRoute) Error() string {
	if e.Ambiguous {
		return fmt.Sprintf("no route of server %q takes path %q: a path with \".\" or \"..\" segments, \"//\" or an encoded \"?\" matches no inbound route", e.Server, e.Path)
	}
	return fmt.Sprintf("no route of server %q matches %s %s", e.Server, e.Method, e.Path)
}

// RouteAuthorizer is an Authorizer that matches requests against the
// inbound routes of their port, whose matches may read header fields.
// A forwarder whose connection's Authorizer is one calls AuthorizeRoute
// for each request, with the request head it parsed as a route.Request
// (the one its outbound routing matches: Path raw, with the query), in
// place of AuthorizeRequest; the answer is read the same way. An
// Authorizer asked without the headers refuses a request whose route it
// cannot choose without them, rather than guess.
type RouteAuthorizer interface {
	AuthorizeRoute(req route.Request) error
}
