package cluster

import (
	"bytes"
	"embed"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

//go:embed templates/*
var templates embed.FS

// templateData is what the files under templates/ see.
type templateData struct {
	State, Name               string
	NodeIP, NodeName, PodCIDR string
	DNSIP, Domain             string
	PauseImage, CoreDNSImage  string
}

// rendered maps each template to where it is written under the state dir.
var rendered = map[string]string{
	"containerd.toml": "containerd/config.toml",
	"cni.conflist":    "cni/net.d/10-mesh.conflist",
	"kubelet.yaml":    "kubelet/config.yaml",
	"kube-proxy.yaml": "kube-proxy.yaml",
	"coredns.yaml":    "manifests/coredns.yaml",
}

// writeConfigs renders every configuration file of the cluster.
func writeConfigs(p paths, images infraImages) error {
	data := templateData{
		State: p.state, Name: p.name,
		NodeIP: NodeIP, NodeName: NodeName, PodCIDR: PodCIDR,
		DNSIP: DNSIP, Domain: Domain,
		PauseImage: images.pause, CoreDNSImage: images.coredns,
	}
	for src, dst := range rendered {
		b, err := render(src, data)
		if err != nil {
			return err
		}
		out := filepath.Join(p.state, dst)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(out, b, 0o644); err != nil {
			return err
		}
	}
	resolv := fmt.Sprintf("nameserver %s\nsearch %s\noptions ndots:5\n", DNSIP, Domain)
	return os.WriteFile(filepath.Join(p.kubelet, "resolv.conf"), []byte(resolv), 0o644)
}

func render(name string, data templateData) ([]byte, error) {
	t, err := template.New(name).Option("missingkey=error").ParseFS(templates, "templates/"+name)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
