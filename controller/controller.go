// Package controller runs the mesh control plane: one process, one
// component per package, each started with its own Run(ctx, Config): the
// proxy injector (controller/injector), the destination service
// (controller/destination), the inbound policy service
// (controller/policy), the identity service (identity/certify) and the
// admin server (controller/admin). The viz component (controller/viz)
// runs in a process of its own, mesh-viz (RunViz), so that what it does
// for anyone who asks cannot knock these over.
package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/events"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mesh-dev/mesh/controller/admin"
	"github.com/mesh-dev/mesh/controller/destination"
	"github.com/mesh-dev/mesh/controller/injector"
	"github.com/mesh-dev/mesh/controller/policy"
	"github.com/mesh-dev/mesh/controller/route"
	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/install/inject"
	"github.com/mesh-dev/mesh/internal/clusternet"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/version"
)

// Config is everything mesh-controller's flags set; DefaultConfig gives the
// defaults. ProxyImage has none and is required.
type Config struct {
	// Namespace the control plane runs in; its pods are never injected.
	Namespace string
	// ProxyImage is the mesh-proxy image injected pods run.
	ProxyImage string
	// Version is written to injected pods' mesh.dev/proxy-version.
	Version string
	// Kubeconfig is a kubeconfig file; "" means the in-cluster config.
	Kubeconfig string

	WebhookAddr   string // the injector's HTTPS listener
	WebhookTLSDir string // holds tls.crt and tls.key, reloaded on change
	AdminAddr     string // /metrics, /ready, /live
	GRPCAddr      string // the proxies' API: destination and inbound policy, mesh TLS only
	// GRPCLocalAddr serves the same API in plain text on loopback only,
	// for `mesh authz` and diagnostics through a port-forward: reaching it
	// takes the cluster's RBAC right to port-forward in the control plane
	// namespace, where no pod can reach it.
	GRPCLocalAddr string
	// IdentityAddr serves the identity service over TLS with the
	// controller's own SVID, so a proxy can check the server against its
	// trust anchors before it sends its token.
	IdentityAddr string
	// IdentityIssuerDir holds the issuer Secret (tls.crt, tls.key, ca.crt).
	IdentityIssuerDir string
	// IdentityLeafLifetime is how long workload certificates last.
	IdentityLeafLifetime time.Duration
	// IdentityReviewQPS and IdentityReviewBurst rate-limit the Kubernetes
	// client the identity service makes TokenReviews with, its own so a
	// flood of junk tokens cannot use up the informers' rate (issue 12);
	// 0 means certify.DefaultReviewQPS and DefaultReviewBurst.
	IdentityReviewQPS   float32
	IdentityReviewBurst int
	// IdentityClientRate is how many certificate requests a second one
	// client IP address may make after a burst of IdentityClientBurst;
	// 0 means certify.DefaultClientRate and DefaultClientBurst.
	IdentityClientRate  float64
	IdentityClientBurst int
	// IdentityMaxBundleWatches bounds the trust-bundle streams open at
	// once, one per meshed pod; 0 means certify.DefaultMaxBundleWatches.
	IdentityMaxBundleWatches int

	// ClusterDomain is the cluster's DNS suffix, for service names.
	ClusterDomain string
	// TrustDomain is the SPIFFE trust domain of workload identities.
	TrustDomain string

	// DefaultInboundPolicy applies to the ports no Server selects, unless
	// a namespace or pod says otherwise with
	// config.mesh.dev/default-inbound-policy: one of
	// names.DefaultInboundPolicies.
	DefaultInboundPolicy string
	// ClusterNetworks are the cluster's pod, service and node networks:
	// the cluster-* default policies allow clients from them, and injected
	// proxies never fall back to plain text inside them. At least one.
	ClusterNetworks []netip.Prefix

	LogLevel  slog.Level
	LogFormat string // "json" or "text"

	// Set by tests of this package only.
	client   kubernetes.Interface               // nil: from Kubeconfig
	dynamic  dynamic.Interface                  // with client; for the policy.mesh.dev kinds
	gateway  gatewayclient.Interface            // with client; nil: from Kubeconfig
	logTo    io.Writer                          // nil: stderr
	onListen func(component string, a net.Addr) // nil: nothing
	events   events.EventBroadcaster            // nil: one recording to client's events API
}

// DefaultConfig returns the configuration mesh-controller runs with no
// flags (and, as Run rejects it, no --proxy-image).
func DefaultConfig() Config {
	return Config{
		Namespace:     names.DefaultControlPlaneNamespace,
		Version:       version.Version,
		WebhookAddr:   ":8443",
		WebhookTLSDir: "/var/run/mesh/webhook-tls",
		AdminAddr:     ":9990",
		GRPCAddr:      ":" + strconv.Itoa(names.DestinationPort),
		GRPCLocalAddr: "127.0.0.1:8087",

		IdentityAddr:         ":" + strconv.Itoa(names.IdentityPort),
		IdentityIssuerDir:    "/var/run/mesh/identity-issuer",
		IdentityLeafLifetime: 24 * time.Hour,

		IdentityReviewQPS:        certify.DefaultReviewQPS,
		IdentityReviewBurst:      certify.DefaultReviewBurst,
		IdentityClientRate:       certify.DefaultClientRate,
		IdentityClientBurst:      certify.DefaultClientBurst,
		IdentityMaxBundleWatches: certify.DefaultMaxBundleWatches,

		ClusterDomain:        "cluster.local",
		TrustDomain:          "cluster.local",
		DefaultInboundPolicy: names.DefaultInboundPolicy,
		ClusterNetworks:      clusternet.Default(),
		LogLevel:             slog.LevelInfo,
		LogFormat:            "json",
	}
}

// AddFlags binds every field to a flag on fs, with c's values as defaults.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "namespace of the control plane, never injected; POD_NAMESPACE when set")
	fs.StringVar(&c.ProxyImage, "proxy-image", c.ProxyImage, "mesh-proxy image that injected pods run (required)")
	fs.StringVar(&c.Version, "version", c.Version, "proxy version written to injected pods' mesh.dev/proxy-version annotation")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig file; empty means the in-cluster config")
	fs.StringVar(&c.WebhookAddr, "webhook-addr", c.WebhookAddr, "address of the proxy injector's HTTPS listener")
	fs.StringVar(&c.WebhookTLSDir, "webhook-tls-dir", c.WebhookTLSDir, "directory with the injector's tls.crt and tls.key, reloaded when they change")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "address of the admin server (/metrics, /ready, /live)")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", c.GRPCAddr, "address of the gRPC server (mesh TLS) proxies ask for destinations and policy")
	fs.StringVar(&c.GRPCLocalAddr, "grpc-local-addr", c.GRPCLocalAddr, "loopback address of the same gRPC API in plain text, for mesh authz through a port-forward")
	fs.StringVar(&c.IdentityAddr, "identity-addr", c.IdentityAddr, "address of the identity service (TLS gRPC) proxies get certificates from")
	fs.StringVar(&c.IdentityIssuerDir, "identity-issuer-dir", c.IdentityIssuerDir, "directory with the issuer's tls.crt, tls.key and the trust anchors' ca.crt, reloaded on change")
	fs.DurationVar(&c.IdentityLeafLifetime, "identity-leaf-lifetime", c.IdentityLeafLifetime, "lifetime of workload certificates")
	fs.Float32Var(&c.IdentityReviewQPS, "identity-review-qps", c.IdentityReviewQPS, "queries per second of the Kubernetes client the identity service makes TokenReviews with, apart from the controller's other clients")
	fs.IntVar(&c.IdentityReviewBurst, "identity-review-burst", c.IdentityReviewBurst, "burst of the identity service's TokenReview client")
	fs.Float64Var(&c.IdentityClientRate, "identity-client-rate", c.IdentityClientRate, "certificate requests a second one client IP address may make after its burst; past it they are refused with RESOURCE_EXHAUSTED")
	fs.IntVar(&c.IdentityClientBurst, "identity-client-burst", c.IdentityClientBurst, "certificate requests one client IP address may make at once")
	fs.IntVar(&c.IdentityMaxBundleWatches, "identity-max-bundle-watches", c.IdentityMaxBundleWatches, "trust-bundle streams open at once (one per meshed pod); more are refused with RESOURCE_EXHAUSTED")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", c.ClusterDomain, "the cluster's DNS domain")
	fs.StringVar(&c.TrustDomain, "trust-domain", c.TrustDomain, "SPIFFE trust domain of workload identities")
	fs.StringVar(&c.DefaultInboundPolicy, "default-inbound-policy", c.DefaultInboundPolicy,
		"policy of the ports no Server selects, unless the namespace or pod annotation "+names.AnnotationDefaultInboundPolicy+
			" says otherwise: "+strings.Join(names.DefaultInboundPolicies, ", "))
	fs.Var(&prefixesValue{&c.ClusterNetworks}, "cluster-networks",
		"the cluster's pod, service and node networks, comma-separated CIDRs: the cluster-* default policies allow them, and proxies never send plain text inside them")
	fs.TextVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: json or text")
}

// Validate reports configuration the controller cannot run with.
func (c Config) Validate() error {
	switch {
	case c.ProxyImage == "":
		return errors.New("--proxy-image is required: the mesh-proxy image injected pods run")
	case c.Namespace == "":
		return errors.New("--namespace must not be empty")
	case c.WebhookAddr == "" || c.AdminAddr == "" || c.WebhookTLSDir == "" || c.GRPCAddr == "":
		return errors.New("--webhook-addr, --webhook-tls-dir, --admin-addr and --grpc-addr must not be empty")
	case c.GRPCLocalAddr != "" && !isLoopback(c.GRPCLocalAddr):
		return fmt.Errorf("--grpc-local-addr %q: must be a loopback address like 127.0.0.1:8087 (it serves without authentication)", c.GRPCLocalAddr)
	case c.IdentityAddr == "" || c.IdentityIssuerDir == "":
		return errors.New("--identity-addr and --identity-issuer-dir must not be empty")
	case c.IdentityLeafLifetime < time.Minute:
		return fmt.Errorf("--identity-leaf-lifetime %s: must be at least a minute", c.IdentityLeafLifetime)
	case c.LogFormat != "json" && c.LogFormat != "text":
		return fmt.Errorf("--log-format must be json or text, got %q", c.LogFormat)
	case len(c.ClusterNetworks) == 0:
		return fmt.Errorf("--cluster-networks must name at least one CIDR, like %s", clusternet.Format(clusternet.Default()))
	}
	if _, err := names.ParseDefaultInboundPolicy(c.DefaultInboundPolicy); err != nil {
		return fmt.Errorf("--default-inbound-policy: %w", err)
	}
	for _, p := range c.ClusterNetworks {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("--cluster-networks: %v is not a CIDR without host bits, like 10.0.0.0/8", p)
		}
	}
	if err := c.injectConfig("").Validate(); err != nil {
		return err
	}
	return nil
}

// injectConfig is what injected pods get; anchors is the PEM trust bundle
// their proxies check the identity service with.
func (c Config) injectConfig(anchors string) inject.Config {
	return inject.Config{
		ProxyImage: c.ProxyImage, Version: c.Version, ControlPlaneNamespace: c.Namespace,
		TrustDomain: c.TrustDomain, TrustAnchors: anchors, ClusterNetworks: c.ClusterNetworks,
	}
}

// isLoopback reports whether the host of addr is a loopback IP address.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// NewLogger returns a logger of level and format ("json" or "text", as
// --log-format), writing to w.
func NewLogger(level slog.Level, format string, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Run starts every component and returns when ctx is done (nil) or when one
// of them fails (its error, after stopping the others).
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.logTo == nil {
		cfg.logTo = os.Stderr
	}
	log := NewLogger(cfg.LogLevel, cfg.LogFormat, cfg.logTo)
	client, dyn := cfg.client, cfg.dynamic
	if client == nil {
		var err error
		if client, dyn, err = newClients(cfg.Kubeconfig); err != nil {
			return err
		}
	}
	if dyn == nil {
		return errors.New("controller: a test's client needs a dynamic client too")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var state readiness
	ids, anchors, err := newIdentity(cfg, client, log, reg)
	if err != nil {
		return err
	}

	// The injector reads namespaces from this cache only, so it answers
	// without a call to the API server per pod.
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		// Every pod of the cluster is cached: managed fields are the
		// biggest part of an object and nothing here reads them.
		informers.WithTransform(stripManagedFields))
	// The policy.mesh.dev kinds have no typed clientset: a dynamic
	// informer factory of their own, converted to the typed structs.
	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	// Both nil when the cluster serves no Gateway API routes.
	gwClient, gwFactory, err := gatewayAPI(ctx, cfg, client, log)
	if err != nil {
		return err
	}
	// The factories' Shutdown waits for informers that stop only when ctx
	// ends, so it is deferred first, to run after the cancel below.
	defer factory.Shutdown()
	defer dynFactory.Shutdown()
	if gwFactory != nil {
		defer gwFactory.Shutdown()
	}
	// Every return, early or not, cancels ctx and waits for what was
	// started: a failure while setting up must not leave the admin server
	// running, nor the factories' Shutdown waiting for ever.
	ctx, cancel := context.WithCancel(ctx)
	g, ctx := errgroup.WithContext(ctx)
	defer func() {
		cancel()
		g.Wait()
	}()
	g.Go(func() error {
		return admin.Run(ctx, admin.Config{
			Addr: cfg.AdminAddr, Gatherer: reg, Ready: state.check, Log: log.With("component", "admin"),
			OnListen: func(a net.Addr) { cfg.listening("admin", a) },
		})
	})

	namespaces := factory.Core().V1().Namespaces().Lister()
	// Made before the components that record Events; it starts sending
	// them once the informers start.
	broadcaster := cfg.events
	if broadcaster == nil {
		broadcaster = events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	}
	// The route index and the destination service add their informers
	// and indexes to the factory, so they must come before Start.
	var routes *route.Index
	var routeSource destination.RouteSource // nil: Routes answers UNIMPLEMENTED
	if gwFactory != nil {
		routes, err = route.New(route.Config{Informers: factory, Gateway: gwFactory, Policy: dynFactory, Client: gwClient,
			Events: broadcaster.NewRecorder(scheme.Scheme, "mesh-controller"), Log: log.With("component", "route")})
		if err != nil {
			return fmt.Errorf("controller: %w", err)
		}
		routeSource = routes
	}
	dst, err := destination.New(destination.Config{
		Informers: factory, ClusterDomain: cfg.ClusterDomain, TrustDomain: cfg.TrustDomain,
		Routes: routeSource, Registerer: reg, Log: log.With("component", "destination"),
	})
	if err != nil {
		return err
	}
	state.destination = dst.Ready
	pol, err := policy.New(policy.Config{
		Informers: factory, DynamicInformers: dynFactory, StatusClient: dyn, TrustDomain: cfg.TrustDomain,
		Gateway: gwFactory, GatewayClient: gwClient,
		DefaultInboundPolicy: cfg.DefaultInboundPolicy, ClusterNetworks: cfg.ClusterNetworks,
		Registerer: reg, Log: log.With("component", "policy"),
	})
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	state.policy = pol.Ready
	factory.Start(ctx.Done())
	if err := broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
		return fmt.Errorf("controller: events: %w", err)
	}
	defer broadcaster.Shutdown()

	g.Go(func() error {
		for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
			if !ok {
				if ctx.Err() != nil {
					return nil // shut down before the first sync
				}
				return fmt.Errorf("controller: %v cache did not sync", typ)
			}
		}
		state.synced.Store(true)
		log.Info("namespace cache synced")
		return injector.Run(ctx, injector.Config{
			Addr:       cfg.WebhookAddr,
			TLSDir:     cfg.WebhookTLSDir,
			Inject:     cfg.injectConfig(anchors),
			Namespaces: namespaces,
			Events:     broadcaster.NewRecorder(scheme.Scheme, "mesh-injector"),
			Metrics:    injector.NewMetrics(reg),
			Log:        log.With("component", "injector"),
			Ready: func(a net.Addr) {
				state.webhook.Store(true)
				cfg.listening("injector", a)
			},
		})
	})
	g.Go(func() error { return pol.Run(ctx) })
	if routes != nil {
		g.Go(func() error { return routes.Run(ctx) })
	}
	g.Go(func() error { return serveGRPC(ctx, cfg, ids, dst, pol) })
	g.Go(func() error { return ids.Run(ctx) })
	g.Go(func() error { return serveIdentity(ctx, cfg, ids) })
	// Not ready from the moment shutdown starts, so no new work is sent.
	context.AfterFunc(ctx, func() { state.stopping.Store(true) })
	log.Info("mesh-controller starting", "version", version.Version, "namespace", cfg.Namespace, "proxy_image", cfg.ProxyImage,
		"default_inbound_policy", cfg.DefaultInboundPolicy, "cluster_networks", clusternet.Format(cfg.ClusterNetworks))
	return g.Wait()
}

// newIdentity loads the issuer and returns the identity service, with the
// trust anchors injected proxies start from. Later anchors reach running
// proxies over the service's trust-bundle stream; new pods get those the
// controller started with until it restarts (mesh install rolls it when
// the identity Secret changes).
func newIdentity(cfg Config, client kubernetes.Interface, log *slog.Logger, reg prometheus.Registerer) (*certify.Server, string, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, "", fmt.Errorf("controller: --trust-domain %q: %w", cfg.TrustDomain, err)
	}
	anchors, err := os.ReadFile(filepath.Join(cfg.IdentityIssuerDir, ca.AnchorsFile))
	if err != nil {
		return nil, "", fmt.Errorf("controller: identity trust anchors: %w", err)
	}
	// TokenReviews get a Kubernetes client with a rate of their own, so a
	// flood of junk tokens cannot use up the shared client's (issue 12). A
	// test's fake client is used as it is.
	var reviewer certify.TokenReviewer = certify.NewKubeTokenReviewer(client)
	if cfg.client == nil {
		rc, err := restConfig(cfg.Kubeconfig)
		if err != nil {
			return nil, "", err
		}
		rc.UserAgent = "mesh-controller/" + version.Version + " (token review)"
		if reviewer, err = certify.NewKubeTokenReviewerForConfig(rc, cfg.IdentityReviewQPS, cfg.IdentityReviewBurst); err != nil {
			return nil, "", fmt.Errorf("controller: --identity-review-qps/burst: %w", err)
		}
	}
	ids, err := certify.New(certify.Config{
		IssuerDir: cfg.IdentityIssuerDir, TrustDomain: td, LeafLifetime: cfg.IdentityLeafLifetime,
		Reviewer: reviewer, ClientRate: cfg.IdentityClientRate, ClientBurst: cfg.IdentityClientBurst,
		MaxBundleWatches: cfg.IdentityMaxBundleWatches,
		Log:              log.With("component", "identity"), Registerer: reg,
	})
	if err != nil {
		return nil, "", fmt.Errorf("controller: %w", err)
	}
	return ids, string(anchors), nil
}

// controllerID is the controller's own SPIFFE ID, the identity of its
// ServiceAccount: the identity service presents it to proxies (and to
// mesh-viz), which check it before they send their tokens.
func controllerID(cfg Config, ids *certify.Server) spiffeid.ID {
	return spiffeid.RequireFromSegments(ids.TrustDomain(), "ns", cfg.Namespace, "sa", names.ControllerServiceAccount)
}

// stripManagedFields drops what the informers would cache for nothing.
func stripManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}

func (c Config) listening(component string, a net.Addr) {
	if c.onListen != nil {
		c.onListen(component, a)
	}
}

// newClients connects with the kubeconfig file at path, or with the pod's
// service account when path is "": a clientset, and a dynamic client for
// the kinds that have none.
func newClients(path string) (kubernetes.Interface, dynamic.Interface, error) {
	rc, err := restConfig(path)
	if err != nil {
		return nil, nil, err
	}
	rc.UserAgent = "mesh-controller/" + version.Version
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("controller: kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("controller: kubernetes dynamic client: %w", err)
	}
	return client, dyn, nil
}

// restConfig loads the kubeconfig file at path, or the pod's service
// account when path is "".
func restConfig(path string) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if path == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", path)
	}
	if err != nil {
		return nil, fmt.Errorf("controller: kubernetes config: %w", err)
	}
	return rc, nil
}

// prefixesValue is a pflag.Value of comma-separated CIDRs, read and
// written as mesh-proxy's --cluster-networks.
type prefixesValue struct{ p *[]netip.Prefix }

func (v *prefixesValue) String() string {
	if v.p == nil {
		return ""
	}
	return clusternet.Format(*v.p)
}

func (v *prefixesValue) Set(s string) error {
	ps, err := clusternet.Parse(s)
	if err != nil {
		return err
	}
	if len(ps) == 0 {
		// An empty list would let every destination fall back to plain text.
		return fmt.Errorf("%w: give at least one CIDR, like %s", clusternet.ErrInvalid, clusternet.Format(clusternet.Default()))
	}
	*v.p = ps
	return nil
}

func (v *prefixesValue) Type() string { return "cidrs" }

// readiness is what /ready reports; its fields are set from the
// components' goroutines and read by probes.
type readiness struct {
	synced, webhook, stopping atomic.Bool
	// destination and policy say why those services cannot answer yet.
	destination, policy func() error
}

func (r *readiness) check() error {
	switch {
	case r.stopping.Load():
		return errors.New("shutting down")
	case !r.synced.Load():
		return errors.New("waiting for the namespace cache to sync with the API server")
	case !r.webhook.Load():
		return errors.New("the proxy injector is not listening yet")
	}
	for _, ready := range []func() error{r.destination, r.policy} {
		if ready == nil {
			continue
		}
		if err := ready(); err != nil {
			return err
		}
	}
	return nil
}
