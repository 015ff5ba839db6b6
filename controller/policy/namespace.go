package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/internal/names"
)

// namespaceInputs are the objects of one namespace a namespacePolicy is
// built from, as the caches hold them.
type namespaceInputs struct {
	name string
	// annotations are the Namespace's; nil when it is not in the cache.
	annotations map[string]string
	servers     []*policyv1alpha1.Server
	policies    []*policyv1alpha1.AuthorizationPolicy
	meshTLS     []*policyv1alpha1.MeshTLSAuthentication
	networks    []*policyv1alpha1.NetworkAuthentication
	rateLimits  []*policyv1alpha1.HTTPLocalRateLimitPolicy
	// httpRoutes and grpcRoutes are the namespace's Gateway API routes,
	// those with a Server parent among them; none when the cluster
	// serves no Gateway API.
	httpRoutes []*gatewayv1.HTTPRoute
	grpcRoutes []*gatewayv1.GRPCRoute
}

// namespacePolicy is everything of a namespace's policy that does not
// depend on the pod: its Servers, ready to match pods, and the
// authorizations each of them gets, with every authentication reference
// resolved. It is immutable once built, and so are the protobuf messages
// it holds, which the PodPolicies of the namespace's pods share.
type namespacePolicy struct {
	// defaultPolicy is the namespace's default inbound policy annotation,
	// validated; "" when unset or invalid.
	defaultPolicy string
	// servers are the usable Servers, oldest first, which is the order in
	// which they claim pod ports.
	servers []serverRule
	// authorizations are each Server's, by Server name: those that target
	// it and those that target the namespace, sorted by name.
	authorizations map[string][]*inboundv1.Authorization
	// rateLimits are the limits of the Servers an HTTPLocalRateLimitPolicy
	// applies to, by Server name.
	rateLimits map[string]*inboundv1.RateLimit
	// routes are the inbound routes of the Servers that have any, by
	// Server name.
	routes map[string]*serverRoutes
}

// serverRule is a Server as pods are matched against it.
type serverRule struct {
	name     string
	selector labels.Selector
	port     intstr.IntOrString
	protocol inboundv1.ProxyProtocol
}

// buildNamespace returns the policy of the namespace in, and the warnings
// about objects that are left out or partly ignored. td is the trust
// domain ServiceAccount identities are in.
func buildNamespace(in namespaceInputs, td spiffeid.TrustDomain) (*namespacePolicy, []string) {
	b := nsBuilder{in: in, td: td}
	np := &namespacePolicy{authorizations: map[string][]*inboundv1.Authorization{}}
	if v, ok := in.annotations[names.AnnotationDefaultInboundPolicy]; ok {
		p, err := names.ParseDefaultInboundPolicy(v)
		if err != nil {
			b.warn("namespace %s: annotation %s is ignored: %v", in.name, names.AnnotationDefaultInboundPolicy, err)
		}
		np.defaultPolicy = p
	}
	np.servers = b.servers()
	byServer, namespaceWide, byRoute := b.authorizations()
	for _, s := range np.servers {
		authz := slices.Concat(byServer[s.name], namespaceWide)
		slices.SortFunc(authz, byName)
		np.authorizations[s.name] = authz
	}
	np.rateLimits, _ = b.rateLimits(np.servers)
	np.routes, _ = b.routes(np.servers, byRoute)
	return np, b.warnings
}

// nsBuilder holds what buildNamespace works with.
type nsBuilder struct {
	in       namespaceInputs
	td       spiffeid.TrustDomain
	warnings []string
	// meshTLS and networks cache the resolved authentications by name, so
	// that each is resolved (and warned about) once; nil values are
	// authentications without a usable entry.
	meshTLS  map[string]*inboundv1.Authentication
	networks map[string]*inboundv1.Authentication
}

func (b *nsBuilder) warn(format string, args ...any) {
	b.warnings = append(b.warnings, fmt.Sprintf(format, args...))
}

// servers returns the namespace's usable Servers, oldest first (then by
// name, so two created in the same second are ordered too).
func (b *nsBuilder) servers() []serverRule {
	objs := slices.Clone(b.in.servers)
	slices.SortFunc(objs, olderFirst)
	out := make([]serverRule, 0, len(objs))
	for _, o := range objs {
		sel, err := metav1.LabelSelectorAsSelector(&o.Spec.PodSelector)
		if err != nil {
			b.warn("Server %s/%s is ignored: spec.podSelector: %v", o.Namespace, o.Name, err)
			continue
		}
		proto, ok := protocols[o.Spec.ProxyProtocol]
		if !ok {
			// The CRD's enum refuses it; should one get through, the
			// proxy detects the protocol, as on any other port.
			b.warn("Server %s/%s: spec.proxyProtocol %q is unknown; the proxy detects the protocol", o.Namespace, o.Name, o.Spec.ProxyProtocol)
		}
		out = append(out, serverRule{name: o.Name, selector: sel, port: o.Spec.Port, protocol: proto})
	}
	return out
}

// protocols maps Server.spec.proxyProtocol to the API's; "" is the CRD's
// default, unknown.
var protocols = map[policyv1alpha1.ProxyProtocol]inboundv1.ProxyProtocol{
	"":                             inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN,
	policyv1alpha1.ProtocolUnknown: inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN,
	policyv1alpha1.ProtocolHTTP1:   inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP1,
	policyv1alpha1.ProtocolHTTP2:   inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP2,
	policyv1alpha1.ProtocolGRPC:    inboundv1.ProxyProtocol_PROXY_PROTOCOL_GRPC,
	policyv1alpha1.ProtocolOpaque:  inboundv1.ProxyProtocol_PROXY_PROTOCOL_OPAQUE,
	policyv1alpha1.ProtocolTLS:     inboundv1.ProxyProtocol_PROXY_PROTOCOL_TLS,
}

// olderFirst orders objects by creation time, then name.
func olderFirst[T metav1.Object](a, b T) int {
	ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
	if c := ta.Compare(tb.Time); c != 0 {
		return c
	}
	return strings.Compare(a.GetName(), b.GetName())
}

// authorizations resolves the namespace's AuthorizationPolicies into those
// of each Server (by name), those of every Server (the ones targeting the
// namespace) and those of each route (the ones targeting an HTTPRoute or
// GRPCRoute, by route, sorted by name). A policy that cannot be satisfied
// as written (a reference to a missing object, to one without a usable
// entry, or of an unknown kind) is left out, so that it denies rather
// than allows.
func (b *nsBuilder) authorizations() (byServer map[string][]*inboundv1.Authorization, namespaceWide []*inboundv1.Authorization, byRoute map[routeKey][]*inboundv1.Authorization) {
	byServer = map[string][]*inboundv1.Authorization{}
	byRoute = map[routeKey][]*inboundv1.Authorization{}
	for _, ap := range b.in.policies {
		ref := ap.Spec.TargetRef
		var toNamespace bool
		routeKind, toRoute := ref.TargetsRoute()
		switch {
		case ref.TargetsServer(), toRoute:
		case ref.TargetsNamespace() && ref.Name == ap.Namespace:
			toNamespace = true
		case ref.TargetsNamespace():
			b.warn("AuthorizationPolicy %s/%s is ignored: its targetRef is Namespace %s, and a policy may only target its own namespace", ap.Namespace, ap.Name, ref.Name)
			continue
		default:
			b.warn("AuthorizationPolicy %s/%s is ignored: its targetRef %s is neither a Server (group %s), a Namespace, nor an HTTPRoute or GRPCRoute (group %s)",
				ap.Namespace, ap.Name, groupKind(ref.Group, ref.Kind), policyv1alpha1.GroupName, gatewayv1.GroupName)
			continue
		}
		a, err := b.authorization(ap)
		if err != nil {
			b.warn("AuthorizationPolicy %s/%s is left out and allows nobody: %v", ap.Namespace, ap.Name, err)
			continue
		}
		switch {
		case toNamespace:
			namespaceWide = append(namespaceWide, a)
		case toRoute:
			key := routeKey{routeKind, ref.Name}
			byRoute[key] = append(byRoute[key], a)
		default:
			byServer[ref.Name] = append(byServer[ref.Name], a)
		}
	}
	for _, authz := range byRoute {
		slices.SortFunc(authz, byName)
	}
	return byServer, namespaceWide, byRoute
}

func byName(a, b *inboundv1.Authorization) int { return strings.Compare(a.GetName(), b.GetName()) }

func groupKind(group, kind string) string {
	if group == "" {
		return kind
	}
	return kind + "." + group
}

// authorization resolves ap's required authentications.
func (b *nsBuilder) authorization(ap *policyv1alpha1.AuthorizationPolicy) (*inboundv1.Authorization, error) {
	a := &inboundv1.Authorization{Name: ap.Name}
	for _, ref := range ap.Spec.RequiredAuthenticationRefs {
		var (
			authn *inboundv1.Authentication
			err   error
		)
		switch {
		case ref.IsMeshTLSAuthentication() && ref.Namespace == "":
			authn, err = b.meshTLSAuthentication(ref.Name)
		case ref.IsNetworkAuthentication() && ref.Namespace == "":
			authn, err = b.networkAuthentication(ref.Name)
		case ref.IsServiceAccount():
			authn, err = b.serviceAccount(cmp.Or(ref.Namespace, ap.Namespace), ref.Name)
		case ref.Namespace != "":
			err = fmt.Errorf("requiredAuthenticationRefs: %s %s has a namespace, which only a ServiceAccount may have", groupKind(ref.Group, ref.Kind), ref.Name)
		default:
			err = fmt.Errorf("requiredAuthenticationRefs: %s %s is not a MeshTLSAuthentication or NetworkAuthentication (group %s) or a ServiceAccount",
				groupKind(ref.Group, ref.Kind), ref.Name, policyv1alpha1.GroupName)
		}
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(a.Required, func(r *inboundv1.Authentication) bool { return r.GetName() == authn.GetName() }) {
			a.Required = append(a.Required, authn)
		}
	}
	slices.SortFunc(a.Required, func(x, y *inboundv1.Authentication) int { return strings.Compare(x.GetName(), y.GetName()) })
	return a, nil
}

func (b *nsBuilder) meshTLSAuthentication(name string) (*inboundv1.Authentication, error) {
	if b.meshTLS == nil {
		b.meshTLS = map[string]*inboundv1.Authentication{}
		for _, m := range b.in.meshTLS {
			b.meshTLS[m.Name] = b.resolveMeshTLS(m)
		}
	}
	a, ok := b.meshTLS[name]
	switch {
	case !ok:
		return nil, fmt.Errorf("MeshTLSAuthentication %s/%s does not exist", b.in.name, name)
	case a == nil:
		return nil, fmt.Errorf("MeshTLSAuthentication %s/%s has no valid identity", b.in.name, name)
	}
	return a, nil
}

// resolveMeshTLS returns m's identity patterns, or nil when none is valid.
// The CRD's rules should have refused every invalid entry already; one
// that got through is dropped, which only narrows who m matches.
func (b *nsBuilder) resolveMeshTLS(m *policyv1alpha1.MeshTLSAuthentication) *inboundv1.Authentication {
	var patterns []string
	for _, s := range m.Spec.Identities {
		p, err := identityPattern(s)
		if err != nil {
			b.warn("MeshTLSAuthentication %s/%s: identity %q is ignored: %v", m.Namespace, m.Name, s, err)
			continue
		}
		patterns = append(patterns, p)
	}
	for _, ref := range m.Spec.IdentityRefs {
		p, err := b.identityRef(ref, m.Namespace)
		if err != nil {
			b.warn("MeshTLSAuthentication %s/%s: identityRef %s %s is ignored: %v", m.Namespace, m.Name, groupKind(ref.Group, ref.Kind), ref.Name, err)
			continue
		}
		patterns = append(patterns, p)
	}
	if len(patterns) == 0 {
		return nil
	}
	slices.Sort(patterns)
	return &inboundv1.Authentication{
		Name: policyv1alpha1.KindMeshTLSAuthentication + "/" + m.Name,
		Kind: &inboundv1.Authentication_MeshTls{MeshTls: &inboundv1.Identities{Patterns: slices.Compact(patterns)}},
	}
}

// identityPattern validates a MeshTLSAuthentication identity: "*", a
// SPIFFE ID, or a SPIFFE ID followed by "/*". It returns it in go-spiffe's
// canonical form.
func identityPattern(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	prefix, wildcard := strings.CutSuffix(s, "/*")
	id, err := spiffeid.FromString(prefix)
	if err != nil {
		return "", err
	}
	if wildcard {
		return id.String() + "/*", nil
	}
	return id.String(), nil
}

// identityRef turns a ServiceAccount reference into the pattern of its
// identity, or of all the namespace's for the name "*".
func (b *nsBuilder) identityRef(ref policyv1alpha1.IdentityRef, defaultNamespace string) (string, error) {
	if !ref.IsServiceAccount() {
		return "", fmt.Errorf("not a ServiceAccount (group \"\")")
	}
	ns := cmp.Or(ref.Namespace, defaultNamespace)
	if ref.Name == "*" {
		id, err := serviceAccountID(b.td, ns, "")
		if err != nil {
			return "", err
		}
		return id.String() + "/*", nil
	}
	id, err := serviceAccountID(b.td, ns, ref.Name)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// serviceAccountID is the SPIFFE ID of ServiceAccount ns/name (DESIGN.md),
// or, for the name "", its prefix spiffe://<td>/ns/<ns>/sa.
func serviceAccountID(td spiffeid.TrustDomain, ns, name string) (spiffeid.ID, error) {
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return spiffeid.ID{}, fmt.Errorf("namespace %q: %s", ns, strings.Join(errs, "; "))
	}
	if name == "" {
		return spiffeid.FromSegments(td, "ns", ns, "sa")
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return spiffeid.ID{}, fmt.Errorf("ServiceAccount name %q: %s", name, strings.Join(errs, "; "))
	}
	return spiffeid.FromSegments(td, "ns", ns, "sa", name)
}

// serviceAccount is the authentication of a ServiceAccount named directly
// by an AuthorizationPolicy: mesh TLS with exactly its identity.
func (b *nsBuilder) serviceAccount(ns, name string) (*inboundv1.Authentication, error) {
	id, err := serviceAccountID(b.td, ns, name)
	if err != nil {
		return nil, fmt.Errorf("requiredAuthenticationRefs: ServiceAccount %s/%s: %w", ns, name, err)
	}
	return &inboundv1.Authentication{
		Name: "ServiceAccount/" + ns + "/" + name,
		Kind: &inboundv1.Authentication_MeshTls{MeshTls: &inboundv1.Identities{Patterns: []string{id.String()}}},
	}, nil
}

func (b *nsBuilder) networkAuthentication(name string) (*inboundv1.Authentication, error) {
	if b.networks == nil {
		b.networks = map[string]*inboundv1.Authentication{}
		for _, n := range b.in.networks {
			b.networks[n.Name] = b.resolveNetworks(n)
		}
	}
	a, ok := b.networks[name]
	switch {
	case !ok:
		return nil, fmt.Errorf("NetworkAuthentication %s/%s does not exist", b.in.name, name)
	case a == nil:
		return nil, fmt.Errorf("NetworkAuthentication %s/%s has no valid network", b.in.name, name)
	}
	return a, nil
}

// resolveNetworks returns n's networks, or nil when none is valid. A
// network with an invalid except is dropped whole: without the hole it
// would match more than it says.
func (b *nsBuilder) resolveNetworks(n *policyv1alpha1.NetworkAuthentication) *inboundv1.Authentication {
	var nets []*inboundv1.Network
	for _, w := range n.Spec.Networks {
		net, err := network(w)
		if err != nil {
			b.warn("NetworkAuthentication %s/%s: network %q is ignored: %v", n.Namespace, n.Name, w.CIDR, err)
			continue
		}
		nets = append(nets, net)
	}
	if len(nets) == 0 {
		return nil
	}
	slices.SortFunc(nets, compareNetworks)
	nets = slices.CompactFunc(nets, func(a, b *inboundv1.Network) bool { return compareNetworks(a, b) == 0 })
	return &inboundv1.Authentication{
		Name: policyv1alpha1.KindNetworkAuthentication + "/" + n.Name,
		Kind: &inboundv1.Authentication_Networks{Networks: &inboundv1.Networks{Networks: nets}},
	}
}

// network validates w and returns it with every prefix in canonical form
// (masked; a bare address as a /32 or /128).
func network(w policyv1alpha1.Network) (*inboundv1.Network, error) {
	cidr, err := parsePrefix(w.CIDR)
	if err != nil {
		return nil, err
	}
	out := &inboundv1.Network{Cidr: cidr.String()}
	for _, e := range w.Except {
		p, err := parsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("except: %w", err)
		}
		if p.Addr().Is4() != cidr.Addr().Is4() {
			return nil, fmt.Errorf("except %s is not of the address family of %s", p, cidr)
		}
		out.Except = append(out.Except, p.String())
	}
	slices.Sort(out.Except)
	out.Except = slices.Compact(out.Except)
	return out, nil
}

// parsePrefix reads a CIDR or a bare address, unmapping IPv4-mapped IPv6
// addresses so that a proxy compares like with like.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8", s)
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix shorter than /96", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func compareNetworks(a, b *inboundv1.Network) int {
	if c := strings.Compare(a.GetCidr(), b.GetCidr()); c != 0 {
		return c
	}
	return slices.Compare(a.GetExcept(), b.GetExcept())
}
