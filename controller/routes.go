package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/mesh-dev/mesh/internal/version"
)

// gatewayAPI returns the Gateway API client and informer factory the
// route index uses, or nils when the cluster does not serve HTTPRoute and
// GRPCRoute of gateway.networking.k8s.io/v1: the mesh works without
// routes (docs/traffic.md 1), and informers of kinds the API server does
// not serve would retry their lists for ever. CRDs installed later take
// effect when the controller restarts (mesh install restarts it).
func gatewayAPI(ctx context.Context, cfg Config, client kubernetes.Interface, log *slog.Logger) (gatewayclient.Interface, gatewayinformers.SharedInformerFactory, error) {
	gv := gatewayv1.GroupVersion.String()
	list, err := client.Discovery().ServerResourcesForGroupVersionWithContext(ctx, gv)
	switch {
	case apierrors.IsNotFound(err):
		log.Info("the cluster serves no Gateway API routes: routes are off", "group_version", gv)
		return nil, nil, nil
	case err != nil:
		return nil, nil, fmt.Errorf("controller: discovering %s: %w", gv, err)
	}
	for _, want := range []string{"httproutes", "grpcroutes"} {
		if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == want }) {
			log.Info("the cluster does not serve a Gateway API route kind: routes are off", "group_version", gv, "resource", want)
			return nil, nil, nil
		}
	}
	gw := cfg.gateway
	if gw == nil {
		rc, err := restConfig(cfg.Kubeconfig)
		if err != nil {
			return nil, nil, err
		}
		rc.UserAgent = "mesh-controller/" + version.Version
		if gw, err = gatewayclient.NewForConfig(rc); err != nil {
			return nil, nil, fmt.Errorf("controller: Gateway API client: %w", err)
		}
	}
	return gw, gatewayinformers.NewSharedInformerFactoryWithOptions(gw, 0, gatewayinformers.WithTransform(stripManagedFields)), nil
}
