// Package tapapi serves tap as an aggregated Kubernetes API,
// tap.mesh.dev/v1alpha1, in the manner of Linkerd's tap.linkerd.io: users
// reach it only through the Kubernetes API server, which authenticates
// them (any credential it accepts), checks RBAC on the path, and forwards
// the request over TLS with its front-proxy client certificate and the
// user in X-Remote-User, X-Remote-Group and X-Remote-Extra-* headers.
// This server believes those headers only from a certificate that chains
// to the front-proxy CA the API server publishes in ConfigMap
// kube-system/extension-apiserver-authentication, then asks the API
// server with a SubjectAccessReview whether that user may `watch` the
// resource's `tap` subresource in group tap.mesh.dev, and only then
// relays viz's tap stream.
//
// The shape viz's process wires in:
//
//	err := tapapi.Run(ctx, tapapi.Config{
//		Addr:       ":8089",                     // the container port "tap"
//		TLSDir:     "/var/run/mesh/tap-tls",     // Secret mesh-tap-tls: tls.crt, tls.key
//		Client:     client,                      // kubernetes.Interface of mesh-viz's ServiceAccount
//		Tap:        v.TapHandler(),              // viz's tap query (api/viz/v1 PathTap), after authorization
//		Log:        log,
//		Registerer: reg,
//	})
//
// Run returns nil when ctx ends. The ServiceAccount needs the Role
// extension-apiserver-authentication-reader in kube-system and the
// ClusterRole system:auth-delegator (install/manifests/36-tap.yaml).
//
// Paths, all GET, all refused with 401 unless the API server's front
// proxy sent them for a user:
//
//	/apis, /apis/tap.mesh.dev, /apis/tap.mesh.dev/v1alpha1    discovery
//	/apis/tap.mesh.dev/v1alpha1/watch/namespaces/{ns}/tap     every meshed pod of namespace ns
//	/apis/tap.mesh.dev/v1alpha1/watch/namespaces/{ns}/{resource}/{name}/tap
//
// where resource is pods, deployments, statefulsets, daemonsets,
// replicasets or jobs. The query takes viz's filters: method, authority,
// path (a prefix) and max_rps. The answer is viz's: newline-delimited
// JSON TapEvents (api/viz/v1), flushed as they come. A user without the
// permission gets 403 and a metav1.Status that says which permission is
// missing and how to grant it.
package tapapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/mesh-dev/mesh/internal/httpserver"
	"github.com/mesh-dev/mesh/internal/keypair"
)

// DefaultAddr is where Run listens when Config.Addr is empty: the
// mesh-viz container's port "tap", which the Service mesh-viz targets.
const DefaultAddr = ":8089"

// Timeouts of the server. There is no read or write timeout: a tap is a
// stream that lasts as long as the user watches.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
)

// Config is what the tap API needs. TLSDir, Client and Tap are required;
// the zero value of every other field means what its comment says.
type Config struct {
	// Addr to listen on; "" means DefaultAddr.
	Addr string
	// TLSDir holds tls.crt and tls.key, the serving certificate for
	// mesh-viz.<namespace>.svc that the API server checks against the
	// APIService's caBundle; they are read again when they change.
	TLSDir string
	// Client reads the ConfigMap kube-system/extension-apiserver-authentication
	// and creates SubjectAccessReviews.
	Client kubernetes.Interface
	// Tap serves viz's tap query: GET api/viz/v1's PathTap with its query
	// parameters namespace, resource (KIND/NAME) and the filters. Run
	// calls it only for a user allowed to tap that resource, with the
	// namespace and resource taken from the authorized path.
	Tap http.Handler
	// Log; nil discards.
	Log *slog.Logger
	// Registerer gets the metrics; nil registers them nowhere.
	Registerer prometheus.Registerer
	// OnListen is called once with the listening address; nil is fine.
	OnListen func(net.Addr)
	// ShutdownGrace bounds how long requests in flight may take after ctx
	// ends; open taps end with ctx. 0 means 5s.
	ShutdownGrace time.Duration
}

func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.TLSDir == "" {
		errs = append(errs, errors.New("no TLSDir: the directory of the serving certificate (Secret mesh-tap-tls)"))
	}
	if c.Client == nil {
		errs = append(errs, errors.New("no Kubernetes client"))
	}
	if c.Tap == nil {
		errs = append(errs, errors.New("no Tap handler"))
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 5 * time.Second
	}
	return c, errors.Join(errs...)
}

// Run serves the tap API over TLS until ctx ends, then stops accepting,
// ends the open taps and returns nil. It returns an error when it cannot
// start (no serving certificate, the address taken) or serving fails.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fmt.Errorf("tap API: %w", err)
	}
	keys := keypair.New(cfg.TLSDir, "tap API serving certificate (Secret mesh-tap-tls, which mesh install makes)", cfg.Log)
	// Fail at start, not at the first handshake, when the Secret is missing.
	if _, err := keys.GetCertificate(nil); err != nil {
		return fmt.Errorf("tap API: %w", err)
	}
	proxy, err := newFrontProxy(cfg.Client)
	if err != nil {
		return fmt.Errorf("tap API: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	proxy.start(ctx, &wg, cfg.Log)

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("tap API: %w", err)
	}
	srv := newHTTPServer(ctx, cfg, keys, &server{
		cfg:          cfg,
		authenticate: proxy.authenticate,
		metrics:      newMetrics(cfg.Registerer),
	})
	cfg.Log.Info("tap API listening", "addr", ln.Addr().String(), "tls_dir", cfg.TLSDir)
	if cfg.OnListen != nil {
		cfg.OnListen(ln.Addr())
	}
	if err := httpserver.Run(ctx, srv, func() error { return srv.ServeTLS(ln, "", "") }, cfg.ShutdownGrace); err != nil {
		return fmt.Errorf("tap API: %w", err)
	}
	return nil
}
