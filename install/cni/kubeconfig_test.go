package cni

import (
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

func TestKubeconfig(t *testing.T) {
	data, err := Kubeconfig{Server: "https://10.96.0.1:443", CA: []byte("-----BEGIN CERTIFICATE-----\n"), Token: "tok"}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// Read back the way the plugin reads it.
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		t.Fatalf("%s\n%v", data, err)
	}
	if cfg.Host != "https://10.96.0.1:443" || cfg.BearerToken != "tok" || string(cfg.CAData) != "-----BEGIN CERTIFICATE-----\n" {
		t.Errorf("read back host %q token %q CA %q", cfg.Host, cfg.BearerToken, cfg.CAData)
	}
	if _, err := (Kubeconfig{Server: "https://x"}).Marshal(); err == nil {
		t.Error("a kubeconfig without a token was written")
	}
}

func TestServerFromEnv(t *testing.T) {
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if got, err := ServerFromEnv(lookup); err != nil || got != "https://[fd00::1]:443" {
		t.Errorf("ServerFromEnv = %q, %v", got, err)
	}
	delete(env, "KUBERNETES_SERVICE_PORT")
	if _, err := ServerFromEnv(lookup); err == nil || !strings.Contains(err.Error(), "--api-server") {
		t.Errorf("without the env: %v, want a hint to --api-server", err)
	}
}
