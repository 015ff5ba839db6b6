package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/manifests"
)

const rotateNS = "e2e-rotate"

// TestRotation runs live meshed traffic while certificates rotate every
// ~40s (one-minute leaves) and while a second trust anchor is added to the
// issuer Secret: no request may fail, the proxies must hold new
// certificates, and the new bundle must reach the running proxies without
// a restart.
func TestRotation(t *testing.T) {
	needEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	ns, deploy := manifests.DefaultNamespace, "deployment/"+manifests.ControllerName
	mustRun(t, ctx, nil, e2e.kubectl, "patch", "-n", ns, deploy, "--type=json", "-p",
		`[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--identity-leaf-lifetime=1m"}]`)
	mustRun(t, ctx, nil, e2e.kubectl, "rollout", "status", "-n", ns, deploy, "--timeout=3m")
	mustRun(t, ctx, []byte(namespaceManifest(rotateNS)+"---\n"+echoManifestIn(rotateNS, "echo", "echo", 1)), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, rotateNS)
	})
	waitDeployments(t, ctx, rotateNS, 3*time.Minute)
	server := rotatePod(t, ctx, "backend=echo")
	client := startLoadIn(t, ctx, rotateNS, loadJobIn(rotateNS, "rotate", "echo", "/", "", 20, 240*time.Second, 0), "rotate", true)

	// Both changes run together under the same load: the anchor takes
	// kubelet's secret-volume sync (up to a minute or two) to arrive.
	added := addTrustAnchor(t, ctx)
	start := time.Now()
	serials := map[string]bool{}
	poll(t, ctx, 2*time.Minute, "the server proxy on its third certificate", func(ctx context.Context) (bool, string, error) {
		id, err := proxyIdentity(ctx, server)
		if err != nil {
			return false, err.Error(), nil
		}
		serials[id.Serial] = true
		return len(serials) >= 3, fmt.Sprintf("%d certificates seen", len(serials)), nil
	})
	t.Logf("the server proxy went through %d certificates under load", len(serials))

	for _, pod := range []*corev1.Pod{server, client} {
		poll(t, ctx, 150*time.Second, "the new trust anchor in "+pod.Name+"'s proxy", func(ctx context.Context) (bool, string, error) {
			id, err := proxyIdentity(ctx, pod)
			if err != nil {
				return false, err.Error(), nil
			}
			for _, a := range id.TrustAnchors {
				if a.SHA256 == added {
					return true, "", nil
				}
			}
			return false, fmt.Sprintf("%d anchors", len(id.TrustAnchors)), nil
		})
	}
	t.Logf("the new trust anchor reached both running proxies %s after the Secret changed (kubelet's volume sync included)",
		time.Since(start).Round(time.Second))
	waitJobIn(t, ctx, rotateNS, "rotate", 3*time.Minute)
}

func rotatePod(t *testing.T, ctx context.Context, selector string) *corev1.Pod {
	t.Helper()
	pods, err := e2e.client.CoreV1().Pods(rotateNS).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("pods %s: %v", selector, err)
	}
	return &pods.Items[0]
}

// proxyIdentityJSON is a proxy's GET /identity.
type proxyIdentityJSON struct {
	SPIFFEID     string    `json:"spiffe_id"`
	Serial       string    `json:"serial"`
	NotAfter     time.Time `json:"not_after"`
	TrustAnchors []struct {
		SHA256 string `json:"sha256"`
	} `json:"trust_anchors"`
}

func proxyIdentity(ctx context.Context, pod *corev1.Pod) (proxyIdentityJSON, error) {
	var id proxyIdentityJSON
	b, err := adminGet(ctx, pod, "/identity")
	if err != nil {
		return id, err
	}
	return id, json.Unmarshal(b, &id)
}

// addTrustAnchor appends a new self-signed root to the issuer Secret's
// ca.crt, as the first step of a root rotation, and returns its SHA-256.
func addTrustAnchor(t *testing.T, ctx context.Context) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "e2e next root"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	secrets := e2e.client.CoreV1().Secrets(manifests.DefaultNamespace)
	s, err := secrets.Get(ctx, manifests.IssuerSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Data["ca.crt"] = append(s.Data["ca.crt"], pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
