// Package authz decides who may reach a meshed pod's ports. Compile turns
// the controller's PodPolicy (api/inbound/v1) into a Policy: an immutable
// matcher with every CIDR and identity pattern parsed once, so that
// deciding a connection is a map lookup and a walk over the port's
// authorizations, with no allocation and no lock.
//
// The semantics are those of inbound.proto: a port a Server selects is
// decided by its authorizations, every other port by the pod's default
// authorizations; an authorization allows a client that matches all of its
// required authentications (none: every client); a client no
// authorization allows is denied, unless the policy audits, which lets it
// through as a would-be denial. Kubelet probes are exempt whatever the
// policy (IsProbe).
//
// A Server may also carry a rate limit (an HTTPLocalRateLimitPolicy),
// compiled into a Limiter (ratelimit.go) that the proxy asks about each
// HTTP request authorization let through, and inbound routes (HTTPRoutes
// or GRPCRoutes attached to it), compiled into Routes (routes.go): an
// HTTP request on its port must match one, and is allowed by the route's
// authorizations or the port's.
//
// A Policy is safe for concurrent use: nothing in it changes after
// Compile but the counts of its Limiters, which guard themselves. A new
// policy replaces the old one as a whole (the proxy swaps a pointer),
// never in place.
package authz

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
)

// Protocol is what a Server says its port speaks (Server.spec.proxyProtocol).
type Protocol uint8

// The protocols of inbound.proto's ProxyProtocol.
const (
	Detect Protocol = iota // unknown: the proxy detects it
	HTTP1
	HTTP2
	GRPC
	Opaque // bytes forwarded as they come, no detection
	TLS    // the application's own TLS, passed through as opaque
)

func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "HTTP/1"
	case HTTP2:
		return "HTTP/2"
	case GRPC:
		return "gRPC"
	case Opaque:
		return "opaque"
	case TLS:
		return "TLS"
	}
	return "unknown"
}

// Forwarded reports whether the port's bytes go to the application as
// they come, without protocol detection (opaque and TLS).
func (p Protocol) Forwarded() bool { return p == Opaque || p == TLS }

// Client is who is connecting.
type Client struct {
	// Addr is the client's IP address, as the proxy accepted it.
	Addr netip.Addr
	// ID is the SPIFFE ID the client proved over mesh TLS; "" for a client
	// that did not (plain text, or the application's own TLS).
	ID string
}

// Decision is the outcome of Authorize.
type Decision struct {
	// Allowed: the client may go on, because an authorization matched or
	// because the policy audits.
	Allowed bool
	// Audit: no authorization matched and the client is let through only
	// because the policy audits; count and log it as a would-be denial.
	Audit bool
	// Server is the name of the Server that selects the port, or
	// "default:<policy>" for a port no Server selects.
	Server string
	// Authz is the name of the authorization that allowed the client; ""
	// when none did.
	Authz string
}

// Options are what Compile needs besides the message.
type Options struct {
	// TrustDomain is the mesh's, which the identity pattern "*" stands for
	// ("cluster.local"). Empty: "*" matches no identity.
	TrustDomain string
	// Previous is the policy the new one replaces, nil for none: a Server
	// whose rate limit is the same in both keeps its Limiter, with the
	// requests it has counted.
	Previous *Policy
	// MaxIdentities bounds the client identities a per-identity rate limit
	// tracks at once; past it the least recently seen is forgotten (and
	// gets a fresh burst when it comes back). Zero means
	// DefaultMaxIdentities (1024).
	MaxIdentities int
}

// Policy is a compiled PodPolicy. The zero value and a nil *Policy deny
// every client on every port.
type Policy struct {
	revision      string
	defaultPolicy string
	audit         bool
	ports         map[uint16]*server
	dflt          server
	probes        map[uint16][]probe
}

// server is what decides one port.
type server struct {
	name     string
	protocol Protocol
	authzs   []authorization
	limiter  *Limiter // nil: the Server's requests are not rate limited
	routes   *Routes  // nil: the Server has no inbound routes
}

type authorization struct {
	name     string
	required []authentication
}

// authentication is one condition on the client; the zero value matches
// no client (a malformed one must not widen an authorization).
type authentication struct {
	networks []network   // kind networks: the address is in one of them
	ids      *idPatterns // kind mesh_tls; nil for networks
}

type network struct {
	prefix netip.Prefix
	except []netip.Prefix
}

// idPatterns matches proven SPIFFE IDs. A few exact IDs (most
// authentications name one or two) are compared in turn, which is faster
// and far smaller than a map; more are looked up in a set.
type idPatterns struct {
	exact    []string
	exactSet map[string]struct{} // instead of exact past maxExactList
	prefixes []string            // each ends in "/"
}

// maxExactList is the most exact IDs compared in turn.
const maxExactList = 8

// Revision is the controller's name for this policy ("" for none).
func (p *Policy) Revision() string {
	if p == nil {
		return ""
	}
	return p.revision
}

// DefaultPolicy names the default inbound policy in force for the ports no
// Server selects ("all-unauthenticated", "deny", ...).
func (p *Policy) DefaultPolicy() string {
	if p == nil {
		return ""
	}
	return p.defaultPolicy
}

// Audit reports whether would-be denials are let through.
func (p *Policy) Audit() bool { return p != nil && p.audit }

// Servers returns how many ports a Server selects.
func (p *Policy) Servers() int {
	if p == nil {
		return 0
	}
	return len(p.ports)
}

// Protocol returns what port speaks according to its Server; Detect for a
// port no Server selects.
func (p *Policy) Protocol(port uint16) Protocol {
	if p == nil {
		return Detect
	}
	if s, ok := p.ports[port]; ok {
		return s.protocol
	}
	return Detect
}

// Server returns the name of what decides port: its Server's name, or
// "default:<policy>".
func (p *Policy) Server(port uint16) string { return p.serverFor(port).name }

func (p *Policy) serverFor(port uint16) *server {
	if p == nil {
		return &denyAll
	}
	if s, ok := p.ports[port]; ok {
		return s
	}
	return &p.dflt
}

var denyAll = server{name: "default:deny"}

// Authorize decides whether c may reach port. It does not allocate.
func (p *Policy) Authorize(port uint16, c Client) Decision {
	s := p.serverFor(port)
	c.Addr = c.Addr.Unmap()
	for i := range s.authzs {
		if s.authzs[i].matches(c) {
			return Decision{Allowed: true, Server: s.name, Authz: s.authzs[i].name}
		}
	}
	audit := p.Audit()
	return Decision{Allowed: audit, Audit: audit, Server: s.name}
}

func (a *authorization) matches(c Client) bool {
	for i := range a.required {
		if !a.required[i].matches(c) {
			return false
		}
	}
	return true
}

func (a *authentication) matches(c Client) bool {
	if a.ids != nil {
		return c.ID != "" && a.ids.matches(c.ID)
	}
	for i := range a.networks {
		if a.networks[i].contains(c.Addr) {
			return true
		}
	}
	return false
}

func (n *network) contains(addr netip.Addr) bool {
	if !n.prefix.Contains(addr) {
		return false
	}
	for _, e := range n.except {
		if e.Contains(addr) {
			return false
		}
	}
	return true
}

// index moves the exact IDs into a set when there are too many to
// compare in turn.
func (m *idPatterns) index() {
	if len(m.exact) > maxExactList {
		m.exactSet = make(map[string]struct{}, len(m.exact))
		for _, e := range m.exact {
			m.exactSet[e] = struct{}{}
		}
		m.exact = nil
	}
}

func (m *idPatterns) matches(id string) bool {
	for _, e := range m.exact {
		if e == id {
			return true
		}
	}
	if _, ok := m.exactSet[id]; ok {
		return true
	}
	for _, p := range m.prefixes {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// Compile turns a PodPolicy into a Policy. Entries it cannot use are
// dropped, each reported in dropped, and never widen what is allowed: a
// network with a bad CIDR (in cidr or in except) matches no client, as
// does an identity pattern it cannot parse or an authentication of no
// known kind. A nil message compiles to a policy that denies everyone.
func Compile(msg *inboundv1.PodPolicy, opts Options) (p *Policy, dropped []error) {
	c := compiler{anyPrefix: anyIDPrefix(opts.TrustDomain, &dropped), dropped: &dropped,
		prev: opts.Previous, maxIDs: opts.MaxIdentities, limiters: map[string]*Limiter{}}
	if c.maxIDs <= 0 {
		c.maxIDs = DefaultMaxIdentities
	}
	p = &Policy{
		revision:      msg.GetRevision(),
		defaultPolicy: msg.GetDefaultPolicy(),
		audit:         msg.GetAudit(),
		ports:         make(map[uint16]*server, len(msg.GetPorts())),
	}
	p.dflt = server{name: "default:" + p.defaultPolicy}
	if p.defaultPolicy == "" {
		p.dflt.name = "default"
	}
	p.dflt.authzs = c.authorizations(p.dflt.name, msg.GetDefaultAuthorizations())
	for _, pp := range msg.GetPorts() {
		port, ok := c.port(pp.GetPort(), "server "+pp.GetServer())
		if !ok {
			continue
		}
		if prev, dup := p.ports[port]; dup {
			c.drop("server %q: port %d is already selected by server %q", pp.GetServer(), port, prev.name)
			continue
		}
		s := &server{name: pp.GetServer(), protocol: c.protocol(pp)}
		s.authzs = c.authorizations("server "+s.name, pp.GetAuthorizations())
		s.limiter = c.limiter(s.name, pp.GetRateLimit())
		s.routes = c.routes(pp)
		p.ports[port] = s
	}
	p.probes = c.probes(msg.GetProbes())
	return p, dropped
}

// compiler collects what Compile drops.
type compiler struct {
	anyPrefix string // "spiffe://<trust domain>/", what "*" matches; "" for none
	dropped   *[]error
	prev      *Policy             // Options.Previous
	maxIDs    int                 // Options.MaxIdentities, defaulted
	limiters  map[string]*Limiter // the policy's, by Server
}

func (c *compiler) drop(format string, args ...any) {
	*c.dropped = append(*c.dropped, fmt.Errorf(format, args...))
}

func anyIDPrefix(td string, dropped *[]error) string {
	if td == "" {
		return ""
	}
	t, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		*dropped = append(*dropped, fmt.Errorf("trust domain %q: %w; the pattern \"*\" matches no identity", td, err))
		return ""
	}
	return t.IDString() + "/"
}

func (c *compiler) port(n uint32, where string) (uint16, bool) {
	if n == 0 || n > 65535 {
		c.drop("%s: port %d is not a TCP port", where, n)
		return 0, false
	}
	return uint16(n), true
}

func (c *compiler) protocol(pp *inboundv1.PortPolicy) Protocol {
	switch pp.GetProtocol() {
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_UNKNOWN:
		return Detect
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP1:
		return HTTP1
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_HTTP2:
		return HTTP2
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_GRPC:
		return GRPC
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_OPAQUE:
		return Opaque
	case inboundv1.ProxyProtocol_PROXY_PROTOCOL_TLS:
		return TLS
	}
	c.drop("server %q: unknown proxy protocol %d; detecting the protocol instead", pp.GetServer(), pp.GetProtocol())
	return Detect
}

func (c *compiler) authorizations(where string, in []*inboundv1.Authorization) []authorization {
	out := make([]authorization, 0, len(in))
	for _, a := range in {
		az := authorization{name: a.GetName(), required: make([]authentication, 0, len(a.GetRequired()))}
		for _, r := range a.GetRequired() {
			az.required = append(az.required, c.authentication(fmt.Sprintf("%s: authorization %q: %q", where, a.GetName(), r.GetName()), r))
		}
		out = append(out, az)
	}
	return out
}

func (c *compiler) authentication(where string, in *inboundv1.Authentication) authentication {
	switch k := in.GetKind().(type) {
	case *inboundv1.Authentication_Networks:
		var a authentication
		for _, n := range k.Networks.GetNetworks() {
			if net, ok := c.network(where, n); ok {
				a.networks = append(a.networks, net)
			}
		}
		return a
	case *inboundv1.Authentication_MeshTls:
		ids := &idPatterns{}
		for _, pat := range k.MeshTls.GetPatterns() {
			c.pattern(where, pat, ids)
		}
		ids.index()
		return authentication{ids: ids}
	}
	c.drop("%s: neither networks nor mesh_tls; it matches no client", where)
	return authentication{}
}

// network parses a Network; one with any bad prefix is dropped whole,
// since dropping only a bad except would widen it.
func (c *compiler) network(where string, n *inboundv1.Network) (network, bool) {
	p, err := parsePrefix(n.GetCidr())
	if err != nil {
		c.drop("%s: network %q: %w", where, n.GetCidr(), err)
		return network{}, false
	}
	out := network{prefix: p}
	for _, e := range n.GetExcept() {
		ep, err := parsePrefix(e)
		if err != nil {
			c.drop("%s: network %q: except %q: %w; the network matches no client", where, n.GetCidr(), e, err)
			return network{}, false
		}
		out.except = append(out.except, ep)
	}
	return out, true
}

// parsePrefix reads a CIDR or a bare address (a /32 or /128). Host bits
// are cleared: "10.1.2.3/8" is 10.0.0.0/8.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("an address with a zone is not a network")
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4In6() {
		// ::ffff:10.0.0.0/104 is 10.0.0.0/8: clients are matched unmapped.
		bits := p.Bits() - 96
		if bits < 0 {
			return netip.Prefix{}, fmt.Errorf("an IPv4-mapped prefix shorter than /96")
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), bits)
	}
	return p.Masked(), nil
}

// pattern adds an identity pattern to ids: "*", an exact SPIFFE ID, or an
// ID ending in "/*".
func (c *compiler) pattern(where, pat string, ids *idPatterns) {
	switch {
	case pat == "*":
		if c.anyPrefix == "" {
			c.drop("%s: pattern \"*\": no trust domain configured", where)
			return
		}
		ids.prefixes = append(ids.prefixes, c.anyPrefix)
	case strings.HasSuffix(pat, "/*"):
		base := strings.TrimSuffix(pat, "/*")
		if _, err := spiffeid.FromString(base); err != nil {
			c.drop("%s: pattern %q: %w", where, pat, err)
			return
		}
		ids.prefixes = append(ids.prefixes, base+"/")
	default:
		id, err := spiffeid.FromString(pat)
		if err != nil {
			c.drop("%s: pattern %q: %w", where, pat, err)
			return
		}
		ids.exact = append(ids.exact, id.String())
	}
}
