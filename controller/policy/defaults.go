package policy

import (
	"net/netip"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/internal/names"
)

// DefaultAuthorizationPrefix starts the names of the authorizations and
// authentications a default inbound policy spells out:
// "default:all-unauthenticated".
const DefaultAuthorizationPrefix = "default:"

// defaultAuthorizations spells out a default inbound policy (one of
// names.DefaultInboundPolicies) for the ports no Server selects:
//
//	all-unauthenticated      one authorization that requires nothing
//	all-authenticated        mesh TLS, any identity of the trust domain ("*")
//	cluster-authenticated    a client inside clusterNetworks, over mesh TLS ("*")
//	cluster-unauthenticated  a client inside clusterNetworks
//	deny                     none
//	audit                    none, and audit set
func defaultAuthorizations(policy string, clusterNetworks []*inboundv1.Network) (authz []*inboundv1.Authorization, audit bool) {
	name := DefaultAuthorizationPrefix + policy
	anyIdentity := &inboundv1.Authentication{
		Name: name,
		Kind: &inboundv1.Authentication_MeshTls{MeshTls: &inboundv1.Identities{Patterns: []string{"*"}}},
	}
	inCluster := &inboundv1.Authentication{
		Name: name,
		Kind: &inboundv1.Authentication_Networks{Networks: &inboundv1.Networks{Networks: clusterNetworks}},
	}
	var required []*inboundv1.Authentication
	switch policy {
	case names.PolicyAllUnauthenticated:
	case names.PolicyAllAuthenticated:
		required = []*inboundv1.Authentication{anyIdentity}
	case names.PolicyClusterAuthenticated:
		required = []*inboundv1.Authentication{inCluster, anyIdentity}
	case names.PolicyClusterUnauthenticated:
		required = []*inboundv1.Authentication{inCluster}
	case names.PolicyAudit:
		return nil, true
	default: // deny, and anything unknown: fail closed
		return nil, false
	}
	return []*inboundv1.Authorization{{Name: name, Required: required}}, false
}

// networks converts the cluster networks to the API's, in the order given.
func networks(prefixes []netip.Prefix) []*inboundv1.Network {
	out := make([]*inboundv1.Network, 0, len(prefixes))
	for _, p := range prefixes {
		out = append(out, &inboundv1.Network{Cidr: p.Masked().String()})
	}
	return out
}
