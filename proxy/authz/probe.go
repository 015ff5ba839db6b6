package authz

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
)

// GRPCHealthCheck is the path of a kubelet grpc probe: the Check method of
// the standard health service (grpc.health.v1).
const GRPCHealthCheck = "/grpc.health.v1.Health/Check"

// probe is one kubelet probe the pod declares.
type probe struct {
	// paths are the probe's path as the controller sent it and
	// percent-decoded (the same when nothing is encoded): a request's
	// decoded path matches either, whichever form the controller used.
	paths [2]string
	query string // with hasQuery: the only query that matches
	// hasQuery: the path came with a query. Without one any query
	// matches, since the controller may have left the declared query out.
	hasQuery bool
	grpc     bool // any method (the kubelet's gRPC client POSTs)
}

func (pr *probe) matches(method, path, query string) bool {
	if path != pr.paths[0] && path != pr.paths[1] {
		return false
	}
	if pr.hasQuery && query != pr.query {
		return false
	}
	return pr.grpc || method == http.MethodGet || method == http.MethodHead
}

// IsProbe reports whether a request is one of the pod's kubelet probes,
// which pass whatever the policy: a request on port whose path
// (percent-decoded, as url.URL.Path) is a declared probe's path, whose
// query (raw, as url.URL.RawQuery) is the probe's when it declares one,
// and whose method is GET or HEAD for an HTTP probe, any for a gRPC probe
// (GRPCHealthCheck).
func (p *Policy) IsProbe(port uint16, method, path, query string) bool {
	if p == nil {
		return false
	}
	for i := range p.probes[port] {
		if p.probes[port][i].matches(method, path, query) {
			return true
		}
	}
	return false
}

// Probes returns how many probes are exempt.
func (p *Policy) Probes() int {
	if p == nil {
		return 0
	}
	n := 0
	for _, ps := range p.probes {
		n += len(ps)
	}
	return n
}

func (c *compiler) probes(in []*inboundv1.Probe) map[uint16][]probe {
	out := map[uint16][]probe{}
	for _, pb := range in {
		port, ok := c.port(pb.GetPort(), fmt.Sprintf("probe %q", pb.GetPath()))
		if !ok {
			continue
		}
		out[port] = append(out[port], parseProbe(pb.GetPath()))
	}
	return out
}

// parseProbe reads a probe's path as the kubelet requests it: an
// httpGet.path may carry a query, and a path without a leading slash (or
// an empty one) gets one.
func parseProbe(s string) probe {
	if s == GRPCHealthCheck {
		return probe{paths: [2]string{s, s}, grpc: true}
	}
	path, query, hasQuery := strings.Cut(s, "?")
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	decoded, err := url.PathUnescape(path)
	if err != nil {
		decoded = path // not encoded: a literal '%'
	}
	return probe{paths: [2]string{path, decoded}, query: query, hasQuery: hasQuery}
}
