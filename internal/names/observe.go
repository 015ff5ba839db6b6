package names

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
)

// The observability annotations of DESIGN.md ("Day two"), on a namespace
// or a pod (the pod's wins), read by the injector, which gives the proxy
// what they say in its environment. `mesh install --tracing-collector`
// and --tracing-sample-rate set the install-wide defaults under them.
const (
	// AnnotationAccessLog turns on the proxy's access log on its stderr, one
	// line per HTTP request and per TCP connection, in the format it names:
	// AccessLogApache or AccessLogJSON. Absent means off.
	AnnotationAccessLog = ConfigPrefix + "access-log"
	// AnnotationTracingCollector is the host:port of the OTLP/gRPC
	// collector the proxy exports its spans to.
	AnnotationTracingCollector = ConfigPrefix + "tracing-collector"
	// AnnotationTracingSampleRate is the share, 0 to 1, of the requests
	// arriving without a sampling decision that the proxy traces.
	AnnotationTracingSampleRate = ConfigPrefix + "tracing-sample-rate"

	AccessLogApache = "apache"
	AccessLogJSON   = "json"
)

// AccessLogFormats are the values AnnotationAccessLog takes.
var AccessLogFormats = []string{AccessLogApache, AccessLogJSON}

// Errors wrapped by the parsers below, so callers can tell them apart
// from one another with errors.Is.
var (
	ErrAccessLog         = errors.New("unknown access log format")
	ErrTracingCollector  = errors.New("invalid tracing collector address")
	ErrTracingSampleRate = errors.New("invalid tracing sample rate")
)

// ParseAccessLog returns the access log format s names, exactly one of
// AccessLogFormats after trimming spaces and lower-casing.
func ParseAccessLog(s string) (string, error) {
	switch v := strings.ToLower(strings.TrimSpace(s)); v {
	case AccessLogApache, AccessLogJSON:
		return v, nil
	}
	return "", fmt.Errorf("%w %s: want %s or %s", ErrAccessLog, quote(s), AccessLogApache, AccessLogJSON)
}

// ParseTracingCollector checks a collector address: host:port with a
// non-empty host (a DNS name or an IP address) and a port from 1 to
// 65535, which is what an OTLP/gRPC exporter dials. It returns the
// address trimmed of spaces.
func ParseTracingCollector(s string) (string, error) {
	v := strings.TrimSpace(s)
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", fmt.Errorf("%w %s: want host:port, like jaeger.mesh-system.svc.cluster.local:4317", ErrTracingCollector, quote(s))
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%w %s: port %s is not a number from 1 to 65535", ErrTracingCollector, quote(s), quote(port))
	}
	if host == "" || strings.ContainsAny(host, " \t/\\@?#") {
		return "", fmt.Errorf("%w %s: want a DNS name or IP address before the port", ErrTracingCollector, quote(s))
	}
	return v, nil
}

// ParseTracingSampleRate returns the rate s gives, a number from 0 (trace
// only requests whose parent was sampled) to 1 (every request).
func ParseTracingSampleRate(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
		return 0, fmt.Errorf("%w %s: want a number from 0 to 1, like 0.01", ErrTracingSampleRate, quote(s))
	}
	return f, nil
}
