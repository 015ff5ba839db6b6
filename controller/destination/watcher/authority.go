package watcher

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// ErrInvalidAuthority is wrapped by ParseAuthority's errors: the text is not
// host:port. Proxies send what they saw on the wire, so this is untrusted
// input, not a bug.
var ErrInvalidAuthority = errors.New("invalid authority")

// maxAuthorityLen bounds what ParseAuthority reads: a DNS name (253) plus a
// port, with room for brackets. Anything longer is not a destination.
const maxAuthorityLen = 270

// Authority is a parsed destination request: a DNS name or an IP, and a port.
type Authority struct {
	// Host is the DNS name in lower case without a trailing dot; "" when IP
	// is valid.
	Host string
	// Absolute is true when Host was written with a trailing dot, which
	// tells a resolver, and Resolve, not to try the DNS search path.
	Absolute bool
	// IP is the address when the host is an IP. IPv4-mapped IPv6 addresses
	// are unmapped: a dual-stack socket reports IPv4 peers that way, while
	// Kubernetes records them as IPv4.
	IP netip.Addr
	// Port is never 0.
	Port uint16
}

// String formats a as host:port, the form ParseAuthority reads.
func (a Authority) String() string {
	host := a.Host
	if a.IP.IsValid() {
		host = a.IP.String()
	} else if a.Absolute {
		host += "."
	}
	return net.JoinHostPort(host, strconv.Itoa(int(a.Port)))
}

// ParseAuthority reads host:port, where host is a DNS name, an IPv4
// address, or an IPv6 address in brackets. The port is required: a proxy
// always knows the port of the connection it is about to make, and guessing
// 80 would look up the wrong Service port. It checks the syntax only; a
// well-formed name that cannot be a Kubernetes name is left to Resolve,
// which reports it as not found.
func ParseAuthority(s string) (Authority, error) {
	if s == "" {
		return Authority{}, fmt.Errorf("%w: empty", ErrInvalidAuthority)
	}
	if len(s) > maxAuthorityLen {
		return Authority{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidAuthority, maxAuthorityLen)
	}
	host, portText, err := net.SplitHostPort(s)
	if err != nil {
		return Authority{}, fmt.Errorf("%w: %q: want host:port: %w", ErrInvalidAuthority, s, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return Authority{}, fmt.Errorf("%w: %q: port %q is not a number from 1 to 65535", ErrInvalidAuthority, s, portText)
	}
	a := Authority{Port: uint16(port)}
	bracketed := strings.HasPrefix(s, "[")
	if ip, err := netip.ParseAddr(host); err == nil {
		switch {
		case ip.Zone() != "":
			return Authority{}, fmt.Errorf("%w: %q: an IPv6 zone never names a cluster address", ErrInvalidAuthority, s)
		case ip.Is6() && !bracketed:
			return Authority{}, fmt.Errorf("%w: %q: an IPv6 address must be in brackets", ErrInvalidAuthority, s)
		case ip.Is4() && bracketed:
			return Authority{}, fmt.Errorf("%w: %q: only IPv6 addresses go in brackets", ErrInvalidAuthority, s)
		}
		a.IP = ip.Unmap()
		return a, nil
	}
	if bracketed {
		return Authority{}, fmt.Errorf("%w: %q: only IPv6 addresses go in brackets", ErrInvalidAuthority, s)
	}
	name, absolute := strings.CutSuffix(host, ".")
	if err := checkDNSName(name); err != nil {
		return Authority{}, fmt.Errorf("%w: %q: %w", ErrInvalidAuthority, s, err)
	}
	a.Host, a.Absolute = strings.ToLower(name), absolute
	return a, nil
}

// checkDNSName accepts names of non-empty dot-separated labels of ASCII
// letters, digits, '-' and '_' (used by SRV-style names outside the
// cluster), at most 63 bytes a label and 253 in all (RFC 1035 section
// 2.3.4).
func checkDNSName(name string) error {
	if name == "" {
		return errors.New("empty host")
	}
	if len(name) > 253 {
		return errors.New("host longer than 253 bytes")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return errors.New("empty label in host")
		}
		if len(label) > 63 {
			return errors.New("host label longer than 63 bytes")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host has %q, which is not in a DNS name", c)
			}
		}
	}
	return nil
}

// ServiceName is what a name under the cluster domain names: a Service, or
// one pod of a headless Service.
type ServiceName struct {
	Namespace string
	Service   string
	// Hostname is the pod's hostname for <hostname>.<service>.<ns>.svc.<domain>;
	// "" for the Service itself.
	Hostname string
}

// parseServiceName reads a fully qualified name (lower case, no trailing
// dot) of the forms Kubernetes DNS serves for Services: <service>.<ns>.svc.<domain>
// and <hostname>.<service>.<ns>.svc.<domain>. ok is false for any other
// name, including names of the right shape with labels Kubernetes would not
// accept as a Service, namespace or hostname.
func parseServiceName(fqdn, clusterDomain string) (ServiceName, bool) {
	prefix, ok := strings.CutSuffix(fqdn, ".svc."+clusterDomain)
	if !ok {
		return ServiceName{}, false
	}
	labels := strings.Split(prefix, ".")
	var n ServiceName
	switch len(labels) {
	case 2:
		n = ServiceName{Service: labels[0], Namespace: labels[1]}
	case 3:
		n = ServiceName{Hostname: labels[0], Service: labels[1], Namespace: labels[2]}
		if len(validation.IsDNS1123Label(n.Hostname)) > 0 {
			return ServiceName{}, false
		}
	default:
		return ServiceName{}, false
	}
	if len(validation.IsDNS1035Label(n.Service)) > 0 || len(validation.IsDNS1123Label(n.Namespace)) > 0 {
		return ServiceName{}, false
	}
	return n, true
}

// searchNames returns the fully qualified names a pod's resolver would try
// for host, in order: the search path Kubernetes writes into a pod's
// resolv.conf (<ns>.svc.<domain>, svc.<domain>, <domain>), then host as it
// is. An absolute host is tried as it is only. Kubernetes sets ndots:5, so
// every name a Service can have (at most 4 dots before the domain's) goes
// through the search path first, as here.
func searchNames(host string, absolute bool, contextNamespace, clusterDomain string) []string {
	if absolute {
		return []string{host}
	}
	names := make([]string, 0, 4)
	if contextNamespace != "" {
		names = append(names, host+"."+contextNamespace+".svc."+clusterDomain)
	}
	return append(names, host+".svc."+clusterDomain, host+"."+clusterDomain, host)
}
