package e2e

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

// The namespaces of TestControlPlaneSurfaces.
const (
	cpMeshNS  = "e2e-cp"
	cpPlainNS = "e2e-cp-plain"
)

// TestControlPlaneSurfaces runs, on one install, issue 12 test 1 for the
// proxies' API and test 8 (the Workload API), in parallel.
func TestControlPlaneSurfaces(t *testing.T) {
	needEnv(t)
	t.Parallel() // alongside the other tests that leave the mesh as they found it (main_test.go)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	// Parallel subtests run once their parent's function has returned: the
	// group keeps them inside this one, before ctx is cancelled.
	t.Run("group", func(t *testing.T) {
		t.Run("an ordinary pod gets nothing from the proxies' API", func(t *testing.T) {
			t.Parallel()
			testControlPlaneRefusesOrdinaryPods(t, ctx)
		})
		t.Run("the application's Workload API SVID has its own key", func(t *testing.T) {
			t.Parallel()
			testWorkloadAPIOwnKey(t, ctx)
		})
	})
}

// testControlPlaneRefusesOrdinaryPods is issue 12 test 1 for the proxies'
// API: from an unmeshed pod in another namespace, the controller's
// destination and policy API answers nothing, neither in plain text nor
// over TLS without a mesh certificate, and its plain-text loopback port is
// not reachable on the pod IP. (The viz API, tap and the admin port have
// theirs in TestViz, TestTap and TestAdminPort.)
func testControlPlaneRefusesOrdinaryPods(t *testing.T, ctx context.Context) {
	outsider := startOutsider(t, ctx)
	controller := runningPods(t, ctx, manifests.DefaultNamespace, "app.kubernetes.io/name=mesh-controller")[0]
	ip := controller.Status.PodIP
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return outsider.dial(ctx, "tcp", addr) }

	t.Run("plain text on 8086", func(t *testing.T) {
		err := askDestination(ctx, net.JoinHostPort(ip, "8086"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dial))
		if err == nil {
			t.Fatal("a plain-text client from an unmeshed pod got destination answers from the controller's port 8086")
		}
		t.Logf("refused: %v", err)
	})
	t.Run("TLS without a mesh certificate on 8086", func(t *testing.T) {
		// The attacker does not even check the server: all it lacks is a
		// certificate of the mesh.
		creds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})
		err := askDestination(ctx, net.JoinHostPort(ip, "8086"), grpc.WithTransportCredentials(creds), grpc.WithContextDialer(dial))
		if err == nil {
			t.Fatal("a TLS client without a certificate got destination answers from the controller's port 8086")
		}
		t.Logf("refused: %v", err)
		cc, err := grpc.NewClient(net.JoinHostPort(ip, "8086"), grpc.WithTransportCredentials(creds), grpc.WithContextDialer(dial))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stream, err := inboundv1.NewInboundPolicyClient(cc).Watch(rctx, &inboundv1.WatchRequest{Namespace: cpMeshNS, Pod: "any"})
		if err == nil {
			_, err = stream.Recv()
		}
		if err == nil {
			t.Fatal("a TLS client without a certificate got a policy from the controller's port 8086")
		}
	})
	t.Run("the loopback port 8087 on the pod IP", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c, err := dial(dctx, net.JoinHostPort(ip, "8087"))
		if err == nil {
			c.Close()
			t.Fatalf("the controller's plain-text port 8087 accepted a connection on its pod IP %s", ip)
		}
	})
}

// askDestination asks the destination API at addr about the Kubernetes
// API's Service and returns the first failure, or nil once it answered.
func askDestination(ctx context.Context, addr string, opts ...grpc.DialOption) error {
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := destinationv1.NewDestinationClient(cc).Get(ctx, &destinationv1.GetDestinationRequest{
		Authority: "kubernetes.default.svc.cluster.local:443",
	})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// startOutsider deploys an unmeshed client pod in its own namespace and
// returns a client whose sockets live in its network namespace.
func startOutsider(t *testing.T, ctx context.Context) *podClient {
	t.Helper()
	client := demoApp{ns: cpPlainNS, name: "outsider", args: []string{"echo", "--admin-addr", ""}}
	mustRun(t, ctx, []byte(plainNamespaceManifest(cpPlainNS)+"---\n"+client.manifest()), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, cpPlainNS)
	})
	waitDeployments(t, ctx, cpPlainNS, 3*time.Minute)
	return newPodClient(t, ctx, cpPlainNS, "outsider")
}

// testWorkloadAPIOwnKey is issue 12 test 8: the application of a meshed
// pod, asking the Workload API socket the injector mounted in its
// container, gets an SVID of the pod's identity that certifies a key of
// its own, not the proxy's.
func testWorkloadAPIOwnKey(t *testing.T, ctx context.Context) {
	server := demoApp{ns: cpMeshNS, name: "echo", args: []string{"echo"}, port: 8080, portName: "http"}
	mustRun(t, ctx, []byte(namespaceManifest(cpMeshNS)+"---\n"+server.manifest()), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, cpMeshNS)
	})
	waitDeployments(t, ctx, cpMeshNS, 3*time.Minute)
	pod := runningPods(t, ctx, cpMeshNS, "app=echo")[0]

	// The socket as the application sees it, reached through the root of
	// a process of its container.
	var id string
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == "app" {
			_, id, _ = strings.Cut(cs.ContainerID, "://")
		}
	}
	proc, err := containerProc(id)
	if err != nil {
		t.Fatalf("pod %s: %v", pod.Name, err)
	}
	socket := filepath.Join(proc, "root", names.SPIFFESocketDir, "socket")
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	app, err := spiffewl.FetchX509SVID(fctx, spiffewl.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatalf("the application's Workload API (%s): %v", socket, err)
	}
	sa := pod.Spec.ServiceAccountName
	if want := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", cpMeshNS, sa); app.ID.String() != want {
		t.Errorf("the application's SVID is %s, want the pod's identity %s", app.ID, want)
	}

	b, err := adminGet(ctx, &pod, "/identity")
	if err != nil {
		t.Fatal(err)
	}
	var proxyID struct {
		Chain string `json:"chain_pem"`
	}
	if err := json.Unmarshal(b, &proxyID); err != nil {
		t.Fatalf("/identity: %v\n%s", err, b)
	}
	block, _ := pem.Decode([]byte(proxyID.Chain))
	if block == nil {
		t.Fatalf("/identity has no certificate:\n%s", b)
	}
	proxyCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	type publicKey interface{ Equal(crypto.PublicKey) bool }
	appKey := app.Certificates[0].PublicKey.(publicKey)
	if appKey.Equal(proxyCert.PublicKey) {
		t.Errorf("the application's SVID (serial %x) certifies the proxy's own key (proxy serial %x)",
			app.Certificates[0].SerialNumber, proxyCert.SerialNumber)
	}
	if !appKey.Equal(app.PrivateKey.Public()) {
		t.Error("the application's SVID does not certify the private key it was handed")
	}
	t.Logf("application %s serial %x, proxy serial %x: two keys", app.ID, app.Certificates[0].SerialNumber, proxyCert.SerialNumber)
}
