package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"

	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/controller/destination"
	"github.com/mesh-dev/mesh/controller/policy"
	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/version"
)

// The controller subcommand is the lab's control plane. It serves what
// mesh-controller serves the proxies, with the same packages: the identity
// service (identity/certify, TLS with the controller's own SVID) and the
// destination and inbound policy services (controller/destination,
// controller/policy, mesh TLS requiring a client certificate of the trust
// domain). Only the Kubernetes API is a stand-in: client-go's fake
// clientset holds the lab's namespaces and pods, and answers TokenReviews
// for the tokens the lab gave the proxies, as the API server answers for
// projected ServiceAccount tokens.

// controllerConfig is the control plane of one lab, read from a JSON file.
type controllerConfig struct {
	// IssuerDir holds the issuer's tls.crt, tls.key and ca.crt (identity/ca).
	IssuerDir   string `json:"issuer_dir"`
	TrustDomain string `json:"trust_domain"`
	// IdentityAddr serves the identity service, APIAddr the destination
	// and inbound policy services; port 0 picks a free one.
	IdentityAddr string `json:"identity_addr"`
	APIAddr      string `json:"api_addr"`
	// Pods are the meshed pods the cluster holds.
	Pods []podSpec `json:"pods"`
}

// podSpec is one meshed pod of the fake cluster.
type podSpec struct {
	Name           string `json:"name"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"service_account"`
	IP             string `json:"ip"`
	// Port is the application's container port.
	Port int32 `json:"port"`
	// Token is the pod's projected ServiceAccount token for the identity
	// service's audience.
	Token string `json:"token"`
}

// controllerID is the SPIFFE ID the control plane serves as, the
// controller's ServiceAccount identity, which proxies are told to expect.
func controllerID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", names.DefaultControlPlaneNamespace, "sa", names.ControllerServiceAccount)
}

// controllerMain is the controller subcommand: it serves until it is
// stopped, and prints "ready" on stdout once both listeners serve and the
// caches are filled.
func controllerMain(ctx context.Context, args []string) error {
	var path string
	fs := pflag.NewFlagSet("meshpath controller", pflag.ContinueOnError)
	fs.StringVar(&path, "config", "", "JSON file with the control plane's configuration")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return usageError{fmt.Errorf("--config: %w", err)}
	}
	var cfg controllerConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return usageError{fmt.Errorf("--config %s: %w", path, err)}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return runController(ctx, cfg, log, func(identity, api net.Addr) {
		fmt.Printf("ready identity=%s api=%s\n", identity, api)
	})
}

// runController serves cfg's control plane until ctx ends, calling ready
// with the bound addresses once both listeners serve.
func runController(ctx context.Context, cfg controllerConfig, log *slog.Logger, ready func(identity, api net.Addr)) error {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust domain %q: %w", cfg.TrustDomain, err)
	}
	scheme := runtime.NewScheme()
	if err := policyv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	client := fake.NewClientset(clusterObjects(cfg.Pods)...)
	client.PrependReactor("create", "tokenreviews", reviewTokens(cfg.Pods))
	factory := informers.NewSharedInformerFactory(client, 0)
	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(dynamicfake.NewSimpleDynamicClient(scheme), 0)
	// Shutdown waits for informers that stop when ctx ends: deferred
	// first, it runs after the errgroup below has returned.
	defer factory.Shutdown()
	defer dynFactory.Shutdown()

	ids, err := certify.New(certify.Config{
		IssuerDir: cfg.IssuerDir, TrustDomain: td, Reviewer: certify.NewKubeTokenReviewer(client),
		Log: log.With("component", "identity"),
	})
	if err != nil {
		return err
	}
	dst, err := destination.New(destination.Config{Informers: factory, TrustDomain: td.Name(), Log: log.With("component", "destination")})
	if err != nil {
		return err
	}
	pol, err := policy.New(policy.Config{
		Informers: factory, DynamicInformers: dynFactory, TrustDomain: td.Name(),
		Log: log.With("component", "policy"),
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())

	var lc net.ListenConfig
	identityLn, err := lc.Listen(ctx, "tcp", cfg.IdentityAddr)
	if err != nil {
		return fmt.Errorf("identity listener: %w", err)
	}
	apiLn, err := lc.Listen(ctx, "tcp", cfg.APIAddr)
	if err != nil {
		identityLn.Close()
		return fmt.Errorf("destination and policy listener: %w", err)
	}
	self := controllerID(td)
	identitySrv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ids.TLSConfig(self))))
	ids.Register(identitySrv)
	apiSrv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ids.MTLSServerConfig(self))))
	dst.Register(apiSrv)
	pol.Register(apiSrv)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ids.Run(gctx) })
	g.Go(func() error { return pol.Run(gctx) })
	g.Go(func() error { return serveUntil(gctx, identitySrv, identityLn) })
	g.Go(func() error {
		// As mesh-controller does: the proxies' API serves once the
		// destination caches are filled.
		if err := dst.Start(gctx); err != nil {
			apiLn.Close()
			if gctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case <-pol.Synced():
		case <-gctx.Done():
			apiLn.Close()
			return nil
		}
		ready(identityLn.Addr(), apiLn.Addr())
		return serveUntil(gctx, apiSrv, apiLn)
	})
	return g.Wait()
}

// serveUntil serves srv on ln until ctx ends, then stops it gracefully:
// ids.Run, dst.Start and pol.Run end their streams when ctx does.
func serveUntil(ctx context.Context, srv *grpc.Server, ln net.Listener) error {
	stop := context.AfterFunc(ctx, srv.GracefulStop)
	defer stop()
	if err := srv.Serve(ln); err != nil {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	return nil
}

// clusterObjects are the namespaces and pods of the fake cluster: each pod
// running, meshed (it carries mesh.dev/proxy-version, as the injector
// leaves it) and with its IP.
func clusterObjects(pods []podSpec) []runtime.Object {
	namespaces := []string{names.DefaultControlPlaneNamespace}
	var out []runtime.Object
	for _, p := range pods {
		if !slices.Contains(namespaces, p.Namespace) {
			namespaces = append(namespaces, p.Namespace)
		}
		out = append(out, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: p.Name, Namespace: p.Namespace, CreationTimestamp: metav1.Now(),
				Labels:      map[string]string{"app": p.Name},
				Annotations: map[string]string{names.AnnotationProxyVersion: version.Version},
			},
			Spec: corev1.PodSpec{
				ServiceAccountName: p.ServiceAccount,
				Containers: []corev1.Container{{
					Name: "app", Image: "bench.invalid/app",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: p.Port, Protocol: corev1.ProtocolTCP}},
				}},
			},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP, PodIPs: []corev1.PodIP{{IP: p.IP}}},
		})
	}
	for _, ns := range namespaces {
		out = append(out, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	return out
}

// reviewTokens answers TokenReviews as the API server does for projected
// ServiceAccount tokens: a pod's token is accepted for the identity
// service's audience as its ServiceAccount, bound to the pod; anything
// else is not authenticated.
func reviewTokens(pods []podSpec) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		create, ok := a.(k8stesting.CreateAction)
		if !ok {
			return false, nil, nil
		}
		review, ok := create.GetObject().(*authnv1.TokenReview)
		if !ok {
			return false, nil, nil
		}
		out := review.DeepCopy()
		out.Status = authnv1.TokenReviewStatus{Error: "the token is none of the lab's pods'"}
		for _, p := range pods {
			if subtle.ConstantTimeCompare([]byte(p.Token), []byte(review.Spec.Token)) != 1 {
				continue
			}
			if !slices.Contains(review.Spec.Audiences, names.IdentityTokenAudience) {
				out.Status.Error = "the token is not for the audiences asked for"
				break
			}
			out.Status = authnv1.TokenReviewStatus{
				Authenticated: true,
				Audiences:     []string{names.IdentityTokenAudience},
				User: authnv1.UserInfo{
					Username: "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount,
					Extra:    map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {p.Name}},
				},
			}
			break
		}
		return true, out, nil
	}
}
