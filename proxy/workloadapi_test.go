package proxy

import (
	"context"
	"crypto"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mesh-dev/mesh/identity/workloadapi"
)

// TestWorkloadAPIServesTheApplicationsOwnKey: an application fetching its
// SVID over the Workload API socket gets the pod's SPIFFE ID, certified by
// the mesh's CA, but with a key of its own: the proxy's private key never
// leaves the proxy (issue 12).
func TestWorkloadAPIServesTheApplicationsOwnKey(t *testing.T) {
	pki := startPKI(t)
	app := backend(t, named("hello", 0))
	sock := filepath.Join(t.TempDir(), "socket")
	p := startProxy(t, app, pki.withIdentity(t, "shop", "api"), func(c *Config) { c.WorkloadAPISocket = sock })
	waitReady(t, p)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := spiffewl.FetchX509SVID(ctx, spiffewl.WithAddr(workloadapi.Addr(sock)))
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	if want := pki.ca.ID("shop", "api"); got.ID != want {
		t.Errorf("application's SPIFFE ID = %s, want the pod's %s", got.ID, want)
	}
	if _, _, err := x509svid.Verify(got.Certificates, pki.ca.Bundle()); err != nil {
		t.Errorf("application's SVID does not verify against the mesh CA: %v", err)
	}
	proxySVID, err := p.id.src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	type publicKey interface{ Equal(crypto.PublicKey) bool }
	appKey := got.Certificates[0].PublicKey.(publicKey)
	if appKey.Equal(proxySVID.Certificates[0].PublicKey) {
		t.Error("the Workload API served the proxy's own certificate")
	}
	if got.PrivateKey.Public().(publicKey).Equal(proxySVID.PrivateKey.Public()) {
		t.Error("the Workload API handed out the proxy's private key")
	}
	if !appKey.Equal(got.PrivateKey.Public()) {
		t.Error("the application's certificate does not certify the key it was given")
	}
}
