//go:build conformance

package conformance

import (
	"testing"

	gwconformance "sigs.k8s.io/gateway-api/conformance"
)

// TestConformance runs the Gateway API conformance suite's mesh profiles
// against the cluster of the current kubeconfig, where mesh is installed
// (with the Gateway API CRDs of the suite's version) and the images of
// `make images` are loaded. It is behind the conformance build tag so that
// `go test ./...` never reaches for a cluster:
//
//	cd test/conformance && go test -tags conformance -run TestConformance -timeout 30m .
//
// The suite's own flags (-run-test, -skip-tests, -report-output, -debug ...)
// go after -args.
func TestConformance(t *testing.T) {
	version, err := projectVersion()
	if err != nil {
		t.Fatal(err)
	}
	opts, err := meshOptions(gwconformance.DefaultOptions(t), version)
	if err != nil {
		t.Fatal(err)
	}
	gwconformance.RunConformanceWithOptions(t, opts)
}
