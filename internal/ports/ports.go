// Package ports parses and holds sets of TCP ports, as written in flags and
// in config.mesh.dev/* annotations: "25,587,3306" or ranges "4000-4010".
package ports

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Range is an inclusive range of ports.
type Range struct{ Lo, Hi uint16 }

// Set is an immutable set of ports. The zero value is the empty set and is
// safe for concurrent use, as is every Set returned by Parse.
type Set struct {
	ranges []Range // sorted, non-overlapping, non-adjacent
}

// Parse reads a comma-separated list of ports and inclusive ranges. Blank
// entries are ignored, so "" is the empty set. Port 0 is rejected: it is never
// the destination of a real connection.
func Parse(s string) (Set, error) {
	var rs []Range
	for _, field := range strings.Split(s, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(field, "-")
		l, err := parsePort(lo)
		if err != nil {
			return Set{}, fmt.Errorf("ports: %q: %w", field, err)
		}
		h := l
		if isRange {
			if h, err = parsePort(hi); err != nil {
				return Set{}, fmt.Errorf("ports: %q: %w", field, err)
			}
			if h < l {
				return Set{}, fmt.Errorf("ports: %q: range end is below its start", field)
			}
		}
		rs = append(rs, Range{l, h})
	}
	return New(rs...), nil
}

// MustParse is Parse for constants known to be valid; it panics otherwise.
func MustParse(s string) Set {
	set, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return set
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return uint16(n), nil
}

// New returns the set holding the given ranges, merged.
func New(rs ...Range) Set {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b Range) int { return int(a.Lo) - int(b.Lo) })
	var out []Range
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r.Lo) <= uint32(out[n-1].Hi)+1 {
			out[n-1].Hi = max(out[n-1].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return Set{ranges: out}
}

// Union returns the ports in either set.
func (s Set) Union(o Set) Set { return New(append(slices.Clone(s.ranges), o.ranges...)...) }

// Contains reports whether p is in the set.
func (s Set) Contains(p uint16) bool {
	_, found := slices.BinarySearchFunc(s.ranges, p, func(r Range, p uint16) int {
		switch {
		case r.Hi < p:
			return -1
		case r.Lo > p:
			return 1
		}
		return 0
	})
	return found
}

// Empty reports whether the set holds no port.
func (s Set) Empty() bool { return len(s.ranges) == 0 }

// Ranges returns the merged ranges in ascending order.
func (s Set) Ranges() []Range { return slices.Clone(s.ranges) }

// String formats the set in the syntax Parse reads.
func (s Set) String() string {
	parts := make([]string, 0, len(s.ranges))
	for _, r := range s.ranges {
		if r.Lo == r.Hi {
			parts = append(parts, strconv.Itoa(int(r.Lo)))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r.Lo, r.Hi))
		}
	}
	return strings.Join(parts, ",")
}

// MarshalText implements encoding.TextMarshaler, so a Set can be a flag value.
func (s Set) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with the syntax of Parse.
func (s *Set) UnmarshalText(b []byte) error {
	parsed, err := Parse(string(b))
	if err != nil {
		return err
	}
	*s = parsed
	return nil
}
