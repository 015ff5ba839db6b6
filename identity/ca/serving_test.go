package ca_test

import (
	"crypto/x509"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mesh-dev/mesh/identity/ca"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

func TestServingCertificate(t *testing.T) {
	pki := identitytest.NewCA(t)
	dir := identitytest.NewSecretDir(t)
	pki.WriteSecret(t, dir)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	c, err := ca.New(ca.Config{Dir: dir.Path, Lifetime: time.Hour, Clock: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	id := pki.ID("mesh-system", "mesh-controller")
	get := c.ServingCertificate(id)
	check := func(pki *identitytest.CA) *x509.Certificate {
		t.Helper()
		cert, err := get(nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := x509svid.ParseAndVerify(cert.Certificate, x509bundle.NewSet(pki.Bundle()), x509svid.WithTime(time.Unix(0, now.Load())))
		if err != nil || got != id {
			t.Fatalf("serving certificate verifies as %q, %v; want %q", got, err, id)
		}
		return cert.Leaf
	}

	first := check(pki)
	if again := check(pki); !again.Equal(first) {
		t.Error("certificate signed again before it aged")
	}
	now.Add(int64(31 * time.Minute)) // past half of the hour
	aged := check(pki)
	if aged.Equal(first) {
		t.Error("certificate not renewed past half its lifetime")
	}

	next := pki.RotateIssuer(t)
	next.WriteSecret(t, dir)
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := check(next).CheckSignatureFrom(next.Issuer); err != nil {
		t.Errorf("certificate not signed again by the new issuer: %v", err)
	}
}
