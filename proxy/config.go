// Package proxy assembles the sidecar data plane: the inbound and outbound
// listeners, protocol detection, HTTP and opaque forwarding, metrics and
// the admin server.
package proxy

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mesh-dev/mesh/identity/client"
	"github.com/mesh-dev/mesh/internal/clusternet"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/ports"
	"github.com/mesh-dev/mesh/proxy/accesslog"
	"github.com/mesh-dev/mesh/proxy/detect"
)

// Config is everything mesh-proxy's flags set. DefaultConfig gives the
// zero-config values of DESIGN.md.
type Config struct {
	InboundAddr  string // traffic redirected to the pod; default 0.0.0.0:4143
	OutboundAddr string // traffic the pod sends; default 127.0.0.1:4140
	AdminAddr    string // metrics, probes, shutdown; default 0.0.0.0:4191
	// AdminProfiling serves the Go runtime's profiles on the admin port
	// under /debug/pprof/, to clients inside the pod only (admin.Handler).
	// False, the default, serves none.
	AdminProfiling bool

	// DetectTimeout is how long the proxy waits for a client's first bytes
	// before it treats the connection as opaque TCP and remembers the
	// destination as server-speaks-first.
	DetectTimeout time.Duration
	// OpaquePorts are forwarded as TCP without detection, on both sides.
	OpaquePorts ports.Set
	// ConnectTimeout bounds dialing a target (502/504 or a reset past it).
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for HTTP response headers; 0 is none.
	ResponseTimeout time.Duration
	// HeaderReadTimeout bounds how long an HTTP/1 client may take to send
	// its request headers (slow-loris protection).
	HeaderReadTimeout time.Duration
	// MaxHeaderBytes bounds request headers; larger ones get 431.
	MaxHeaderBytes int
	// MaxConcurrentStreams bounds concurrent HTTP/2 streams per client
	// connection; more are refused with RST_STREAM.
	MaxConcurrentStreams uint32
	// ShutdownGrace is how long in-flight requests and connections may
	// take to finish after SIGTERM or /shutdown.
	ShutdownGrace time.Duration
	// MaxConnections is the most client connections each side (inbound,
	// outbound) holds at once; past it, new ones are reset and counted in
	// mesh_proxy_connections_refused_total, so a flood of clients cannot
	// take the proxy's memory. Zero means unlimited.
	MaxConnections int
	// OpaqueIdleTimeout closes an opaque TCP stream once no byte moved in
	// either direction for this long. Zero means never.
	OpaqueIdleTimeout time.Duration
	// HTTP1BodyIdleTimeout ends an HTTP/1 request whose client or target
	// connection moves no byte for this long (a stalled body). Zero means
	// none.
	HTTP1BodyIdleTimeout time.Duration
	// MaxConnsPerHost bounds the inbound side's HTTP/1 connections to the
	// application, per address; requests past it wait. Zero means no limit.
	MaxConnsPerHost int

	// AccessLog writes a line per HTTP request and per opaque TCP
	// connection to stderr, in this format (config.mesh.dev/access-log).
	// Off, the default, writes none.
	AccessLog accesslog.Format
	// AccessLogOut is where the access log goes; nil means stderr. No
	// flag sets it: tests read the log from it.
	AccessLogOut io.Writer
	// TracingCollector is the host:port of an OTLP/gRPC collector the
	// proxy exports request spans to (config.mesh.dev/tracing-collector);
	// empty, the default, traces nothing and leaves trace headers as they
	// came.
	TracingCollector string
	// TracingSampleRate is the share, 0 to 1, of the requests arriving
	// without a sampling decision that are sampled; requests with one
	// follow it. Default 1: tracing is off until a collector is set, and
	// whoever sets one wants to see traces (Istio's 1% default is the
	// usual "where are my traces"); lower it where traffic is heavy.
	TracingSampleRate float64

	// DestinationAddr is the controller's gRPC address (host:port) the
	// proxy asks for the endpoints behind each outbound destination. Empty
	// means no controller: every connection goes to its original
	// destination (DESIGN.md's zero config).
	DestinationAddr string
	// Namespace is the pod's namespace, against which the controller
	// expands short service names.
	Namespace string
	// PodName is the pod's name. With DestinationAddr, the proxy watches
	// its pod's inbound policy from the controller and enforces it; empty
	// means no inbound policy: every client is allowed.
	PodName string
	// PolicyGrace is how long after start inbound connections wait for a
	// first policy from the controller; past it, a proxy that never got
	// one refuses them.
	PolicyGrace time.Duration
	// ClusterNetworks are the cluster's networks: with a controller, a
	// destination inside them goes out in plain text to its original
	// address only when the controller answered that it is not meshed;
	// when the controller cannot answer, the request fails (503, reset)
	// rather than silently losing mesh TLS. Destinations outside them pass
	// through as they are.
	ClusterNetworks []netip.Prefix

	// IdentityAddr is the controller's identity service (host:port).
	// Empty means no identity: no certificate, plain text between pods.
	IdentityAddr string
	// IdentityServerID is the SPIFFE ID the identity service must prove.
	IdentityServerID string
	// DestinationServerID is the SPIFFE ID the destination and policy
	// API at DestinationAddr must prove when the proxy has an identity;
	// "" means IdentityServerID, as one controller serves both.
	DestinationServerID string
	// TrustDomain of workload identities.
	TrustDomain string
	// TrustAnchors is the PEM bundle the identity service is checked
	// against; newer bundles then arrive over the service itself.
	TrustAnchors string
	// ServiceAccount is the pod's; with Namespace it names the proxy's
	// SPIFFE ID.
	ServiceAccount string
	// IdentityTokenFile is the projected ServiceAccount token for the
	// identity service's audience, re-read on every request.
	IdentityTokenFile string
	// WorkloadAPISocket is where the SPIFFE Workload API is served to the
	// pod's containers; empty means not served.
	WorkloadAPISocket string

	// TapAddr is where the tap service (`mesh viz tap`) listens, over
	// mutual TLS; default :4190. It is served only when the proxy has an
	// identity and TapClientID is set.
	TapAddr string
	// TapClientID is the only SPIFFE ID allowed to tap the proxy's
	// traffic: mesh-viz's,
	// spiffe://<trust-domain>/ns/<control-plane-namespace>/sa/mesh-viz.
	// Empty means no tap listener.
	TapClientID string

	// MaxProcs is GOMAXPROCS, the most threads running Go code at once.
	// Zero means automatic: the CPU limit of the proxy's cgroup rounded up,
	// and 1 when it has none (see sizeRuntime). Only Run applies it.
	MaxProcs int

	LogLevel  slog.Level
	LogFormat string // "json" or "text"
}

// hostPort is host:port, for the default listen addresses.
func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// DefaultConfig returns the configuration mesh-proxy runs with no flags:
// the ports of internal/names.
func DefaultConfig() Config {
	return Config{
		InboundAddr:    hostPort("0.0.0.0", names.InboundPort),
		OutboundAddr:   hostPort("127.0.0.1", names.OutboundPort),
		AdminAddr:      hostPort("0.0.0.0", names.AdminPort),
		DetectTimeout:  500 * time.Millisecond,
		OpaquePorts:    detect.DefaultOpaquePorts,
		ConnectTimeout: time.Second,
		ShutdownGrace:  25 * time.Second,
		PolicyGrace:    10 * time.Second,
		MaxConnections: 4096,

		OpaqueIdleTimeout:    time.Hour,
		HTTP1BodyIdleTimeout: 5 * time.Minute,
		MaxConnsPerHost:      10000,

		ClusterNetworks: clusternet.Default(),

		HeaderReadTimeout:    10 * time.Second,
		MaxHeaderBytes:       64 << 10,
		MaxConcurrentStreams: 1000,
		TrustDomain:          "cluster.local",
		IdentityTokenFile:    client.DefaultTokenPath,
		TapAddr:              hostPort("", names.TapPort),
		LogLevel:             slog.LevelInfo,
		LogFormat:            "json",
		TracingSampleRate:    1,
	}
}

// AddFlags binds every field to a flag on fs, with c's values as defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.InboundAddr, "inbound-addr", c.InboundAddr, "address of the inbound listener")
	fs.StringVar(&c.OutboundAddr, "outbound-addr", c.OutboundAddr, "address of the outbound listener")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "address of the admin server (/metrics, /ready, /live, /shutdown)")
	fs.BoolVar(&c.AdminProfiling, "admin-profiling", c.AdminProfiling, "serve the Go runtime's profiles (net/http/pprof) under /debug/pprof/ on the admin port, to loopback clients only")
	fs.DurationVar(&c.DetectTimeout, "detect-timeout", c.DetectTimeout, "wait this long for a client's first bytes before forwarding as opaque TCP")
	fs.TextVar(&c.OpaquePorts, "opaque-ports", c.OpaquePorts, "ports forwarded as opaque TCP without protocol detection (e.g. 25,3306,4000-4010)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", c.ConnectTimeout, "timeout for connecting to a target")
	fs.DurationVar(&c.ResponseTimeout, "response-timeout", c.ResponseTimeout, "timeout for a target's HTTP response headers (0: none)")
	fs.DurationVar(&c.HeaderReadTimeout, "header-read-timeout", c.HeaderReadTimeout, "time an HTTP/1 client may take to send its request headers")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", c.MaxHeaderBytes, "largest request header block accepted (431 past it)")
	fs.Uint32Var(&c.MaxConcurrentStreams, "max-concurrent-streams", c.MaxConcurrentStreams, "concurrent HTTP/2 streams allowed per client connection")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "time in-flight work may take to finish on shutdown")
	fs.DurationVar(&c.OpaqueIdleTimeout, "opaque-idle-timeout", c.OpaqueIdleTimeout, "close an opaque TCP stream with no byte in either direction for this long (0: never)")
	fs.DurationVar(&c.HTTP1BodyIdleTimeout, "http1-body-idle-timeout", c.HTTP1BodyIdleTimeout, "end an HTTP/1 request whose request or response body makes no progress for this long (0: none)")
	fs.IntVar(&c.MaxConnsPerHost, "max-conns-per-host", c.MaxConnsPerHost, "most HTTP/1 connections from the inbound side to one application address; more requests wait (0: unlimited)")
	fs.IntVar(&c.MaxConnections, "max-connections", c.MaxConnections, "most connections each side (inbound, outbound) holds at once; past it new ones are reset (0: unlimited)")
	fs.Var((*formatValue)(&c.AccessLog), "access-log", "write a line per HTTP request and TCP connection to stderr: apache or json (empty: off)")
	fs.StringVar(&c.TracingCollector, "tracing-collector", c.TracingCollector, "host:port of an OTLP/gRPC trace collector to export request spans to (empty: no tracing)")
	fs.Float64Var(&c.TracingSampleRate, "tracing-sample-rate", c.TracingSampleRate, "share (0 to 1) of requests arriving without a sampling decision that are traced; others follow their caller's decision")
	fs.StringVar(&c.DestinationAddr, "destination-addr", c.DestinationAddr, "controller's gRPC address for endpoint discovery and balancing (empty: forward to original destinations)")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "the pod's namespace, for the controller to expand short names")
	fs.StringVar(&c.PodName, "pod-name", c.PodName, "the pod's name, to watch its inbound policy (empty: no inbound policy, every client allowed)")
	fs.DurationVar(&c.PolicyGrace, "policy-grace", c.PolicyGrace, "how long inbound connections wait for a first policy from the controller before they are refused")
	fs.Var(newPrefixesValue(&c.ClusterNetworks), "cluster-networks", "the cluster's networks, comma-separated CIDRs: inside them, traffic never falls back to plain text when the controller cannot answer")
	fs.StringVar(&c.IdentityAddr, "identity-addr", c.IdentityAddr, "controller's identity service (host:port); empty: no certificate, plain text")
	fs.StringVar(&c.IdentityServerID, "identity-server-id", c.IdentityServerID, "SPIFFE ID the identity service must present")
	fs.StringVar(&c.DestinationServerID, "destination-server-id", c.DestinationServerID, "SPIFFE ID the destination and policy API must present over mesh TLS when the proxy has an identity (empty: identity-server-id)")
	fs.StringVar(&c.TrustDomain, "trust-domain", c.TrustDomain, "SPIFFE trust domain of workload identities")
	fs.StringVar(&c.TrustAnchors, "trust-anchors", c.TrustAnchors, "PEM trust anchors to check the identity service with")
	fs.StringVar(&c.ServiceAccount, "service-account", c.ServiceAccount, "the pod's ServiceAccount, part of the proxy's SPIFFE ID")
	fs.StringVar(&c.IdentityTokenFile, "identity-token-file", c.IdentityTokenFile, "projected ServiceAccount token for the identity service")
	fs.StringVar(&c.WorkloadAPISocket, "workload-api-socket", c.WorkloadAPISocket, "Unix socket to serve the SPIFFE Workload API on (empty: not served)")
	fs.StringVar(&c.TapAddr, "tap-addr", c.TapAddr, "address of the tap server for `mesh viz tap` (mutual TLS; needs an identity and tap-client-id)")
	fs.StringVar(&c.TapClientID, "tap-client-id", c.TapClientID, "the only SPIFFE ID allowed to tap (mesh-viz's); empty: no tap server")
	fs.IntVar(&c.MaxProcs, "max-procs", c.MaxProcs, "GOMAXPROCS: threads running Go code at once (0: the container's CPU limit rounded up, 1 without a limit)")
	fs.TextVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: json or text")
}

// Validate reports configuration a proxy cannot run with.
func (c Config) Validate() error {
	if c.DetectTimeout <= 0 {
		return fmt.Errorf("detect-timeout must be positive, got %s", c.DetectTimeout)
	}
	if c.ConnectTimeout <= 0 {
		return fmt.Errorf("connect-timeout must be positive, got %s", c.ConnectTimeout)
	}
	if c.HeaderReadTimeout <= 0 || c.MaxHeaderBytes <= 0 || c.MaxConcurrentStreams == 0 {
		return fmt.Errorf("header-read-timeout, max-header-bytes and max-concurrent-streams must be positive")
	}
	if c.ResponseTimeout < 0 || c.ShutdownGrace < 0 {
		return fmt.Errorf("response-timeout and shutdown-grace must not be negative")
	}
	if c.DestinationAddr != "" {
		if _, _, err := net.SplitHostPort(c.DestinationAddr); err != nil {
			return fmt.Errorf("destination-addr %q: want host:port: %w", c.DestinationAddr, err)
		}
	}
	if c.PolicyGrace < 0 {
		return fmt.Errorf("policy-grace must not be negative")
	}
	if c.OpaqueIdleTimeout < 0 {
		return fmt.Errorf("opaque-idle-timeout must not be negative (0: none), got %s", c.OpaqueIdleTimeout)
	}
	if c.HTTP1BodyIdleTimeout < 0 || c.MaxConnsPerHost < 0 {
		return fmt.Errorf("http1-body-idle-timeout and max-conns-per-host must not be negative (0: none)")
	}
	if c.MaxConnections < 0 {
		return fmt.Errorf("max-connections must not be negative (0: unlimited), got %d", c.MaxConnections)
	}
	if c.MaxProcs < 0 {
		return fmt.Errorf("max-procs must not be negative (0: automatic), got %d", c.MaxProcs)
	}
	if c.PodName != "" && c.Namespace == "" {
		return fmt.Errorf("pod-name needs namespace: the pod is named in its namespace")
	}
	if c.IdentityAddr != "" {
		if c.Namespace == "" || c.ServiceAccount == "" || c.TrustAnchors == "" || c.IdentityServerID == "" {
			return fmt.Errorf("identity-addr needs namespace, service-account, trust-anchors and identity-server-id")
		}
		// The destination server is checked against the proxy's own
		// trust bundle, so an ID of another trust domain could never
		// connect.
		id, err := spiffeid.FromString(c.destinationServerID())
		if err != nil {
			return fmt.Errorf("destination-server-id %q: want a SPIFFE ID such as spiffe://%s/ns/mesh-system/sa/mesh-controller: %w", c.destinationServerID(), c.TrustDomain, err)
		}
		if td := id.TrustDomain().Name(); td != c.TrustDomain {
			return fmt.Errorf("destination-server-id %q is not in the proxy's trust domain %q", c.destinationServerID(), c.TrustDomain)
		}
	}
	if c.TapClientID != "" {
		id, err := spiffeid.FromString(c.TapClientID)
		if err != nil {
			return fmt.Errorf("tap-client-id %q: want a SPIFFE ID such as spiffe://%s/ns/mesh-system/sa/mesh-viz: %w", c.TapClientID, c.TrustDomain, err)
		}
		// The client is verified against the proxy's own trust bundle, so
		// an ID of another trust domain could never connect.
		if td := id.TrustDomain().Name(); td != c.TrustDomain {
			return fmt.Errorf("tap-client-id %q is not in the proxy's trust domain %q", c.TapClientID, c.TrustDomain)
		}
		if _, _, err := net.SplitHostPort(c.TapAddr); err != nil {
			return fmt.Errorf("tap-addr %q: want host:port: %w", c.TapAddr, err)
		}
	}
	if _, err := accesslog.ParseFormat(string(c.AccessLog)); err != nil {
		return fmt.Errorf("access-log: %w", err)
	}
	if c.TracingCollector != "" {
		if _, _, err := net.SplitHostPort(c.TracingCollector); err != nil {
			return fmt.Errorf("tracing-collector %q: want host:port: %w", c.TracingCollector, err)
		}
	}
	if c.TracingSampleRate < 0 || c.TracingSampleRate > 1 || c.TracingSampleRate != c.TracingSampleRate {
		return fmt.Errorf("tracing-sample-rate must be between 0 and 1, got %v", c.TracingSampleRate)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fmt.Errorf("log-format must be json or text, got %q", c.LogFormat)
	}
	return nil
}

// destinationServerID is the SPIFFE ID the destination server must prove
// over mesh TLS.
func (c Config) destinationServerID() string {
	if c.DestinationServerID != "" {
		return c.DestinationServerID
	}
	return c.IdentityServerID
}

// prefixesValue is a pflag.Value of comma-separated CIDRs.
type prefixesValue struct{ p *[]netip.Prefix }

func newPrefixesValue(p *[]netip.Prefix) *prefixesValue { return &prefixesValue{p} }

func (v *prefixesValue) String() string {
	if v.p == nil {
		return ""
	}
	return clusternet.Format(*v.p)
}

func (v *prefixesValue) Set(s string) error {
	out, err := clusternet.Parse(s)
	if err != nil {
		return err
	}
	*v.p = out
	return nil
}

func (v *prefixesValue) Type() string { return "cidrs" }

// formatValue is a pflag.Value of an access log format.
type formatValue accesslog.Format

func (v *formatValue) String() string { return string(*v) }

func (v *formatValue) Set(s string) error {
	f, err := accesslog.ParseFormat(s)
	if err != nil {
		return err
	}
	*v = formatValue(f)
	return nil
}

func (v *formatValue) Type() string { return "format" }

// traceServiceName is the proxy's workload as traces name it:
// "<pod>.<namespace>", the pod's owner being unknown to the proxy.
func (c Config) traceServiceName() string {
	switch {
	case c.PodName != "" && c.Namespace != "":
		return c.PodName + "." + c.Namespace
	case c.Namespace != "":
		return "mesh-proxy." + c.Namespace
	}
	return "mesh-proxy"
}
