package main

import (
	"fmt"
	"strconv"
	"strings"
)

// fromWrk fills r from the output of wrk --latency: requests per second,
// the requests answered, p50, p99 and max latency, and errors (socket
// errors and non-2xx or 3xx answers). wrk prints no p99.9.
func (r *row) fromWrk(out string) error {
	r.p999, r.lagP99 = -1, -1
	seen := map[string]bool{}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var err error
		switch {
		case f[0] == "Latency" && len(f) >= 4: // Thread Stats: Avg Stdev Max +/- Stdev
			r.max, err = wrkMillis(f[3])
			seen["max"] = true
		case f[0] == "50%" && len(f) == 2:
			r.p50, err = wrkMillis(f[1])
			seen["p50"] = true
		case f[0] == "99%" && len(f) == 2:
			r.p99, err = wrkMillis(f[1])
			seen["p99"] = true
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.requests, err = strconv.Atoi(f[0])
			seen["requests"] = true
		case f[0] == "Requests/sec:" && len(f) == 2:
			r.rps, err = strconv.ParseFloat(f[1], 64)
			seen["rps"] = true
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			var n int
			n, err = strconv.Atoi(f[len(f)-1])
			r.errors += n
		case f[0] == "Socket" && len(f) == 10: // Socket errors: connect 0, read 0, write 0, timeout 0
			for _, i := range []int{3, 5, 7, 9} {
				n, perr := strconv.Atoi(strings.TrimSuffix(f[i], ","))
				if perr != nil {
					err = perr
					break
				}
				r.errors += n
			}
		}
		if err != nil {
			return fmt.Errorf("wrk output %q: %w", strings.TrimSpace(line), err)
		}
	}
	for _, k := range []string{"max", "p50", "p99", "requests", "rps"} {
		if !seen[k] {
			return fmt.Errorf("wrk output without its %s", k)
		}
	}
	return nil
}

// wrkMillis reads a latency as wrk prints it ("298.00us", "1.71ms",
// "1.02s", "2.00m") in milliseconds.
func wrkMillis(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1e3}, {"m", 60e3}, {"h", 3600e3}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return f * u.ms, nil
		}
	}
	return 0, fmt.Errorf("latency %q has no unit", s)
}
