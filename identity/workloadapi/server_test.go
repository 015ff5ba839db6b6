package workloadapi_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	spiffeapi "github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mesh-dev/mesh/identity/client"
	"github.com/mesh-dev/mesh/identity/client/clienttest"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/workloadapi"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// serve runs the Workload API over src on a socket in a temporary
// directory until the test ends, and returns the socket's path.
func serve(t *testing.T, src workloadapi.Source) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spiffe", "socket")
	lis, err := workloadapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- workloadapi.NewServer(src, nil).Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

// x509Source is go-spiffe's own Workload API client on path.
func x509Source(t *testing.T, path string) *spiffeapi.X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	src, err := spiffeapi.NewX509Source(ctx, spiffeapi.WithClientOptions(spiffeapi.WithAddr(workloadapi.Addr(path))))
	if err != nil {
		t.Fatalf("NewX509Source: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// waitSVID waits until src hands out a certificate equal to want's leaf.
func waitSVID(t *testing.T, src *spiffeapi.X509Source, want *x509.Certificate) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		if got, err := src.GetX509SVID(); err == nil && got.Certificates[0].Equal(want) {
			return
		}
		select {
		case <-src.Updated():
		case <-timeout:
			t.Fatal("go-spiffe's X509Source did not get the rotated SVID in 10s")
		}
	}
}

// rawClient is a plain gRPC client of the Workload API, for what go-spiffe
// never does, like leaving out the security header.
func rawClient(t *testing.T, path string) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient(workloadapi.Addr(path), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

func TestGoSpiffeClientSeesRotation(t *testing.T) {
	pki := identitytest.NewCA(t)
	id := pki.ID("shop", "web")
	first := pki.IssueSVID(t, id)
	src := clienttest.NewSource(first, pki.Bundle())
	x509src := x509Source(t, serve(t, src))

	got, err := x509src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != id || !got.Certificates[0].Equal(first.Certificates[0]) || len(got.Certificates) != len(first.Certificates) {
		t.Errorf("GetX509SVID = %s with %d certificates, want %s with %d", got.ID, len(got.Certificates), id, len(first.Certificates))
	}
	bundle, err := x509src.GetX509BundleForTrustDomain(pki.TrustDomain)
	if err != nil || !bundle.Equal(pki.Bundle()) {
		t.Errorf("GetX509BundleForTrustDomain = %v, %v; want the test anchor", bundle, err)
	}

	rotated := pki.IssueSVID(t, id)
	src.Set(rotated, pki.Bundle())
	waitSVID(t, x509src, rotated.Certificates[0])
}

// TestProxyIdentityEndToEnd wires the Workload API to the proxy's real
// identity client, renewing three-second certificates from the stand-in
// controller: the application sees each renewal.
func TestProxyIdentityEndToEnd(t *testing.T) {
	pki := identitytest.NewCA(t)
	ctrl := clienttest.StartController(t, clienttest.ControllerConfig{Issuer: pki.NewIssuer(t), Lifetime: 3 * time.Second})
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("token"), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := client.New(client.Config{
		Namespace: "shop", ServiceAccount: "web", TokenPath: token,
		Conn: ctrl.Dial(t), MinBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	x509src := x509Source(t, serve(t, src))
	first, err := x509src.GetX509SVID()
	if err != nil || first.ID != src.ID() {
		t.Fatalf("GetX509SVID = %v, %v; want %s", first, err, src.ID())
	}
	timeout := time.After(10 * time.Second)
	for {
		if got, err := x509src.GetX509SVID(); err == nil && !got.Certificates[0].Equal(first.Certificates[0]) {
			return
		}
		select {
		case <-x509src.Updated():
		case <-timeout:
			t.Fatal("no renewal reached the application in 10s")
		}
	}
}

func TestFetchX509SVIDEncoding(t *testing.T) {
	pki := identitytest.NewCA(t)
	svid := pki.IssueSVID(t, pki.ID("shop", "web"))
	wl := rawClient(t, serve(t, clienttest.NewSource(svid, pki.Bundle())))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	stream, err := wl.FetchX509SVID(withHeader(ctx), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetSvids()) != 1 {
		t.Fatalf("%d SVIDs, want 1", len(resp.GetSvids()))
	}
	got := resp.GetSvids()[0]
	parsed, err := x509svid.ParseRaw(got.GetX509Svid(), got.GetX509SvidKey())
	if err != nil {
		t.Fatalf("x509svid.ParseRaw (chain as concatenated DER, PKCS #8 key): %v", err)
	}
	if parsed.ID != svid.ID || got.GetSpiffeId() != svid.ID.String() || len(parsed.Certificates) != len(svid.Certificates) {
		t.Errorf("SVID %s (%s) with %d certificates, want %s with %d", parsed.ID, got.GetSpiffeId(), len(parsed.Certificates), svid.ID, len(svid.Certificates))
	}
	roots, err := x509.ParseCertificates(got.GetBundle())
	if err != nil || len(roots) != 1 || !roots[0].Equal(pki.Root) {
		t.Errorf("bundle: %d certificates, %v; want the anchor", len(roots), err)
	}
}

func TestWaitsForFirstSVID(t *testing.T) {
	pki := identitytest.NewCA(t)
	src := clienttest.NewSource(nil, nil) // a proxy not ready yet
	wl := rawClient(t, serve(t, src))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	stream, err := wl.FetchX509SVID(withHeader(ctx), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	svid := pki.IssueSVID(t, pki.ID("shop", "web"))
	src.Set(svid, pki.Bundle())
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetSvids()[0].GetSpiffeId(); got != svid.ID.String() {
		t.Errorf("first response for %s, want %s", got, svid.ID)
	}
}

// TestFetchX509Bundles checks that the bundle stream sends bundle changes
// and skips certificate rotations, which leave the bundle as it was.
func TestFetchX509Bundles(t *testing.T) {
	pki := identitytest.NewCA(t)
	next := identitytest.NewCA(t)
	id := pki.ID("shop", "web")
	src := clienttest.NewSource(pki.IssueSVID(t, id), pki.Bundle())
	path := serve(t, src)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	// go-spiffe's one-shot fetch.
	c, err := spiffeapi.New(ctx, spiffeapi.WithAddr(workloadapi.Addr(path)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	set, err := c.FetchX509Bundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := set.GetX509BundleForTrustDomain(pki.TrustDomain); err != nil || !b.Equal(pki.Bundle()) {
		t.Fatalf("FetchX509Bundles: %v, %v; want the test anchor", b, err)
	}

	stream, err := rawClient(t, path).FetchX509Bundles(withHeader(ctx), &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvBundle := func() *x509bundle.Bundle {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		b, err := x509bundle.ParseRaw(pki.TrustDomain, resp.GetBundles()[pki.TrustDomain.Name()])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if b := recvBundle(); !b.Equal(pki.Bundle()) {
		t.Fatal("first bundle is not the test anchor")
	}
	src.Set(pki.IssueSVID(t, id), pki.Bundle()) // a rotation: nothing to send
	both := x509bundle.FromX509Authorities(pki.TrustDomain, []*x509.Certificate{pki.Root, next.Root})
	src.Set(pki.IssueSVID(t, id), both)
	if b := recvBundle(); !b.Equal(both) {
		t.Errorf("after the change: %d authorities, want both anchors", len(b.X509Authorities()))
	}
}

func TestSecurityHeaderRequired(t *testing.T) {
	pki := identitytest.NewCA(t)
	wl := rawClient(t, serve(t, clienttest.NewSource(pki.IssueSVID(t, pki.ID("shop", "web")), pki.Bundle())))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"FetchX509SVID", func(ctx context.Context) error {
			s, err := wl.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}},
		{"FetchX509Bundles", func(ctx context.Context) error {
			s, err := wl.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}},
		{"FetchJWTSVID", func(ctx context.Context) error {
			_, err := wl.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
			return err
		}},
	}
	for _, c := range calls {
		if got := status.Code(c.call(ctx)); got != codes.InvalidArgument {
			t.Errorf("%s without the header: %s, want InvalidArgument", c.name, got)
		}
	}
	// JWT-SVIDs are out of scope: with the header, the answer says so.
	if got := status.Code(calls[2].call(withHeader(ctx))); got != codes.Unimplemented {
		t.Errorf("FetchJWTSVID with the header: %s, want Unimplemented", got)
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()

	t.Run("open to every user", func(t *testing.T) {
		path := filepath.Join(dir, "new", "socket")
		lis, err := workloadapi.Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o777 {
			t.Errorf("socket mode %s, want a socket with 0777", fi.Mode())
		}
	})

	t.Run("replaces a stale socket", func(t *testing.T) {
		path := filepath.Join(dir, "stale")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false) // as a killed proxy leaves it
		old.Close()
		lis, err := workloadapi.Listen(path)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		lis.Close()
	})

	t.Run("keeps a file that is not a socket", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		if lis, err := workloadapi.Listen(path); err == nil {
			lis.Close()
			t.Fatal("Listen replaced a regular file")
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "keep" {
			t.Errorf("the file is now %q, %v", b, err)
		}
	})
}

func TestRunRemovesSocket(t *testing.T) {
	pki := identitytest.NewCA(t)
	path := filepath.Join(t.TempDir(), "socket")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	src := clienttest.NewSource(pki.IssueSVID(t, pki.ID("shop", "web")), pki.Bundle())
	go func() { done <- workloadapi.Run(ctx, workloadapi.Config{SocketPath: path, Source: src}) }()
	x509Source(t, path).Close() // served
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}
