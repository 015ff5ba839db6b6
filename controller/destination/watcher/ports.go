package watcher

import (
	"fmt"
	"strconv"
	"strings"
)

// portRange is an inclusive range of ports.
type portRange struct{ lo, hi uint16 }

// portSet is a set of TCP ports as config.mesh.dev/opaque-ports writes them.
// The zero value is empty. It is immutable once parsed.
//
// The grammar is the one mesh-proxy and the injector read (proxy/ports); it
// is repeated here, small as it is, because DESIGN.md keeps controller/ from
// importing proxy/. Keep the two in step, or move proxy/ports under
// internal/ and share it.
type portSet []portRange

// parsePorts reads a comma-separated list of ports and inclusive ranges,
// "25,3306,4000-4010". Blank entries are ignored, so "" is the empty set.
// Port 0 is rejected as no connection goes to it.
func parsePorts(s string) (portSet, error) {
	var set portSet
	for field := range strings.SplitSeq(s, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		loText, hiText, isRange := strings.Cut(field, "-")
		lo, err := parsePort(loText)
		if err != nil {
			return nil, fmt.Errorf("ports: %q: %w", field, err)
		}
		hi := lo
		if isRange {
			if hi, err = parsePort(hiText); err != nil {
				return nil, fmt.Errorf("ports: %q: %w", field, err)
			}
			if hi < lo {
				return nil, fmt.Errorf("ports: %q: range end is below its start", field)
			}
		}
		set = append(set, portRange{lo, hi})
	}
	return set, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return uint16(n), nil
}

// contains reports whether p is in the set. Sets from annotations hold a
// handful of ranges, so a scan beats keeping them sorted.
func (s portSet) contains(p uint16) bool {
	for _, r := range s {
		if r.lo <= p && p <= r.hi {
			return true
		}
	}
	return false
}
