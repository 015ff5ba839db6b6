package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// loadName is a client load.
type loadName string

const (
	http1 loadName = "http1" // wrk, HTTP/1.1 keep-alive
	h2c   loadName = "h2c"   // h2load, HTTP/2 with prior knowledge
)

// The loads' concurrency, as bench/proxy.sh's hop rows.
const (
	wrkConns  = 32
	h2Conns   = 16
	h2Streams = 10
)

// inflight is the most requests load has outstanding: the proxy may count
// up to that many more than the client saw answered when it stopped.
func inflight(l loadName) int {
	if l == h2c {
		return h2Conns * h2Streams
	}
	return wrkConns
}

// port is the Service port load uses.
func (l loadName) port() int {
	if l == h2c {
		return h2Port
	}
	return h1Port
}

// clientArgs is the command of load against t for d: the same request,
// its path and header, whatever t's table.
func clientArgs(load loadName, t target, d time.Duration) []string {
	url := "http://" + t.authority(load.port()) + requestPath
	header := headerName + ": " + headerValue
	secs := strconv.Itoa(int(d.Seconds()))
	if load == h2c {
		return []string{"h2load", "-c" + strconv.Itoa(h2Conns), "-m" + strconv.Itoa(h2Streams), "-D" + secs, "-H", header, url}
	}
	return []string{"wrk", "-t1", "-c" + strconv.Itoa(wrkConns), "-d" + secs + "s", "-H", header, url}
}

// clientResult is what a client reports of a row.
type clientResult struct {
	// requests were answered, whatever their status; rps is their rate.
	requests int
	rps      float64
	// errors are answers other than 2xx, and requests that failed.
	errors int
}

// parseWrk reads wrk's summary: "N requests in ...", "Requests/sec: R",
// and, when there were any, "Non-2xx or 3xx responses: N" and "Socket
// errors: connect A, read B, write C, timeout D".
func parseWrk(out string) (clientResult, error) {
	var r clientResult
	seen := map[string]bool{}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		var err error
		switch {
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.requests, err = strconv.Atoi(f[0])
			seen["requests"] = true
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.rps, err = strconv.ParseFloat(f[1], 64)
			seen["rps"] = true
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			var n int
			n, err = strconv.Atoi(f[len(f)-1])
			r.errors += n
		case len(f) == 10 && f[0] == "Socket" && f[1] == "errors:":
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
			return clientResult{}, fmt.Errorf("wrk output %q: %w", strings.TrimSpace(line), err)
		}
	}
	for _, k := range []string{"requests", "rps"} {
		if !seen[k] {
			return clientResult{}, fmt.Errorf("wrk output without its %s:\n%s", k, out)
		}
	}
	return r, nil
}

// parseH2load reads h2load's summary:
//
//	finished in 1.00s, 19027.00 req/s, 1.23MB/s
//	requests: 19027 total, 19031 started, 19027 done, 19027 succeeded, 0 failed, 0 errored, 0 timeout
//	status codes: 19027 2xx, 0 3xx, 0 4xx, 0 5xx
//
// requests is the done ones. errors is the larger of h2load's failed
// requests (answers of 400 and above, and streams that broke) and the
// answers other than 2xx: a 421 is in both, so their sum would count it
// twice, and the difference of done and 2xx does not hold either, as the
// status of a response that ends after the measured time is counted
// without the request being done. The larger is exact when every error
// is of one kind, and above 0 whenever there is any.
func parseH2load(out string) (clientResult, error) {
	var r clientResult
	var failed, not2xx int
	seen := map[string]bool{}
	for line := range strings.Lines(out) {
		f := strings.Fields(strings.ReplaceAll(line, ",", ""))
		var err error
		switch {
		case len(f) >= 4 && f[0] == "finished" && f[1] == "in":
			r.rps, err = strconv.ParseFloat(f[3], 64)
			seen["finished"] = true
		case len(f) >= 1 && f[0] == "requests:":
			var counts map[string]int
			if counts, err = countsOf(f[1:]); err == nil {
				r.requests, failed = counts["done"], counts["failed"]
				seen["requests"] = true
			}
		case len(f) >= 2 && f[0] == "status" && f[1] == "codes:":
			var counts map[string]int
			if counts, err = countsOf(f[2:]); err == nil {
				not2xx = counts["1xx"] + counts["3xx"] + counts["4xx"] + counts["5xx"]
				seen["status codes"] = true
			}
		}
		if err != nil {
			return clientResult{}, fmt.Errorf("h2load output %q: %w", strings.TrimSpace(line), err)
		}
	}
	for _, k := range []string{"finished", "requests", "status codes"} {
		if !seen[k] {
			return clientResult{}, fmt.Errorf("h2load output without its %s line:\n%s", k, out)
		}
	}
	r.errors = max(failed, not2xx)
	return r, nil
}

// countsOf reads "N name N name ..." into a map by name.
func countsOf(f []string) (map[string]int, error) {
	if len(f)%2 != 0 {
		return nil, fmt.Errorf("want pairs of a count and a name, got %q", strings.Join(f, " "))
	}
	out := map[string]int{}
	for i := 0; i < len(f); i += 2 {
		n, err := strconv.Atoi(f[i])
		if err != nil {
			return nil, err
		}
		out[f[i+1]] = n
	}
	return out, nil
}
