package route

import (
	"math/rand/v2"
	"strconv"
	"strings"
)

// PickBackend draws one of the rule's backends by weight: one
// math/rand/v2 draw against the cumulative weights (docs/traffic.md 3.2),
// no lock and no shared counter, so it is safe for concurrent use.
// Backends of weight 0 are never drawn. false: the rule has no backend
// with a weight.
func (r *Rule) PickBackend() (*Backend, bool) {
	var total uint64
	for i := range r.Backends {
		total += uint64(r.Backends[i].Weight)
	}
	if total == 0 {
		return nil, false
	}
	n := rand.Uint64N(total)
	for i := range r.Backends {
		w := uint64(r.Backends[i].Weight)
		if n < w {
			return &r.Backends[i], true
		}
		n -= w
	}
	panic("unreachable: a draw below the total weight falls on a backend")
}

// Apply edits a head as the filter says, in the order of the spec's
// HTTPHeaderFilter fields: Set, then Add, then Remove. The spec allows
// one action per header name, so the order shows only in filters it
// calls invalid. A nil modifier edits nothing.
func (m *HeaderModifier) Apply(e HeaderEditor) {
	if m == nil {
		return
	}
	for _, h := range m.Set {
		e.Set(h.Name, h.Value)
	}
	for _, h := range m.Add {
		e.Add(h.Name, h.Value)
	}
	for _, name := range m.Remove {
		e.Del(name)
	}
}

// Location is the Location of the redirect of a request that came with
// scheme ("http"), host (as the request carried it, with a port or not)
// and pathAndQuery, and matched the path prefix prefix (Match.Prefix).
// It follows the spec's HTTPRequestRedirectFilter:
//   - Scheme and Hostname replace the request's when set.
//   - Port set is the port. Unset with Scheme set, it is the scheme's
//     well-known port (80, 443); unset otherwise, the "listener port",
//     which for a mesh is the port the client called, as its Host says.
//   - The port is left out when it is the default of the Location's
//     scheme (http and 80, https and 443).
//   - Path replaces the whole path or the matched prefix (see
//     PathModifier); the query stays.
//
// A request without a host, and a redirect without a Hostname, gives a
// relative reference, the path alone (RFC 9110 10.2.2 allows one).
func (r *Redirect) Location(scheme, host, pathAndQuery, prefix string) string {
	hostname, port := splitHostPort(host)
	if r.Hostname != "" {
		hostname = r.Hostname
	}
	if r.Scheme != "" {
		scheme = r.Scheme
	}
	switch {
	case r.Port != 0:
		port = strconv.FormatUint(uint64(r.Port), 10)
	case r.Scheme != "":
		if p := defaultPort(r.Scheme); p != "" {
			port = p
		}
	}
	if port == defaultPort(scheme) {
		port = ""
	}
	path := r.Path.apply(pathAndQuery, prefix)
	if hostname == "" {
		return path
	}
	if port != "" {
		hostname += ":" + port
	}
	return scheme + "://" + hostname + path
}

// Apply returns the request's host and path-and-query as the rewrite
// leaves them: Hostname replaces the whole host, port included (the
// spec: "the value to be used to replace the Host header value"), and
// Path replaces the path or the matched prefix, keeping the query. A nil
// rewrite changes nothing.
func (w *Rewrite) Apply(host, pathAndQuery, prefix string) (newHost, newPathAndQuery string) {
	if w == nil {
		return host, pathAndQuery
	}
	if w.Hostname != "" {
		host = w.Hostname
	}
	return host, w.Path.apply(pathAndQuery, prefix)
}

// apply returns pathAndQuery with its path replaced; the query stays. A
// nil modifier returns pathAndQuery as it is.
//
// ReplacePrefixMatch replaces whole path elements, as PathPrefix matches
// them (httproute_types.go, the table under ReplacePrefixMatch): with
// the trailing "/" of the prefix and of the replacement ignored, the
// rest of the path after the prefix follows the replacement, and an
// empty result is "/". "/foo/bar" matched by "/foo" becomes "/xyz/bar"
// with "/xyz" or "/xyz/", and "/bar" with "" or "/"; "/foo/" becomes
// "/xyz/". A path the prefix does not hold on (the caller's mistake) is
// left as it is.
func (p *PathModifier) apply(pathAndQuery, prefix string) string {
	if p == nil {
		return pathAndQuery
	}
	path, query := pathAndQuery, ""
	if i := strings.IndexByte(pathAndQuery, '?'); i >= 0 {
		path, query = pathAndQuery[:i], pathAndQuery[i:]
	}
	if !p.IsPrefix {
		if p.Full == "" {
			return "/" + query
		}
		return p.Full + query
	}
	prefix = strings.TrimSuffix(prefix, "/")
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok || rest != "" && rest[0] != '/' {
		return pathAndQuery
	}
	out := strings.TrimSuffix(p.Prefix, "/") + rest
	if out == "" {
		out = "/"
	}
	return out + query
}

// splitHostPort splits a Host value, "name", "name:80", "[::1]:80",
// keeping the brackets of an IPv6 literal; port is "" when absent.
func splitHostPort(host string) (hostname, port string) {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.IndexByte(host[i+1:], ']') >= 0 {
		return host, ""
	}
	if host[0] != '[' && strings.IndexByte(host[:i], ':') >= 0 {
		return host, "" // an IPv6 address without brackets and port
	}
	return host[:i], host[i+1:]
}

// defaultPort is the well-known port of scheme, "" for other schemes.
func defaultPort(scheme string) string {
	switch scheme {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}
