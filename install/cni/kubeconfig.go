package cni

import (
	"fmt"
	"net"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Kubeconfig is what the plugin needs to read pods: the API server as the
// node reaches it, its CA, and the installer's ServiceAccount token.
type Kubeconfig struct {
	// Server is the API server's URL, e.g. https://10.96.0.1:443.
	Server string
	// CA is the PEM of the API server's CA bundle.
	CA []byte
	// Token is the bearer token.
	Token string
}

// ServerFromEnv is the API server's URL from the Service environment
// Kubernetes gives every pod (KUBERNETES_SERVICE_HOST and _PORT), the
// address in-cluster clients use; the installer runs on the host network,
// where the node reaches it too.
func ServerFromEnv(lookup func(string) (string, bool)) (string, error) {
	host, _ := lookup("KUBERNETES_SERVICE_HOST")
	port, _ := lookup("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "", fmt.Errorf("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: run the installer in a pod, or pass --api-server")
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// Marshal renders the kubeconfig file. The token and CA are inline, so the
// file is complete on the node, where the pod's ServiceAccount mount is not
// visible.
func (k Kubeconfig) Marshal() ([]byte, error) {
	if k.Server == "" || k.Token == "" {
		return nil, fmt.Errorf("kubeconfig: server and token are required")
	}
	const name = PluginType
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: k.Server, CertificateAuthorityData: k.CA}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: k.Token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	return clientcmd.Write(*cfg)
}
