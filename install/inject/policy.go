package inject

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/mesh-dev/mesh/internal/clusternet"
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
// services and nodes take their addresses from (clusternet.Default), which
// are mesh-proxy's default too.
func DefaultClusterNetworks() []netip.Prefix { return clusternet.Default() }

// ErrClusterNetworks is wrapped by every error of ParseClusterNetworks.
var ErrClusterNetworks = clusternet.ErrInvalid

// ParseClusterNetworks reads comma-separated CIDRs with the grammar of
// mesh-proxy's --cluster-networks (clusternet.Parse), and needs at least
// one, since an empty list would let every destination fall back to plain
// text. The error wraps ErrClusterNetworks.
func ParseClusterNetworks(s string) ([]netip.Prefix, error) {
	out, err := clusternet.Parse(s)
	if err == nil && len(out) == 0 {
		err = fmt.Errorf("%w: give at least one CIDR, like %s", ErrClusterNetworks, FormatClusterNetworks(DefaultClusterNetworks()))
	}
	return out, err
}

// FormatClusterNetworks is the inverse of ParseClusterNetworks, as
// MESH_PROXY_CLUSTER_NETWORKS and the controller's --cluster-networks take
// it.
func FormatClusterNetworks(ps []netip.Prefix) string { return clusternet.Format(ps) }
