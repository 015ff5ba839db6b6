package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/mesh-dev/mesh/install/manifests"
)

func TestCheckGatewayAPICRDs(t *testing.T) {
	const supported = manifests.GatewayAPIBundleVersion
	all := func(version, channel string, mesh bool) []runtime.Object {
		var objs []runtime.Object
		for _, plural := range []string{"httproutes", "grpcroutes"} {
			objs = append(objs, gatewayCRD(t, plural, version, channel, mesh))
		}
		return objs
	}
	notEstablished := gatewayCRD(t, "grpcroutes", supported, "standard", true)
	_ = unstructured.SetNestedSlice(notEstablished.Object, []any{condition("NamesAccepted", "False", `"grpcroutes" is already in use`)}, "status", "conditions")
	tests := []struct {
		name       string
		objs       []runtime.Object
		wantDetail string
		wantWarn   []string
	}{
		{name: "mesh's", objs: all(supported, "standard", true), wantDetail: "2 CRDs, " + supported + ", standard channel, installed by mesh"},
		{name: "another project's, newer", objs: all("v1.7.1", "experimental", false), wantDetail: "2 CRDs, v1.7.1, experimental channel, installed by another project"},
		{
			name:       "mixed",
			objs:       []runtime.Object{gatewayCRD(t, "httproutes", "v1.7.0", "experimental", false), gatewayCRD(t, "grpcroutes", supported, "standard", true)},
			wantDetail: "grpcroutes " + supported + ", standard channel, installed by mesh; httproutes v1.7.0, experimental channel, installed by another project",
		},
		{name: "none", wantWarn: []string{"not installed: HTTPRoute and GRPCRoute cannot configure the mesh's traffic; mesh install installs the standard channel " + supported}},
		{
			name: "another project's, older",
			objs: all("v1.2.1", "standard", false),
			wantWarn: []string{
				"2 CRDs, v1.2.1, standard channel, installed by another project",
				"httproutes.gateway.networking.k8s.io is v1.2.1, older than the " + supported + " mesh supports: upgrade it with the project that installed it",
			},
		},
		{
			name:     "mesh's, older",
			objs:     all("v1.5.0", "standard", true),
			wantWarn: []string{"grpcroutes.gateway.networking.k8s.io is v1.5.0, older than the " + supported + " mesh supports: mesh install upgrades it"},
		},
		{
			name: "mixed, one missing",
			objs: []runtime.Object{gatewayCRD(t, "httproutes", "v1.4.0", "experimental", false)},
			wantWarn: []string{
				"1 CRD, v1.4.0, experimental channel, installed by another project",
				"grpcroutes.gateway.networking.k8s.io is missing: mesh install adds it",
			},
		},
		{
			name:     "no release",
			objs:     all("", "standard", false),
			wantWarn: []string{"2 CRDs, unknown release, standard channel", "has no gateway.networking.k8s.io/bundle-version annotation"},
		},
		{
			name:     "not established",
			objs:     []runtime.Object{gatewayCRD(t, "httproutes", supported, "standard", true), notEstablished},
			wantWarn: []string{`grpcroutes.gateway.networking.k8s.io is not Established (NamesAccepted False: "grpcroutes" is already in use)`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &checker{k: &kube{dynamic: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), tc.objs...)}, ns: "mesh-system"}
			detail, err := checkGatewayAPICRDs(context.Background(), c)
			if len(tc.wantWarn) == 0 {
				if err != nil || detail != tc.wantDetail {
					t.Errorf("got %q, %v; want %q", detail, err, tc.wantDetail)
				}
				return
			}
			var w *warning
			if !errors.As(err, &w) {
				t.Fatalf("got %q, %v; want a warning", detail, err)
			}
			for _, want := range tc.wantWarn {
				if !strings.Contains(w.msg, want) {
					t.Errorf("warning %q\nwant it to contain %q", w.msg, want)
				}
			}
		})
	}
}

// TestCheckListGatewayAPI: mesh check reports the Gateway API CRDs, and
// check --pre does not (install decides about them).
func TestCheckListGatewayAPI(t *testing.T) {
	has := func(pre bool) bool {
		for _, c := range checkList(pre) {
			if c.category == "gateway-api" {
				return true
			}
		}
		return false
	}
	if !has(false) || has(true) {
		t.Errorf("gateway-api check in mesh check: %v, in --pre: %v; want it in mesh check only", has(false), has(true))
	}
}
