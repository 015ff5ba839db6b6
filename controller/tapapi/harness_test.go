package tapapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"github.com/mesh-dev/mesh/internal/keypair"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The tests run the real server (Run) on a loopback port with real TLS
// and real certificates made here: a front-proxy CA and its client
// certificate as the API server holds them, and others that must be
// refused. The Kubernetes API is client-go's fake clientset: it serves
// the ConfigMap kube-system/extension-apiserver-authentication to the
// informers, and a reactor answers SubjectAccessReviews the way the test
// says, recording what was asked.

// frontProxyCN is the allowed name the tests' ConfigMap lists, as the
// local cluster's --requestheader-allowed-names does.
const frontProxyCN = "front-proxy-client"

// testCA issues certificates for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue signs a leaf for cn with the given extended key usage; server
// certificates are for 127.0.0.1.
func (ca *testCA) issue(t testing.TB, cn string, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// clientCert is a TLS client certificate for cn signed by ca.
func (ca *testCA) clientCert(t testing.TB, cn string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	cert, key := ca.issue(t, cn, usage)
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// writeServing writes tls.crt and tls.key for 127.0.0.1 into dir and
// returns the certificate. Its files get a modification time later than
// any before, so the reloader sees the change within the file system's
// time resolution.
func (ca *testCA) writeServing(t testing.TB, dir string) *x509.Certificate {
	t.Helper()
	cert, key := ca.issue(t, "mesh-viz", x509.ExtKeyUsageServerAuth)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	stamp := time.Now().Add(time.Duration(serial(t).Int64()%1000+1) * time.Second)
	for name, block := range map[string]*pem.Block{
		keypair.CertFile: {Type: "CERTIFICATE", Bytes: cert.Raw},
		keypair.KeyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, stamp, stamp); err != nil {
			t.Fatal(err)
		}
	}
	return cert
}

func pemCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

func pemKey(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// authConfigMap is the ConfigMap the API server publishes, trusting ca
// for front-proxy certificates named allowed.
func authConfigMap(ca *testCA, allowed ...string) *corev1.ConfigMap {
	list := func(v ...string) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: AuthConfigMapNamespace, Name: AuthConfigMapName},
		Data: map[string]string{
			keyClientCA:        string(ca.pem()),
			keyAllowedNames:    list(allowed...),
			keyUsernameHeaders: list("X-Remote-User"),
			keyGroupHeaders:    list("X-Remote-Group"),
			keyExtraPrefixes:   list("X-Remote-Extra-"),
		},
	}
}

// sars answers SubjectAccessReviews through a fake clientset reactor and
// records them; mu guards the fields.
type sars struct {
	mu      sync.Mutex
	allow   bool
	reason  string
	fail    error
	reviews []authorizationv1.SubjectAccessReviewSpec
}

func (s *sars) set(allow bool, reason string, fail error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allow, s.reason, s.fail = allow, reason, fail
}

func (s *sars) asked() []authorizationv1.SubjectAccessReviewSpec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]authorizationv1.SubjectAccessReviewSpec(nil), s.reviews...)
}

func (s *sars) react(action k8stesting.Action) (bool, runtime.Object, error) {
	sar := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reviews = append(s.reviews, sar.Spec)
	if s.fail != nil {
		return true, nil, s.fail
	}
	sar.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: s.allow, Reason: s.reason}
	return true, sar, nil
}

// harness is a running tap API.
type harness struct {
	addr     string
	client   *fake.Clientset
	proxyCA  *testCA // the front-proxy CA of the ConfigMap
	serverCA *testCA // signed the serving certificate
	tlsDir   string
	sars     *sars
	reg      *prometheus.Registry
	// stop ends Run and returns what it returned; the test's cleanup
	// calls it too.
	stop func() error
}

// start runs the tap API with tap as viz's handler, waits until it has
// loaded the front-proxy CA, and stops it when the test ends.
func start(t testing.TB, tap http.Handler) *harness {
	t.Helper()
	h := &harness{
		proxyCA:  newTestCA(t, "front-proxy-ca"),
		serverCA: newTestCA(t, "mesh-tap-ca"),
		tlsDir:   t.TempDir(),
		sars:     &sars{allow: true},
		reg:      prometheus.NewRegistry(),
	}
	h.serverCA.writeServing(t, h.tlsDir)
	h.client = fake.NewClientset(authConfigMap(h.proxyCA, frontProxyCN))
	h.client.PrependReactor("create", "subjectaccessreviews", h.sars.react)

	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Addr: "127.0.0.1:0", TLSDir: h.tlsDir, Client: h.client, Tap: tap,
			Registerer: h.reg, OnListen: func(a net.Addr) { listening <- a },
		})
	}()
	var once sync.Once
	var runErr error
	h.stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	select {
	case a := <-listening:
		h.addr = a.String()
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("Run returned %v after its context ended, want nil", err)
		}
	})
	h.waitAccepts(t, h.proxyCA.clientCert(t, frontProxyCN, x509.ExtKeyUsageClientAuth))
	return h
}

// waitAccepts waits until a discovery request with cert and a user is
// answered 200: the CA informer has synced.
func (h *harness) waitAccepts(t testing.TB, cert tls.Certificate) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := h.get(t, &cert, "/apis", asUser("alice"))
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server still refuses the front proxy: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client is an HTTPS client trusting the serving CA, presenting cert
// when it is not nil.
func (h *harness) httpClient(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: h.serverCA.pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}, Timeout: 20 * time.Second}
}

// headers are the front proxy's request headers.
type headers map[string][]string

func asUser(name string, groups ...string) headers {
	return headers{"X-Remote-User": {name}, "X-Remote-Group": groups}
}

// get sends GET path with the headers and returns the status and body.
func (h *harness) get(t testing.TB, cert *tls.Certificate, path string, hdr headers) (int, string) {
	t.Helper()
	resp, err := h.do(t, cert, path, hdr)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

func (h *harness) do(t testing.TB, cert *tls.Certificate, path string, hdr headers) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+h.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return h.httpClient(cert).Do(req)
}

// status decodes a metav1.Status answer.
func status(t testing.TB, body string) metav1.Status {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Kind != "Status" {
		t.Fatalf("body %q is not a metav1.Status (%v)", body, err)
	}
	return st
}

// tapStandIn is viz's tap handler as far as the tap API can tell: it
// records the request it got, sends each of lines flushed, waiting on
// next before each after the first, then holds the stream until the
// client goes away.
type tapStandIn struct {
	mu   sync.Mutex
	got  []*http.Request
	next chan struct{}
}

// tapRequestLine is the stand-in's first event: a sampled request, whose
// trace ID must reach the user as viz sent it.
const tapRequestLine = `{"type":"request","id":"web-1:1","traceId":"4bf92f3577b34da6a3ce929d0e0e4736"}`

func (s *tapStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.got = append(s.got, r)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-ndjson")
	for i, line := range []string{tapRequestLine, `{"type":"response","id":"web-1:1"}`} {
		if i > 0 {
			select {
			case <-s.next:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, line+"\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			return
		}
	}
	<-r.Context().Done()
}

func (s *tapStandIn) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.got...)
}

// errStandIn is an error the SubjectAccessReview reactor returns.
var errStandIn = errors.New("the API server is unreachable")

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
