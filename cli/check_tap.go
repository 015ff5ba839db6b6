package cli

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/mesh-dev/mesh/identity/pki"
	"github.com/mesh-dev/mesh/install/certs"
	"github.com/mesh-dev/mesh/install/manifests"
)

// The checks of the tap API (tap.mesh.dev), which mesh viz tap and the
// dashboard's tap reach through the API server. An APIService that is not
// Available also fails discovery for every client of the cluster (kubectl
// prints "unable to retrieve the complete list of server APIs"), so a
// broken one is worth a failure, not a warning.

// apiServiceGVR is the aggregation layer's registration, read with the
// dynamic client: its typed client lives in k8s.io/kube-aggregator.
var apiServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// tapAPIService reads the APIService of the tap API.
func tapAPIService(ctx context.Context, c *checker) (*unstructured.Unstructured, error) {
	api, err := c.k.dynamic.Resource(apiServiceGVR).Get(ctx, manifests.TapAPIServiceName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no APIService %s, so mesh viz tap cannot work: run mesh install", manifests.TapAPIServiceName)
	}
	if err != nil {
		return nil, fmt.Errorf("read APIService %s: %w", manifests.TapAPIServiceName, err)
	}
	return api, nil
}

// checkTapAPIService: the APIService calls mesh-viz in the control plane's
// namespace, and the API server reports it Available.
func checkTapAPIService(ctx context.Context, c *checker) (string, error) {
	api, err := tapAPIService(ctx, c)
	if err != nil {
		return "", err
	}
	ns, _, _ := unstructured.NestedString(api.Object, "spec", "service", "namespace")
	name, _, _ := unstructured.NestedString(api.Object, "spec", "service", "name")
	if ns != c.ns || name != manifests.TapServiceName {
		return "", fmt.Errorf("APIService %s calls service %s/%s, not %s/%s: another control plane owns tap; run mesh install to take it over",
			manifests.TapAPIServiceName, ns, name, c.ns, manifests.TapServiceName)
	}
	status, reason, message := apiServiceAvailable(api)
	if status == string(metav1.ConditionTrue) {
		return "service " + ns + "/" + name, nil
	}
	return "", fmt.Errorf("APIService %s is not available (%s: %s): %s",
		manifests.TapAPIServiceName, reason, message, tapUnavailableHint(reason, c.ns))
}

// apiServiceAvailable returns the status, reason and message of the
// APIService's Available condition; status "" when there is none yet.
func apiServiceAvailable(api *unstructured.Unstructured) (status, reason, message string) {
	conditions, _, _ := unstructured.NestedSlice(api.Object, "status", "conditions")
	for _, c := range conditions {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Available" {
			continue
		}
		status, _ = m["status"].(string)
		reason, _ = m["reason"].(string)
		message, _ = m["message"].(string)
		return status, reason, message
	}
	return "", "NoCondition", "the API server has not checked it yet"
}

// tapUnavailableHint says what to do about the API server's reason
// (kube-aggregator's available controller).
func tapUnavailableHint(reason, ns string) string {
	switch reason {
	case "ServiceNotFound", "MissingEndpoints", "EndpointsNotFound", "ServicePortError":
		return fmt.Sprintf("the API server finds no ready %s pod behind service %s/%s: see the mesh-viz check above",
			manifests.TapServiceName, ns, manifests.TapServiceName)
	case "FailedDiscoveryCheck":
		return fmt.Sprintf("the API server cannot get a good answer from %s: a 401 means %s does not accept the API server's "+
			"front-proxy certificate (is the API server run with --requestheader-client-ca-file and --proxy-client-cert-file?); "+
			"a certificate error means the caBundle and secret %s/%s disagree (run mesh install); see kubectl -n %s logs deployment/%s",
			manifests.TapServiceName, manifests.TapServiceName, ns, manifests.TapTLSSecretName, ns, manifests.TapServiceName)
	}
	return fmt.Sprintf("see kubectl get apiservice %s -o yaml, and kubectl -n %s logs deployment/%s",
		manifests.TapAPIServiceName, ns, manifests.TapServiceName)
}

// checkTapCert: the APIService's caBundle verifies mesh-viz's serving
// certificate for the name the API server dials, long enough ahead.
func checkTapCert(ctx context.Context, c *checker) (string, error) {
	api, err := tapAPIService(ctx, c)
	if err != nil {
		return "", err
	}
	caB64, _, _ := unstructured.NestedString(api.Object, "spec", "caBundle")
	caBundle, err := base64.StdEncoding.DecodeString(caB64)
	if err != nil || len(caBundle) == 0 {
		return "", fmt.Errorf("APIService %s has no valid caBundle: run mesh install", manifests.TapAPIServiceName)
	}
	secret, err := c.k.client.CoreV1().Secrets(c.ns).Get(ctx, manifests.TapTLSSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("no secret %s in namespace %s: run mesh install", manifests.TapTLSSecretName, c.ns)
	}
	if err != nil {
		return "", err
	}
	dnsName := certs.ServiceDNSNames(manifests.TapServiceName, c.ns)[0]
	s, err := certs.ParseServing(caBundle, secret.Data["tls.crt"], secret.Data["tls.key"])
	if err == nil {
		err = s.Validate(dnsName, c.now)
	}
	if err != nil {
		return "", fmt.Errorf("the API server would refuse the tap API's certificate: %s\nrun mesh install to issue a new one",
			strings.TrimSpace(err.Error()))
	}
	if pki.ExpiresWithin(s.Cert, c.now, servingRenewBefore) {
		return "", warnf("the tap API's serving certificate expires on %s: run mesh install to renew it", day(s.Cert.NotAfter))
	}
	return "valid until " + day(s.Cert.NotAfter), nil
}
