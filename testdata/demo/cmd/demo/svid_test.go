package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mesh-dev/mesh/identity/client/clienttest"
	"github.com/mesh-dev/mesh/identity/identitytest"
	"github.com/mesh-dev/mesh/identity/workloadapi"
)

// TestSVID runs `demo svid` against the mesh's own Workload API server (as
// mesh-proxy serves it in the pod) on a Unix socket named by
// SPIFFE_ENDPOINT_SOCKET, as the injector sets it.
func TestSVID(t *testing.T) {
	ca := identitytest.NewCA(t)
	id := ca.ID("shop", "web")
	src := clienttest.NewSource(ca.IssueSVID(t, id), ca.Bundle())
	socket := filepath.Join(t.TempDir(), "socket")
	ln, err := workloadapi.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- workloadapi.NewServer(src, nil).Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", workloadapi.Addr(socket))

	var out bytes.Buffer
	o := &options{stdout: &out, stderr: io.Discard, lookupEnv: func(string) (string, bool) { return "", false }}
	cmd := newRootCmd(o)
	cmd.SetArgs([]string{"svid", "--timeout", "10s"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	if want := "spiffe_id=" + id.String() + " "; !strings.HasPrefix(out.String(), want) || !strings.Contains(out.String(), "bundle_authorities=1") {
		t.Errorf("svid printed %q, want %s... bundle_authorities=1", out.String(), want)
	}
}
