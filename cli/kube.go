package cli

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mesh-dev/mesh/internal/version"
)

// ErrNoKubeconfig is returned when no kubeconfig names a cluster.
var ErrNoKubeconfig = errors.New("no cluster configured: pass --kubeconfig, set KUBECONFIG, or write ~/.kube/config (mesh reads the same configuration as kubectl)")

// requestTimeout bounds every single API request, so that an unreachable
// API server fails a command instead of hanging it.
const requestTimeout = 30 * time.Second

// kube holds the clients of one cluster.
type kube struct {
	// Server is the API server's URL and Context the kubeconfig context,
	// for messages.
	Server, Context string
	// rest is the loaded configuration without a request timeout, for
	// clients that hold a connection as long as the command runs (the
	// port-forward of mesh viz).
	rest      *rest.Config
	client    kubernetes.Interface
	dynamic   dynamic.Interface
	discovery discovery.DiscoveryInterfaceWithContext
	mapper    meta.RESTMapperWithContext
}

// kube loads the kubeconfig the flags and environment select and returns
// clients for its cluster. It does not contact the cluster.
func (o *Options) kube() (*kube, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, ErrNoKubeconfig
		}
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	contextName := o.Context
	if contextName == "" {
		if raw, err := cc.RawConfig(); err == nil {
			contextName = raw.CurrentContext
		}
	}
	cfg.UserAgent = "mesh/" + version.Version
	streaming := rest.CopyConfig(cfg)
	cfg.Timeout = requestTimeout
	// Install asks many access reviews and applies a dozen objects in a
	// row: the default 5 QPS would make that crawl.
	cfg.QPS, cfg.Burst = 50, 100
	cfg.WarningHandler = rest.NewWarningWriter(o.Err, rest.WarningWriterOptions{Deduplicate: true})

	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	disc := discovery.ToDiscoveryInterfaceWithContext(client.Discovery())
	return &kube{
		Server:    cfg.Host,
		Context:   contextName,
		rest:      streaming,
		client:    client,
		dynamic:   dyn,
		discovery: disc,
		mapper:    restmapper.NewDeferredDiscoveryRESTMapperWithContext(memory.NewMemCacheClientWithContext(disc)),
	}, nil
}
