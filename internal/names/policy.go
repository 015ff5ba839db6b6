package names

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
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

// DefaultInboundPoliciesAccepted says in words what
// ParseDefaultInboundPolicy accepts, for messages about a bad value.
func DefaultInboundPoliciesAccepted() string {
	return "one of " + strings.Join(DefaultInboundPolicies, ", ")
}

// ParseDefaultInboundPolicy returns the policy s names: one of
// DefaultInboundPolicies, compared exactly after trimming spaces. The
// controller reads AnnotationDefaultInboundPolicy with it, the injector
// checks it and `mesh install` its flag, so all accept the same values; the
// error wraps ErrDefaultInboundPolicy and lists the valid names.
func ParseDefaultInboundPolicy(s string) (string, error) {
	v := strings.TrimSpace(s)
	if slices.Contains(DefaultInboundPolicies, v) {
		return v, nil
	}
	return "", fmt.Errorf("%w %s: want %s", ErrDefaultInboundPolicy, quote(s), DefaultInboundPoliciesAccepted())
}

// quote quotes an untrusted value for an error, cut at 64 characters: the
// value comes from an annotation, which can be long.
func quote(s string) string {
	if r := []rune(s); len(r) > 64 {
		return strconv.Quote(string(r[:64])) + "..."
	}
	return strconv.Quote(s)
}
