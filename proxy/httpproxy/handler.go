package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/tap"
)

// ServeHTTP forwards one request to the target of the connection it came on.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn := connFrom(r.Context())
	if conn == nil {
		http.Error(w, "mesh-proxy: no target for this connection", http.StatusInternalServerError)
		return
	}
	x := &exchange{p: p, in: r, conn: conn, rec: recorder{ResponseWriter: w, start: time.Now(), tcp: conn.TCP}}
	// The policy decides before anything else is done for the request:
	// a denied one is counted and tapped, and goes nowhere.
	if conn.Authz != nil {
		if denied := conn.Authz.AuthorizeRequest(r); denied != nil {
			p.refuse(&x.rec, r, conn, denied)
			return
		}
	}
	x.rec.metrics, x.rec.x = p.cfg.Metrics, x
	if p.cfg.Pick != nil {
		x.body = holdBody(r) // for another endpoint, if the first cannot be reached
	}
	defer x.end()
	x.run()
}

// tap publishes r to whoever watches this proxy's requests; the query is
// left out, as it may carry secrets the watcher has no business seeing.
func (p *Proxy) tap(r *http.Request, key metrics.RouteKey) *tap.Pending {
	if p.cfg.Tap == nil || p.cfg.Tap.Watchers() == 0 {
		return nil // no allocation on the common path
	}
	return p.cfg.Tap.Request(tap.Request{
		Direction: string(key.Direction), Src: r.RemoteAddr, Dst: endpointFrom(r.Context()).String(),
		DstWorkload: key.Dst.Workload, ClientID: key.ClientID, ServerID: key.ServerID,
		Method: r.Method, Scheme: "http", Authority: r.Host, Path: r.URL.Path,
	})
}

// refuse answers a request the connection's Authorizer denied with 403,
// or for gRPC with PERMISSION_DENIED, and counts and taps it like any
// other request.
func (p *Proxy) refuse(rec *recorder, r *http.Request, conn *ConnInfo, why error) {
	key := metrics.RouteKey{Direction: p.cfg.Direction, Authority: r.Host, Target: conn.Target.String(), ClientID: conn.ClientID}
	route := p.cfg.Metrics.Route(key)
	route.Request()
	if conn.TCP != nil {
		conn.TCP.RequestUnreached(metrics.PolicyDenied)
	}
	tapped := p.tap(r, key)
	writeUnauthorized(rec, r, why)
	route.Response(rec.code(), rec.succeeded(), rec.took())
	tapped.Response(tap.Response{Status: rec.code(), GRPCStatus: rec.grpcStatus(), Latency: rec.took(), Success: rec.succeeded()})
}

// writeUnauthorized is the answer to a denied request: 403 with the
// reason, or for gRPC a trailers-only response with grpc-status 7
// (PERMISSION_DENIED), which a gRPC client reports as that status rather
// than as a transport error (gRPC over HTTP/2 spec, "Responses"). An
// HTTP/1.1 request the client proxy carried over HTTP/2 gets its 403 back
// through that proxy like any response.
func writeUnauthorized(w http.ResponseWriter, r *http.Request, why error) {
	msg := "mesh-proxy: unauthorized: " + why.Error()
	w.Header().Set("Mesh-Proxy-Error", "unauthorized")
	if isGRPC(r) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "7") // PERMISSION_DENIED
		w.Header().Set("Grpc-Message", grpcMessage(msg))
		w.WriteHeader(http.StatusOK)
		return
	}
	http.Error(w, msg, http.StatusForbidden)
}

// isGRPC reports a gRPC request (content-type application/grpc, with or
// without a +proto, +json... suffix).
func isGRPC(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// grpcMessage percent-encodes msg for the grpc-message header: bytes
// outside printable ASCII, and '%', become %XX (gRPC over HTTP/2 spec).
func grpcMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// rewrite makes the outgoing request differ from the incoming one only in
// where it is sent: the proxy is transparent, so it adds no X-Forwarded-*
// headers and keeps the ones (and the raw query) the client sent, which
// ReverseProxy strips before calling Rewrite.
func rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = endpointFrom(pr.In.Context()).String()
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
	pr.Out.Host = pr.In.Host
	// The same map, not ReverseProxy's copy: the server fills in the
	// request trailers' values only once the body has ended, and the
	// transport sends what it finds there then.
	pr.Out.Trailer = pr.In.Trailer
	markWireProto(pr.In, pr.Out)
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := pr.In.Header[h]; ok {
			pr.Out.Header[h] = v
		}
	}
}

// roundTripper sends HTTP/2 requests over HTTP/2 (h2c) and the rest over
// HTTP/1.1, so the target sees the protocol its client chose.
type roundTripper struct {
	h1, h2 *http.Transport
}

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	if useH2(r) {
		return rt.h2.RoundTrip(r)
	}
	return rt.h1.RoundTrip(r)
}

// writeError answers a request the target could not: 504 when the failure
// was a timeout, 502 otherwise, and for gRPC a trailers-only response with
// the matching grpc-status, which gRPC clients understand (gRPC over HTTP/2
// spec, "Responses").
func (p *Proxy) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if rec, ok := w.(*recorder); ok && errors.As(err, new(*ConnectError)) {
		if rec.x != nil && rec.x.holdConnectFailure(r, err) {
			return // nothing was sent: another endpoint is tried
		}
		rec.unreached = metrics.ConnectFailed
	}
	if r.Context().Err() != nil {
		// The client went away; nobody reads this answer.
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	target := endpointFrom(r.Context())
	code, grpcCode, what := http.StatusBadGateway, 14, "unreachable" // 14: UNAVAILABLE
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		code, grpcCode, what = http.StatusGatewayTimeout, 4, "timed out" // 4: DEADLINE_EXCEEDED
	}
	msg := fmt.Sprintf("mesh-proxy: target %s %s: %v", target, what, err)
	p.cfg.Log.Info("request failed", "direction", p.cfg.Direction, "target", target.String(),
		"authority", r.Host, "status", code, "err", err)
	w.Header().Set("Mesh-Proxy-Error", what)
	if isGRPC(r) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", fmt.Sprint(grpcCode))
		w.Header().Set("Grpc-Message", grpcMessage(msg))
		w.WriteHeader(http.StatusOK)
		return
	}
	http.Error(w, msg, code)
}

// recorder notes the status and timing of the response for metrics, and
// counts the request once the response begins: only then is it known
// whether the request reached an application. It keeps
// http.ResponseController working (flush, hijack for upgrades) by
// unwrapping to the server's writer. Its methods are called from the
// request's handler goroutine only.
type recorder struct {
	http.ResponseWriter
	start  time.Time
	status int
	after  time.Duration

	metrics *metrics.Metrics
	key     metrics.RouteKey
	// unreached says why, when the proxy answers itself because the
	// request could go nowhere: no endpoint, or the connection to the
	// target failed or timed out. Such a request is counted without its
	// target, and its connection's TCP series are not opened for it, so
	// that a sweep of closed ports or a dead endpoint adds no series
	// naming an address (docs/metrics.md). "" for a request that reached
	// its target.
	unreached metrics.UnreachedReason
	// tcp is the TCP series of the request's connection; nil for none.
	tcp *metrics.Conn
	// x is the request's exchange, which may hold a connect failure back
	// from writeError to try another endpoint; nil for none.
	x *exchange
	// route is where the request was counted, nil until it was.
	route *metrics.Route
}

// begin records the response's status as it starts, and counts the request.
func (r *recorder) begin(code int) {
	if r.status != 0 {
		return
	}
	r.status = code
	r.after = time.Since(r.start)
	r.countRequest()
}

// countRequest counts the request under its route, once, and tells its
// connection's TCP series whether it reached an application. A recorder
// without metrics (a denied request, counted by refuse) counts nothing.
func (r *recorder) countRequest() {
	if r.route != nil || r.metrics == nil {
		return
	}
	k := r.key
	if r.unreached != "" {
		k.Target = ""
	}
	r.route = r.metrics.Route(k)
	r.route.Request()
	switch {
	case r.tcp == nil:
	case r.unreached != "":
		r.tcp.RequestUnreached(r.unreached)
	default:
		r.tcp.Reached()
	}
}

func (r *recorder) WriteHeader(code int) {
	if code == http.StatusContinue {
		// The target's answer to Expect: 100-continue, which ReverseProxy
		// passes on. The transport reads the body as it gets it, and that
		// read makes the server send the client its own 100 Continue: the
		// target's as well would sometimes make two, which a client reading
		// one 1xx then the response takes for the response.
		return
	}
	if code >= 200 || code == http.StatusSwitchingProtocols {
		r.begin(code)
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.begin(http.StatusOK)
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Hijack is called by ReverseProxy only after the target answered 101
// Switching Protocols, which it then writes to the hijacked connection
// itself, bypassing WriteHeader: record the 101 here.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	r.begin(http.StatusSwitchingProtocols)
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

func (r *recorder) code() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

func (r *recorder) took() time.Duration {
	if r.status == 0 {
		return time.Since(r.start)
	}
	return r.after
}

// succeeded classifies the exchange: a 5xx fails, and so does a gRPC
// response whose grpc-status (a header in trailers-only responses, else a
// trailer that ReverseProxy has copied into the header map) is not 0.
func (r *recorder) succeeded() bool {
	if r.code() >= 500 {
		return false
	}
	status := r.grpcStatus()
	return status <= 0
}

// grpcStatus is the response's grpc-status, -1 when it carries none.
func (r *recorder) grpcStatus() int {
	h := r.Header()
	status := h.Get("Grpc-Status")
	if status == "" {
		status = h.Get(http.TrailerPrefix + "Grpc-Status")
	}
	if status == "" {
		return -1
	}
	n, err := strconv.Atoi(status)
	if err != nil || n < 0 {
		return 2 // UNKNOWN: a status that is not a number is not OK
	}
	return n
}

// bufferPool lends ReverseProxy its copy buffers, so streaming a body costs
// one pooled buffer instead of a fresh allocation per request.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
