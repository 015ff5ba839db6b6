package tapapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/internal/keypair"
)

// newHTTPServer returns the TLS server of h. It asks every client for a
// certificate but checks none in the handshake: the front-proxy CA can
// change while connections are open, so frontProxy checks the
// certificate on each request against the CA of the moment. Request
// contexts end with ctx, so open taps do not hold up a shutdown.
func newHTTPServer(ctx context.Context, cfg Config, keys *keypair.KeyPair, h http.Handler) *http.Server {
	return &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{
			GetCertificate: keys.GetCertificate,
			ClientAuth:     tls.RequestClientCert,
			MinVersion:     tls.VersionTLS12,
		},
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		// The API server's user headers carry every group and extra of
		// the user: room for an OIDC user's hundreds of groups.
		MaxHeaderBytes: 256 << 10,
		BaseContext:    func(net.Listener) context.Context { return ctx },
		ErrorLog:       slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
}

// server answers the tap API's requests.
type server struct {
	cfg          Config
	authenticate func(*http.Request) (user.Info, error)
	metrics      *metrics
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	defer func() { s.metrics.request(sw.status) }()
	s.serve(sw, r)
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	u, err := s.authenticate(r)
	if err != nil {
		// Debug: anyone who can connect can make these, by the thousand.
		s.cfg.Log.Debug("tap API: request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
		writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, err.Error())
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "the tap API answers GET only")
		return
	}
	switch r.URL.Path {
	case "/apis":
		writeJSON(w, apiGroupList())
		return
	case "/apis/" + Group:
		writeJSON(w, apiGroup())
		return
	case "/apis/" + GroupVersion:
		writeJSON(w, apiResourceList())
		return
	}
	t, err := ParsePath(r.URL.Path)
	switch {
	case errors.Is(err, errNotTap):
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound,
			fmt.Sprintf("no such path %q: tap is %s{namespace}/tap or %s{namespace}/{resource}/{name}/tap", r.URL.Path, watchPrefix, watchPrefix))
		return
	case err != nil:
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	s.tap(w, r, u, t)
}

// tap authorizes u to tap t and relays viz's stream.
func (s *server) tap(w http.ResponseWriter, r *http.Request, u user.Info, t Target) {
	q, err := vizQuery(t, r.URL.RawQuery)
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	d, err := authorize(r.Context(), s.cfg.Client, u, t)
	if err != nil && r.Context().Err() != nil {
		return // the API server closed the request
	}
	if err != nil {
		s.cfg.Log.Error("tap API: cannot check the user's access", "user", u.GetName(), "target", t.String(), "err", err)
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError,
			fmt.Sprintf("cannot check whether user %q may tap %s: %v", u.GetName(), t, err))
		return
	}
	if !d.Allowed {
		s.cfg.Log.Info("tap API: tap denied", "user", u.GetName(), "groups", u.GetGroups(), "target", t.String(), "reason", d.Reason)
		writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, forbiddenMessage(u, t, d.Reason))
		return
	}
	s.cfg.Log.Info("tap API: tap started", "user", u.GetName(), "target", t.String(), "filters", r.URL.RawQuery)
	s.cfg.Tap.ServeHTTP(w, vizRequest(r, q))
}

// filters are the query parameters a user may set; the namespace and
// resource come from the authorized path only.
var filters = []string{"method", "authority", "path", "max_rps"}

// vizQuery returns viz's tap query for t with the filters of rawQuery.
func vizQuery(t Target, rawQuery string) (url.Values, error) {
	in, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("bad query: %w", err)
	}
	out := url.Values{}
	for name, vals := range in {
		if !slices.Contains(filters, name) {
			return nil, fmt.Errorf("unknown parameter %q: tap takes %s; the namespace and resource are in the path",
				name, strings.Join(filters, ", "))
		}
		out[name] = vals
	}
	r, _ := lookupResource(t.Resource)
	out.Set("namespace", t.Namespace)
	out.Set("resource", r.VizKind+"/"+t.Name)
	return out, nil
}

// vizRequest is r as viz's tap handler takes it: PathTap with query q.
func vizRequest(r *http.Request, q url.Values) *http.Request {
	out := r.Clone(r.Context())
	out.URL.Path = vizv1.PathTap
	out.URL.RawPath = ""
	out.URL.RawQuery = q.Encode()
	out.RequestURI = out.URL.RequestURI()
	return out
}

// writeStatus answers with a metav1.Status, the body kubectl and
// client-go read errors from.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  msg,
		Reason:   reason,
		Code:     int32(code),
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(st)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	json.NewEncoder(w).Encode(v)
}

// statusWriter records the status of the answer for the metrics. Unwrap
// lets http.ResponseController reach the connection's Flush.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush is for handlers that assert http.Flusher instead of using
// http.ResponseController.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// metrics count the tap API's answers.
type metrics struct {
	requests *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mesh_viz_tap_api_requests_total",
			Help: "Requests to the tap API (tap.mesh.dev) by HTTP status: 401 not from the API server's front proxy, 403 denied by RBAC.",
		}, []string{"code"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests)
	}
	return m
}

// request counts an answer; status 0 means the handler wrote nothing,
// which net/http sends as 200.
func (m *metrics) request(status int) {
	if status == 0 {
		status = http.StatusOK
	}
	m.requests.WithLabelValues(strconv.Itoa(status)).Inc()
}
