// Package clusternet is the one grammar and default of the cluster's
// networks, shared by mesh-proxy's --cluster-networks, the injector that
// sets it and the install and controller flags that feed the injector. It
// imports only the standard library, so the proxy takes nothing of
// Kubernetes with it.
package clusternet

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Default are the private ranges clusters take their pod, service and node
// addresses from: RFC 1918 and the IPv6 unique local addresses (RFC 4193).
func Default() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("fd00::/8"),
	}
}

// ErrInvalid is wrapped by every error of Parse.
var ErrInvalid = errors.New("invalid cluster networks")

// Parse reads comma-separated CIDRs, like "10.0.0.0/8,fd00::/8": spaces
// around a CIDR are ignored, duplicates dropped, and host bits are an error
// (10.0.0.1/8 is likely a typo). An empty string is an empty list; callers
// that need one CIDR at least say so themselves.
func Parse(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %s is not a CIDR such as 10.0.0.0/8 or fd00::/8", ErrInvalid, quote(f))
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%w: %s has host bits set; did you mean %s?", ErrInvalid, quote(f), p.Masked())
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Format is the inverse of Parse: the prefixes joined by commas.
func Format(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// quote quotes an untrusted value for an error, cut at 64 characters.
func quote(s string) string {
	if r := []rune(s); len(r) > 64 {
		return strconv.Quote(string(r[:64])) + "..."
	}
	return strconv.Quote(s)
}
