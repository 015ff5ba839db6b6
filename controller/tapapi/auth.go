package tapapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/request/headerrequest"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
)

// The ConfigMap the API server publishes its --requestheader-* flags in
// for extension API servers, readable with the Role
// extension-apiserver-authentication-reader in kube-system
// (https://kubernetes.io/docs/tasks/extend-kubernetes/configure-aggregation-layer/).
const (
	AuthConfigMapNamespace = "kube-system"
	AuthConfigMapName      = "extension-apiserver-authentication"
)

// Keys of the ConfigMap. Every one but the CA holds a JSON list of
// strings.
const (
	keyClientCA        = "requestheader-client-ca-file"
	keyAllowedNames    = "requestheader-allowed-names"
	keyUsernameHeaders = "requestheader-username-headers"
	keyUIDHeaders      = "requestheader-uid-headers"
	keyGroupHeaders    = "requestheader-group-headers"
	keyExtraPrefixes   = "requestheader-extra-headers-prefix"
)

// errUnauthenticated is wrapped by every refusal of frontProxy: the
// request did not come from the API server's front proxy with a user.
var errUnauthenticated = errors.New("unauthenticated")

// frontProxy authenticates the requests the API server's aggregation
// layer forwards: it trusts the user in the request headers only from a
// client certificate that chains, for client authentication, to the
// front-proxy CA and whose common name is an allowed one. The CA, the
// allowed names and the header names all come from the ConfigMap, and
// are followed as it changes (a rotated front-proxy CA needs no restart).
// This is k8s.io/apiserver's own request-header authenticator, the one
// every aggregated API server built on it uses.
type frontProxy struct {
	ca      *dynamiccertificates.ConfigMapCAController
	headers *headerrequest.RequestHeaderAuthRequestController
	auth    authenticator.Request
}

func newFrontProxy(client kubernetes.Interface) (*frontProxy, error) {
	ca, err := dynamiccertificates.NewDynamicCAFromConfigMapController("request-header",
		AuthConfigMapNamespace, AuthConfigMapName, keyClientCA, client)
	if err != nil {
		return nil, fmt.Errorf("front-proxy CA: %w", err)
	}
	headers := headerrequest.NewRequestHeaderAuthRequestController(AuthConfigMapName, AuthConfigMapNamespace, client,
		keyUsernameHeaders, keyUIDHeaders, keyGroupHeaders, keyExtraPrefixes, keyAllowedNames)
	provider := func(f func() []string) headerrequest.StringSliceProvider {
		return headerrequest.StringSliceProviderFunc(f)
	}
	auth := headerrequest.NewDynamicVerifyOptionsSecure(ca.VerifyOptions,
		provider(headers.AllowedClientNames), provider(headers.UsernameHeaders), provider(headers.UIDHeaders),
		provider(headers.GroupHeaders), provider(headers.ExtraHeaderPrefixes))
	return &frontProxy{ca: ca, headers: headers, auth: auth}, nil
}

// start follows the ConfigMap until ctx ends; wg counts the goroutines.
// Until the CA is loaded every request is refused.
func (f *frontProxy) start(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger) {
	if err := f.headers.RunOnce(ctx); err != nil {
		log.Error("tap API: cannot read the API server's request-header settings yet; it refuses every request until it can",
			"configmap", AuthConfigMapNamespace+"/"+AuthConfigMapName,
			"fix", "bind the Role extension-apiserver-authentication-reader in kube-system to mesh-viz's ServiceAccount (mesh install does)",
			"err", err)
	}
	wg.Go(func() { f.headers.Run(ctx, 1) })
	wg.Go(func() { f.ca.Run(ctx, 1) })
}

// loaded reports whether the front-proxy CA is known; without it the
// server cannot tell the API server from any other client.
func (f *frontProxy) loaded() bool {
	_, ok := f.ca.VerifyOptions()
	return ok
}

// authenticate returns the user the API server forwarded r for, and
// removes the user headers from r. Errors wrap errUnauthenticated and
// say why.
func (f *frontProxy) authenticate(r *http.Request) (user.Info, error) {
	resp, ok, err := f.auth.AuthenticateRequest(r)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: the client certificate is not the API server's front-proxy certificate: %v", errUnauthenticated, err)
	case ok:
		return resp.User, nil
	case r.TLS == nil || len(r.TLS.PeerCertificates) == 0:
		return nil, fmt.Errorf("%w: no client certificate: this API answers the Kubernetes API server only; use mesh viz tap", errUnauthenticated)
	case !f.loaded():
		return nil, fmt.Errorf("%w: the front-proxy CA (%s in ConfigMap %s/%s) is not loaded yet", errUnauthenticated,
			keyClientCA, AuthConfigMapNamespace, AuthConfigMapName)
	}
	return nil, fmt.Errorf("%w: the request names no user", errUnauthenticated)
}
