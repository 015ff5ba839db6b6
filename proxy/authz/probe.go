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
	path  string // decoded, as url.URL.Path
	query string // raw, as url.URL.RawQuery
	grpc  bool   // any method (the kubelet's gRPC client POSTs)
}

// IsProbe reports whether a request is one of the pod's kubelet probes,
// which pass whatever the policy: a request on port for exactly a declared
// probe's path and query (path decoded, as url.URL.Path; query raw, as
// url.URL.RawQuery), with method GET or HEAD for an HTTP probe and any
// method for a gRPC probe (GRPCHealthCheck).
func (p *Policy) IsProbe(port uint16, method, path, query string) bool {
	if p == nil {
		return false
	}
	for _, pr := range p.probes[port] {
		if pr.path != path || pr.query != query {
			continue
		}
		if pr.grpc || method == http.MethodGet || method == http.MethodHead {
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
		pr, err := parseProbe(pb.GetPath())
		if err != nil {
			c.drop("probe on port %d: path %q: %w", port, pb.GetPath(), err)
			continue
		}
		out[port] = append(out[port], pr)
	}
	return out
}

// parseProbe reads a probe's path as the kubelet sends it: httpGet.path
// may carry a query, and an empty path is "/".
func parseProbe(s string) (probe, error) {
	if s == GRPCHealthCheck {
		return probe{path: s, grpc: true}, nil
	}
	if !strings.HasPrefix(s, "/") {
		s = "/" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return probe{}, err
	}
	if u.Scheme != "" || u.Host != "" || u.Opaque != "" {
		return probe{}, fmt.Errorf("not a path")
	}
	return probe{path: u.Path, query: u.RawQuery}, nil
}
