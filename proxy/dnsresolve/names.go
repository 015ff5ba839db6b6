package dnsresolve

import (
	"fmt"
	"strings"
)

// maxNameLen is the longest host name in text form without the trailing
// dot: 255 octets on the wire (RFC 1035 §2.3.4) less the two length octets
// that the first label and the root add.
const maxNameLen = 253

// normalizeName checks that name is a host name and returns it in lower
// case, which makes it usable as a cache key: DNS names compare without
// regard to ASCII case (RFC 4343 §3). A trailing dot is kept because it
// means the name is absolute and skips the search list.
func normalizeName(name string) (string, error) {
	host := strings.TrimSuffix(name, ".")
	if host == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(host) > maxNameLen {
		return "", fmt.Errorf("%w: %d characters, more than %d", ErrInvalidName, len(host), maxNameLen)
	}
	for label := range strings.SplitSeq(host, ".") {
		if err := checkLabel(label); err != nil {
			return "", err
		}
	}
	return strings.ToLower(name), nil
}

// checkLabel applies the host name rules of RFC 1123 §2.1 (letters, digits
// and inner hyphens, at most 63 octets per RFC 1035 §2.3.4), and also allows
// underscores, which service names such as _grpc._tcp use.
func checkLabel(label string) error {
	switch {
	case label == "":
		return fmt.Errorf("%w: empty label", ErrInvalidName)
	case len(label) > 63:
		return fmt.Errorf("%w: label %.10q... longer than 63 characters", ErrInvalidName, label)
	case label[0] == '-' || label[len(label)-1] == '-':
		return fmt.Errorf("%w: label %q starts or ends with a hyphen", ErrInvalidName, label)
	}
	for _, c := range []byte(label) {
		if !isHostByte(c) {
			return fmt.Errorf("%w: label %q has character %q", ErrInvalidName, label, c)
		}
	}
	return nil
}

func isHostByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// normalizeSearch lower-cases the search domains, strips their trailing
// dots and drops the ones that are not valid names, as the libc resolver
// ignores what it cannot use.
func normalizeSearch(search []string) []string {
	var out []string
	for _, d := range search {
		d = strings.TrimSuffix(d, ".")
		if d == "" {
			continue
		}
		if n, err := normalizeName(d); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// searchNames returns the fully qualified names to query for a normalized
// name, in order, following resolv.conf(5): an absolute name (trailing dot)
// is queried as is; a relative name with at least ndots dots is tried as is
// first and then with each search domain; one with fewer dots is tried with
// each search domain first and as is last. Candidates that would exceed the
// length limit are skipped.
func searchNames(name string, search []string, ndots int) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	asIs := name + "."
	names := make([]string, 0, len(search)+1)
	first := strings.Count(name, ".") >= ndots
	if first {
		names = append(names, asIs)
	}
	for _, d := range search {
		if n := name + "." + d; len(n) <= maxNameLen {
			names = append(names, n+".")
		}
	}
	if !first {
		names = append(names, asIs)
	}
	return names
}
