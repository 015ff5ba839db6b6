package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/mesh-dev/mesh/controller/admin"
	"github.com/mesh-dev/mesh/controller/tapapi"
	"github.com/mesh-dev/mesh/controller/viz"
	"github.com/mesh-dev/mesh/identity/client"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/version"
)

// VizConfig is everything `mesh-controller viz` flags set; DefaultVizConfig
// gives the defaults, which are those of the mesh-viz Deployment.
//
// mesh-viz runs apart from the controller so that what it does for
// anyone who asks (scraping every meshed pod's /metrics, relaying tap)
// can neither crash nor slow identity, destination and the injector.
type VizConfig struct {
	// Namespace is the control plane's: where the identity service runs,
	// and mesh-viz with it.
	Namespace string
	// ServiceAccount is mesh-viz's own. Its SPIFFE ID is the only client
	// injected proxies admit to their tap servers.
	ServiceAccount string
	// Kubeconfig is a kubeconfig file; "" means the in-cluster config.
	Kubeconfig string

	// Addr serves the viz API, which checks no caller: it must be a
	// loopback address, reached through `kubectl port-forward` only, so
	// that the cluster's RBAC decides who may read it.
	Addr string
	// AdminAddr serves /metrics, /ready and /live.
	AdminAddr string
	// TapAddr serves the tap API (controller/tapapi) that the Kubernetes
	// API server forwards `mesh viz tap` to; "" serves none.
	TapAddr string
	// TapTLSDir holds the tap API's serving tls.crt and tls.key.
	TapTLSDir string

	// IdentityAddr is the identity service's host:port; "" means
	// names.DefaultIdentityAddr(Namespace), what proxies dial.
	IdentityAddr string
	// IdentityTokenFile is the projected ServiceAccount token, for the
	// identity service's audience, that proves who mesh-viz is.
	IdentityTokenFile string
	// TrustAnchorsFile holds the PEM trust anchors the identity service
	// is checked against before the token is sent.
	TrustAnchorsFile string
	// TrustDomain is the SPIFFE trust domain.
	TrustDomain string

	LogLevel  slog.Level
	LogFormat string // "json" or "text"

	// Set by tests of this package only.
	client   kubernetes.Interface               // nil: from Kubeconfig
	logTo    io.Writer                          // nil: stderr
	onListen func(component string, a net.Addr) // nil: nothing
	vizMod   func(*viz.Config)                  // nil: nothing
}

// DefaultVizConfig returns the configuration `mesh-controller viz` runs
// with no flags.
func DefaultVizConfig() VizConfig {
	return VizConfig{
		Namespace:         names.DefaultControlPlaneNamespace,
		ServiceAccount:    names.VizServiceAccount,
		Addr:              viz.DefaultAddr,
		AdminAddr:         ":9990",
		TapAddr:           ":8089",
		TapTLSDir:         "/var/run/mesh/tap-tls",
		IdentityTokenFile: client.DefaultTokenPath,
		TrustAnchorsFile:  "/var/run/mesh/trust-roots/ca-bundle.crt",
		TrustDomain:       "cluster.local",
		LogLevel:          slog.LevelInfo,
		LogFormat:         "json",
	}
}

// AddFlags binds every field to a flag on fs, with c's values as defaults.
func (c *VizConfig) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "namespace of the control plane, where the identity service runs; POD_NAMESPACE when set")
	fs.StringVar(&c.ServiceAccount, "service-account", c.ServiceAccount, "mesh-viz's ServiceAccount, whose SPIFFE ID the proxies admit to their tap servers")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig file; empty means the in-cluster config")
	fs.StringVar(&c.Addr, "viz-addr", c.Addr, "loopback address of the viz API (live stats for mesh viz, through a port-forward)")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "address of the admin server (/metrics, /ready, /live)")
	fs.StringVar(&c.TapAddr, "tap-addr", c.TapAddr, "address of the tap API the Kubernetes API server forwards mesh viz tap to; empty: no tap")
	fs.StringVar(&c.TapTLSDir, "tap-tls-dir", c.TapTLSDir, "directory with the tap API's serving tls.crt and tls.key")
	fs.StringVar(&c.IdentityAddr, "identity-addr", c.IdentityAddr, "host:port of the identity service; empty means mesh-identity in --namespace")
	fs.StringVar(&c.IdentityTokenFile, "identity-token-file", c.IdentityTokenFile, "projected ServiceAccount token for the identity service's audience")
	fs.StringVar(&c.TrustAnchorsFile, "trust-anchors-file", c.TrustAnchorsFile, "PEM trust anchors the identity service is checked against")
	fs.StringVar(&c.TrustDomain, "trust-domain", c.TrustDomain, "SPIFFE trust domain of workload identities")
	fs.TextVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: json or text")
}

// Validate reports configuration mesh-viz cannot run with.
func (c VizConfig) Validate() error {
	switch {
	case c.Namespace == "" || c.ServiceAccount == "":
		return errors.New("--namespace and --service-account must not be empty")
	case c.Addr == "" || c.AdminAddr == "":
		return errors.New("--viz-addr and --admin-addr must not be empty")
	case !isLoopback(c.Addr):
		return fmt.Errorf("--viz-addr %q: must be a loopback address like %s (the viz API serves without authentication; mesh viz reaches it through a port-forward)", c.Addr, viz.DefaultAddr)
	case c.TapAddr != "" && c.TapTLSDir == "":
		return errors.New("--tap-tls-dir must not be empty when --tap-addr is set")
	case c.IdentityTokenFile == "" || c.TrustAnchorsFile == "":
		return errors.New("--identity-token-file and --trust-anchors-file must not be empty")
	case c.LogFormat != "json" && c.LogFormat != "text":
		return fmt.Errorf("--log-format must be json or text, got %q", c.LogFormat)
	}
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		return fmt.Errorf("--trust-domain %q: %w", c.TrustDomain, err)
	}
	if _, err := c.id(); err != nil {
		return fmt.Errorf("--namespace %q, --service-account %q: %w", c.Namespace, c.ServiceAccount, err)
	}
	return nil
}

// id is mesh-viz's own SPIFFE ID.
func (c VizConfig) id() (spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(td, "ns", c.Namespace, "sa", c.ServiceAccount)
}

// identityAddr is where the identity service is dialed.
func (c VizConfig) identityAddr() string {
	if c.IdentityAddr != "" {
		return c.IdentityAddr
	}
	return names.DefaultIdentityAddr(c.Namespace)
}

func (c VizConfig) listening(component string, a net.Addr) {
	if c.onListen != nil {
		c.onListen(component, a)
	}
}

// RunViz runs mesh-viz: viz's informers and scrapes, the viz API on
// loopback, its own identity from the identity service, the admin server
// and, with TapAddr, the tap API (controller/tapapi), the only way to
// viz's TapHandler. It returns when ctx is done (nil) or
// when a part fails (its error, after stopping the others).
func RunViz(ctx context.Context, cfg VizConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.logTo == nil {
		cfg.logTo = os.Stderr
	}
	log := NewLogger(cfg.LogLevel, cfg.LogFormat, cfg.logTo)
	kube := cfg.client
	if kube == nil {
		rc, err := restConfig(cfg.Kubeconfig)
		if err != nil {
			return err
		}
		rc.UserAgent = "mesh-controller/" + version.Version + " (viz)"
		if kube, err = kubernetes.NewForConfig(rc); err != nil {
			return fmt.Errorf("viz: kubernetes client: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	self, err := dialIdentity(cfg, log)
	if err != nil {
		return err
	}
	defer self.conn.Close()

	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTransform(stripManagedFields))
	// As in Run: Shutdown is deferred before the cancel below, so it runs
	// after it, once the informers have been told to stop.
	defer factory.Shutdown()
	ctx, cancel := context.WithCancel(ctx)
	g, ctx := errgroup.WithContext(ctx)
	defer func() {
		cancel()
		g.Wait()
	}()

	vcfg := viz.Config{
		Addr: cfg.Addr, Informers: factory, TrustDomain: self.src.ID().TrustDomain(),
		TapTLS: tapClientTLS(self.src), Registerer: reg, Log: log.With("component", "viz"),
		OnListen: func(a net.Addr) { cfg.listening("viz", a) },
	}
	if cfg.vizMod != nil {
		cfg.vizMod(&vcfg)
	}
	vz, err := viz.New(vcfg)
	if err != nil {
		return fmt.Errorf("viz: %w", err)
	}
	state := vizReadiness{viz: vz.Ready, identity: self.src.Health}
	context.AfterFunc(ctx, func() { state.stopping.Store(true) })
	factory.Start(ctx.Done())

	g.Go(func() error {
		return admin.Run(ctx, admin.Config{
			Addr: cfg.AdminAddr, Gatherer: reg, Ready: state.check, Log: log.With("component", "admin"),
			OnListen: func(a net.Addr) { cfg.listening("admin", a) },
		})
	})
	g.Go(func() error { return self.run(ctx, log) })
	g.Go(func() error { return vz.Run(ctx) })
	if cfg.TapAddr != "" {
		g.Go(func() error {
			return tapapi.Run(ctx, tapapi.Config{
				Addr: cfg.TapAddr, TLSDir: cfg.TapTLSDir, Client: kube, Tap: vz.TapHandler(),
				Log: log.With("component", "tap-api"), Registerer: reg,
				OnListen: func(a net.Addr) { cfg.listening("tap", a) },
			})
		})
	}
	log.Info("mesh-viz starting", "version", version.Version, "namespace", cfg.Namespace,
		"identity", self.src.ID().String(), "identity_addr", cfg.identityAddr())
	return g.Wait()
}

// vizIdentity is mesh-viz's SPIFFE identity: the certificate it gets and
// renews from the identity service as a proxy does, with a projected
// token of its ServiceAccount.
type vizIdentity struct {
	conn *grpc.ClientConn
	src  *client.Source
}

// dialIdentity sets up mesh-viz's certificate client. The connection is
// lazy: nothing is sent before Run, and the identity service must prove
// the controller's SPIFFE ID against the trust anchors before the token
// goes out.
func dialIdentity(cfg VizConfig, log *slog.Logger) (*vizIdentity, error) {
	td := spiffeid.RequireTrustDomainFromString(cfg.TrustDomain) // Validate checked it
	anchors, err := x509bundle.Load(td, cfg.TrustAnchorsFile)
	if err != nil {
		return nil, fmt.Errorf("viz: trust anchors: %w (mesh install mounts them from ConfigMap mesh-trust-roots)", err)
	}
	server := spiffeid.RequireFromSegments(td, "ns", cfg.Namespace, "sa", names.ControllerServiceAccount)
	// grpc's own DNS resolver: the identity Service is headless, so a
	// failed connection re-resolves and finds the controller's new pods.
	conn, err := grpc.NewClient("dns:///"+cfg.identityAddr(),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(anchors, tlsconfig.AuthorizeID(server)))),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: identityBackoff, MinConnectTimeout: 10 * time.Second}))
	if err != nil {
		return nil, fmt.Errorf("viz: identity service %s: %w", cfg.identityAddr(), err)
	}
	src, err := client.New(client.Config{
		TrustDomain: cfg.TrustDomain, Namespace: cfg.Namespace, ServiceAccount: cfg.ServiceAccount,
		TokenPath: cfg.IdentityTokenFile, Conn: conn, Log: log.With("component", "identity"),
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("viz: %w", err)
	}
	return &vizIdentity{conn: conn, src: src}, nil
}

// identityBackoff reconnects to the identity service within seconds of
// its return: a controller restart must not leave viz without a
// certificate for grpc's default two minutes.
var identityBackoff = backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 15 * time.Second}

// run gets the first certificate and renews it until ctx ends.
func (id *vizIdentity) run(ctx context.Context, log *slog.Logger) error {
	go func() {
		select {
		case <-id.src.Ready():
			log.Info("viz identity certificate obtained", "id", id.src.ID().String())
		case <-ctx.Done():
		}
	}()
	return id.src.Run(ctx)
}

// tapClientTLS is viz.Config.TapTLS over src: mesh-viz's current
// certificate, read at each handshake so renewals apply at once; the
// server must be exactly the tapped pod's identity, verified against the
// trust bundle src follows.
func tapClientTLS(src *client.Source) func(server spiffeid.ID) *tls.Config {
	return func(server spiffeid.ID) *tls.Config {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13}
		tlsconfig.HookMTLSClientConfig(cfg, src, src, tlsconfig.AuthorizeID(server))
		return cfg
	}
}

// vizReadiness is mesh-viz's /ready: its caches synced, and a certificate
// the proxies accept, since without one tap cannot work.
type vizReadiness struct {
	stopping atomic.Bool
	viz      func() error
	identity func() error
}

func (r *vizReadiness) check() error {
	if r.stopping.Load() {
		return errors.New("shutting down")
	}
	if err := r.viz(); err != nil {
		return err
	}
	if err := r.identity(); err != nil {
		return fmt.Errorf("no usable identity certificate: %w", err)
	}
	return nil
}
