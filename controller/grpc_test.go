package controller

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	"github.com/mesh-dev/mesh/controller/destination"
	"github.com/mesh-dev/mesh/controller/policy"
	"github.com/mesh-dev/mesh/identity/certify"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/internal/names"
)

// grpcEnv is serveGRPC running with the real identity, destination and
// policy services over fake Kubernetes clients, on loopback ports.
type grpcEnv struct {
	ca          *identitytest.CA
	controller  spiffeid.ID // the ID the server must prove
	mesh, local string      // the listeners' addresses
}

// startGRPC runs serveGRPC until the test ends, with pods b/web-0 (as
// ServiceAccount web) and a/x-0 (as x).
func startGRPC(t *testing.T) *grpcEnv {
	t.Helper()
	ca := identitytest.NewCA(t)
	dir := identitytest.NewSecretDir(t)
	ca.WriteSecret(t, dir)
	ids, err := certify.New(certify.Config{IssuerDir: dir.Path, TrustDomain: ca.TrustDomain,
		Reviewer: certify.TokenReviewerFunc(func(context.Context, string, string) (certify.TokenInfo, error) {
			return certify.TokenInfo{}, certify.ErrUnauthenticated
		})})
	if err != nil {
		t.Fatal(err)
	}
	pod := func(ns, name, sa string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{ServiceAccountName: sa}}
	}
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "b"}},
		pod("b", "web-0", "web"), pod("a", "x-0", "x"))
	scheme := runtime.NewScheme()
	if err := policyv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(dynamicfake.NewSimpleDynamicClient(scheme), 0)
	t.Cleanup(factory.Shutdown) // after the servers' goroutines: cleanups run last first
	t.Cleanup(dynFactory.Shutdown)
	dst, err := destination.New(destination.Config{Informers: factory})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.New(policy.Config{Informers: factory, DynamicInformers: dynFactory})
	if err != nil {
		t.Fatal(err)
	}

	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.GRPCLocalAddr = "127.0.0.1:0", "127.0.0.1:0"
	addrs := make(chan [2]string, 2)
	cfg.onListen = func(component string, a net.Addr) { addrs <- [2]string{component, a.String()} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 3)
	go func() { done <- ids.Run(ctx) }()
	go func() { done <- pol.Run(ctx) }()
	go func() { done <- serveGRPC(ctx, cfg, ids, dst, pol) }()
	t.Cleanup(func() {
		cancel()
		for range 3 {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("after cancel: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("serveGRPC, ids.Run or pol.Run did not return within 10s of cancel")
			}
		}
	})
	listening := map[string]string{}
	for len(listening) < 2 {
		select {
		case a := <-addrs:
			listening[a[0]] = a[1]
		case err := <-done:
			t.Fatalf("stopped before listening: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("listening on %v only after 10s", listening)
		}
	}
	<-pol.Synced()
	return &grpcEnv{ca: ca, controller: controllerID(cfg, ids), mesh: listening["grpc"], local: listening["grpc-local"]}
}

// dial returns a connection to addr with creds, closed when the test ends.
func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// as is a proxy's credentials for id, checking the server is the
// controller.
func (e *grpcEnv) as(t *testing.T, ca *identitytest.CA, id spiffeid.ID) credentials.TransportCredentials {
	return credentials.NewTLS(tlsconfig.MTLSClientConfig(ca.IssueSVID(t, id), e.ca.Bundle(), tlsconfig.AuthorizeID(e.controller)))
}

// firstPolicy returns the first policy of ns/pod over conn, or the error
// that ended the stream.
func firstPolicy(t *testing.T, conn *grpc.ClientConn, ns, pod string) (*inboundv1.PodPolicy, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := inboundv1.NewInboundPolicyClient(conn).Watch(ctx, &inboundv1.WatchRequest{Namespace: ns, Pod: pod})
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}

// getErr returns the error that ends a destination stream of a Service
// that does not exist: NOT_FOUND when the service answered.
func getErr(t *testing.T, conn *grpc.ClientConn) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := destinationv1.NewDestinationClient(conn).Get(ctx, &destinationv1.GetDestinationRequest{Authority: "web.b.svc.cluster.local:80"})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// TestServeGRPC (issue 12): the proxies' API on GRPCAddr is mesh TLS with
// the controller's SPIFFE ID, refusing plain-text clients, clients
// without a certificate and clients with one of another CA at the
// handshake; a proxy gets only its own pod's policy. The loopback
// listener answers in plain text, about any pod.
func TestServeGRPC(t *testing.T) {
	e := startGRPC(t)
	other := identitytest.NewCA(t) // same trust domain, another root

	refused := []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{name: "plain text", creds: insecure.NewCredentials()},
		{name: "no client certificate", creds: credentials.NewTLS(tlsconfig.TLSClientConfig(e.ca.Bundle(), tlsconfig.AuthorizeID(e.controller)))},
		{name: "a certificate of another CA", creds: e.as(t, other, other.ID("b", "web"))},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			conn := dial(t, e.mesh, tc.creds)
			if _, err := firstPolicy(t, conn, "b", "web-0"); status.Code(err) != codes.Unavailable {
				t.Errorf("policy: got %v, want the connection refused (Unavailable)", err)
			}
			if err := getErr(t, conn); status.Code(err) != codes.Unavailable {
				t.Errorf("destination: got %v, want the connection refused (Unavailable)", err)
			}
		})
	}

	t.Run("another namespace's pod", func(t *testing.T) {
		_, err := firstPolicy(t, dial(t, e.mesh, e.as(t, e.ca, e.ca.ID("a", "x"))), "b", "web-0")
		want := "spiffe://cluster.local/ns/a/sa/x asked for the policy of pod b/web-0"
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want PermissionDenied with %q", err, want)
		}
	})
	t.Run("the pod's own proxy", func(t *testing.T) {
		conn := dial(t, e.mesh, e.as(t, e.ca, e.ca.ID("b", "web")))
		if pp, err := firstPolicy(t, conn, "b", "web-0"); err != nil || pp.GetDefaultPolicy() != names.DefaultInboundPolicy {
			t.Errorf("got %v, %v; want the pod's policy", pp, err)
		}
		if err := getErr(t, conn); status.Code(err) != codes.NotFound {
			t.Errorf("destination: got %v, want NotFound (no such Service)", err)
		}
	})
	t.Run("the loopback listener", func(t *testing.T) {
		conn := dial(t, e.local, insecure.NewCredentials())
		for _, pod := range [][2]string{{"b", "web-0"}, {"a", "x-0"}} {
			if pp, err := firstPolicy(t, conn, pod[0], pod[1]); err != nil || pp.GetRevision() == "" {
				t.Errorf("policy of %s/%s: %v, %v", pod[0], pod[1], pp, err)
			}
		}
		if err := getErr(t, conn); status.Code(err) != codes.NotFound {
			t.Errorf("destination: got %v, want NotFound (no such Service)", err)
		}
		// It speaks no TLS: it is the port-forward's, not the proxies'.
		c, err := tls.Dial("tcp", e.local, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			c.Close()
			t.Error("the loopback listener completed a TLS handshake")
		}
	})
}
