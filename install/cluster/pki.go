package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// identity is one static-token user of the cluster. Every component and the
// admin authenticate with a token from the apiserver's --token-auth-file:
// simpler than a client certificate per component, and enough for a local
// test cluster.
type identity struct {
	file   string // kubeconfig file name under the state dir
	user   string
	groups []string
}

var identities = []identity{
	{file: "kubeconfig", user: "mesh-admin", groups: []string{"system:masters"}},
	{file: "controller-manager.kubeconfig", user: "system:kube-controller-manager"},
	{file: "scheduler.kubeconfig", user: "system:kube-scheduler"},
	{file: "kubelet.kubeconfig", user: "system:node:" + NodeName, groups: []string{"system:nodes"}},
	{file: "kube-proxy.kubeconfig", user: "system:kube-proxy", groups: []string{"system:node-proxier"}},
}

// writePKI creates the cluster CA, the apiserver's serving certificate, its
// client certificate towards kubelets, the ServiceAccount signing key pair,
// the token file and one kubeconfig per identity.
func writePKI(p paths) error {
	if err := os.MkdirAll(p.pki, 0o700); err != nil {
		return err
	}
	ca, caKey, err := newCA("mesh-cluster-ca")
	if err != nil {
		return err
	}
	if err := writeCert(filepath.Join(p.pki, "ca"), ca, caKey); err != nil {
		return err
	}
	if err := writeFrontProxyPKI(p); err != nil {
		return err
	}
	serving := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc." + Domain, "localhost", NodeName},
		IPAddresses: []net.IP{net.ParseIP(NodeIP), net.ParseIP(APIServerIP), net.ParseIP("127.0.0.1")},
	}
	kubeletClient := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for name, tmpl := range map[string]*x509.Certificate{"apiserver": serving, "apiserver-kubelet-client": kubeletClient} {
		if err := issue(filepath.Join(p.pki, name), tmpl, ca, caKey); err != nil {
			return err
		}
	}
	// ServiceAccount tokens are signed with RSA: RS256 is the one algorithm
	// every verifier of Kubernetes tokens accepts.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := writeKeyPair(filepath.Join(p.pki, "sa"), saKey); err != nil {
		return err
	}
	return writeTokens(p, ca)
}

// writeFrontProxyPKI creates what the apiserver's aggregation layer needs:
// a CA of its own, as kubeadm makes, and the client certificate the
// apiserver presents when it forwards a request to an extension API server
// (mesh-viz's tap API), which trusts the user headers only from it.
func writeFrontProxyPKI(p paths) error {
	ca, key, err := newCA("mesh-cluster-front-proxy-ca")
	if err != nil {
		return err
	}
	if err := writeCert(filepath.Join(p.pki, "front-proxy-ca"), ca, key); err != nil {
		return err
	}
	client := &x509.Certificate{
		Subject:     pkix.Name{CommonName: frontProxyClient},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return issue(filepath.Join(p.pki, "front-proxy-client"), client, ca, key)
}

// frontProxyClient is the aggregation layer's client certificate's name,
// the one name --requestheader-allowed-names accepts.
const frontProxyClient = "front-proxy-client"

func newCA(name string) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func issue(base string, tmpl, ca *x509.Certificate, caKey crypto.Signer) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().AddDate(10, 0, 0)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	return writeCert(base, cert, key)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

// writeCert writes base.crt and base.key.
func writeCert(base string, cert *x509.Certificate, key crypto.Signer) error {
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if err := os.WriteFile(base+".crt", crt, 0o644); err != nil {
		return err
	}
	return writeKey(base+".key", key)
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeKeyPair writes base.key and base.pub.
func writeKeyPair(base string, key crypto.Signer) error {
	if err := writeKey(base+".key", key); err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	return os.WriteFile(base+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

// writeTokens writes the apiserver's token file and a kubeconfig per
// identity, each pointing at the apiserver by its node address.
func writeTokens(p paths, ca *x509.Certificate) error {
	var lines []string
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	for i, id := range identities {
		tok := make([]byte, 24)
		if _, err := rand.Read(tok); err != nil {
			return err
		}
		token := hex.EncodeToString(tok)
		// token,user,uid,"group1,group2" (kube-apiserver --token-auth-file).
		lines = append(lines, fmt.Sprintf("%s,%s,%d,%q", token, id.user, 1000+i, strings.Join(id.groups, ",")))
		kc := kubeconfig(caPEM, id.user, token)
		if err := os.WriteFile(filepath.Join(p.state, id.file), []byte(kc), 0o600); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(p.pki, "tokens.csv"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}

func kubeconfig(caPEM []byte, user, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: https://%[2]s:6443
    certificate-authority-data: %[3]s
users:
- name: %[4]s
  user:
    token: %[5]s
contexts:
- name: %[1]s
  context:
    cluster: %[1]s
    user: %[4]s
current-context: %[1]s
`, DefaultName, NodeIP, b64(caPEM), user, token)
}
