package inject

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The default inbound policies (DESIGN.md "Policy and traffic"): what a
// proxy allows on a port no Server selects. `mesh install
// --default-inbound-policy` sets the cluster's, which the controller
// applies unless the namespace or the pod says otherwise with
// AnnotationDefaultInboundPolicy (the pod's wins).
const (
	// PolicyAllUnauthenticated allows every client; the install default.
	PolicyAllUnauthenticated = "all-unauthenticated"
	// PolicyAllAuthenticated allows clients that proved, over mesh TLS,
	// any identity of the mesh's trust domain.
	PolicyAllAuthenticated = "all-authenticated"
	// PolicyClusterAuthenticated allows mesh TLS clients whose address is
	// inside the cluster networks.
	PolicyClusterAuthenticated = "cluster-authenticated"
	// PolicyClusterUnauthenticated allows any client whose address is
	// inside the cluster networks.
	PolicyClusterUnauthenticated = "cluster-unauthenticated"
	// PolicyDeny refuses every client (kubelet probes still pass).
	PolicyDeny = "deny"
	// PolicyAudit allows every client, but counts and logs what deny would
	// have refused.
	PolicyAudit = "audit"

	// DefaultInboundPolicy is the install default.
	DefaultInboundPolicy = PolicyAllUnauthenticated
)

// DefaultInboundPolicies are the valid default inbound policy names, the
// install default first.
var DefaultInboundPolicies = []string{
	PolicyAllUnauthenticated,
	PolicyAllAuthenticated,
	PolicyClusterAuthenticated,
	PolicyClusterUnauthenticated,
	PolicyDeny,
	PolicyAudit,
}

// ErrDefaultInboundPolicy is wrapped by every error of
// ParseDefaultInboundPolicy.
var ErrDefaultInboundPolicy = errors.New("unknown default inbound policy")

// defaultInboundPoliciesAccepted lists the names for messages.
var defaultInboundPoliciesAccepted = "one of " + strings.Join(DefaultInboundPolicies, ", ")

// ParseDefaultInboundPolicy returns the policy s names: one of
// DefaultInboundPolicies, compared exactly after trimming spaces. The
// controller reads AnnotationDefaultInboundPolicy with it and `mesh
// install` its flag, so both accept the same values; the error wraps
// ErrDefaultInboundPolicy and lists the valid names.
func ParseDefaultInboundPolicy(s string) (string, error) {
	v := strings.TrimSpace(s)
	if slices.Contains(DefaultInboundPolicies, v) {
		return v, nil
	}
	return "", fmt.Errorf("%w %s: want %s", ErrDefaultInboundPolicy, quote(s), defaultInboundPoliciesAccepted)
}

// DefaultClusterNetworks are the networks `mesh install` assumes pods,
// services and nodes take their addresses from: RFC 1918 and the IPv6
// unique local addresses (RFC 4193). They are mesh-proxy's default too
// (proxy.DefaultClusterNetworks; a test keeps the two equal).
func DefaultClusterNetworks() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("fd00::/8"),
	}
}

// ErrClusterNetworks is wrapped by every error of ParseClusterNetworks.
var ErrClusterNetworks = errors.New("invalid cluster networks")

// ParseClusterNetworks reads comma-separated CIDRs, like
// "10.0.0.0/8,fd00::/8", with the grammar of mesh-proxy's
// --cluster-networks: spaces around a CIDR are ignored, host bits are an
// error (10.0.0.1/8 is likely a typo), and at least one CIDR is needed,
// since an empty list would let every destination fall back to plain text.
// The error wraps ErrClusterNetworks.
func ParseClusterNetworks(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %s is not a CIDR such as 10.0.0.0/8 or fd00::/8", ErrClusterNetworks, quote(f))
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%w: %s has host bits set; did you mean %s?", ErrClusterNetworks, quote(f), p.Masked())
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: give at least one CIDR, like %s", ErrClusterNetworks, FormatClusterNetworks(DefaultClusterNetworks()))
	}
	return out, nil
}

// FormatClusterNetworks is the inverse of ParseClusterNetworks: the
// prefixes joined by commas, as MESH_PROXY_CLUSTER_NETWORKS and the
// controller's --cluster-networks take them.
func FormatClusterNetworks(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
