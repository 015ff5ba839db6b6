package tapapi

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestParsePath(t *testing.T) {
	const p = "/apis/tap.mesh.dev/v1alpha1/watch/namespaces/"
	for _, tc := range []struct {
		name, path string
		want       Target
		notTap     bool
		err        string
	}{
		{name: "namespace", path: p + "shop/tap", want: Target{Namespace: "shop", Resource: "namespaces", Name: "shop"}},
		{name: "deployment", path: p + "shop/deployments/web/tap", want: Target{Namespace: "shop", Resource: "deployments", Name: "web"}},
		{name: "pod with dots", path: p + "shop/pods/web-1.a/tap", want: Target{Namespace: "shop", Resource: "pods", Name: "web-1.a"}},
		{name: "job", path: p + "batch/jobs/backup-29/tap", want: Target{Namespace: "batch", Resource: "jobs", Name: "backup-29"}},
		{name: "other group", path: "/apis/tap.linkerd.io/v1alpha1/watch/namespaces/shop/tap", notTap: true},
		{name: "without watch", path: "/apis/tap.mesh.dev/v1alpha1/namespaces/shop/tap", notTap: true},
		{name: "not tap", path: p + "shop/deployments/web/exec", notTap: true},
		{name: "trailing slash", path: p + "shop/tap/", notTap: true},
		{name: "too deep", path: p + "shop/deployments/web/x/tap", notTap: true},
		{name: "three parts", path: p + "shop/deployments/tap", notTap: true},
		{name: "namespace object", path: p + "shop/namespaces/shop/tap", err: "tap a namespace with"},
		{name: "service", path: p + "shop/services/web/tap", err: `cannot tap "services"`},
		{name: "short kind", path: p + "shop/deploy/web/tap", err: `cannot tap "deploy"`},
		{name: "bad namespace", path: p + "Shop/tap", err: `namespace "Shop"`},
		{name: "empty namespace", path: p + "/deployments/web/tap", err: `namespace ""`},
		{name: "bad name", path: p + "shop/pods/../tap", err: `name ".."`},
		{name: "empty name", path: p + "shop/pods//tap", err: `name ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePath(tc.path)
			switch {
			case tc.notTap:
				if !errors.Is(err, errNotTap) {
					t.Errorf("err = %v, want errNotTap", err)
				}
			case tc.err != "":
				if err == nil || errors.Is(err, errNotTap) || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want one with %q", err, tc.err)
				}
			case err != nil:
				t.Errorf("err = %v", err)
			case got != tc.want:
				t.Errorf("got %+v, want %+v", got, tc.want)
			case Path(got) != tc.path:
				t.Errorf("Path(%+v) = %s, want %s back", got, Path(got), tc.path)
			}
		})
	}
}

// FuzzParsePath: whatever the path, a target ParsePath accepts is valid
// (a namespace name, a tappable resource, an object name) and is exactly
// what the path says, so no path can review one object and tap another.
func FuzzParsePath(f *testing.F) {
	const p = "/apis/tap.mesh.dev/v1alpha1/watch/namespaces/"
	for _, seed := range []string{
		p + "shop/tap",                                      // a namespace
		p + "shop/deployments/web/tap",                      // a workload
		p + "shop/pods/web-1/tap",                           // a pod
		p + "shop/namespaces/other/tap",                     // a namespace inside another
		p + "shop/pods/a%2Fb/tap",                           // an escape left in
		p + "shop/pods/web/../../kube/tap",                  // dot segments
		p + "shop//deployments/web/tap",                     // an empty segment
		p + "shop/deployments/web/tap/tap",                  // the subresource twice
		"/apis/tap.mesh.dev/v1alpha1/watch/",                // nothing after the prefix
		"/apis/tap.mesh.dev/v1alpha1/watch/namespaces//tap", // an empty namespace
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, path string) {
		got, err := ParsePath(path)
		if err != nil {
			return
		}
		if Path(got) != path {
			t.Fatalf("ParsePath(%q) = %+v, whose path is %q", path, got, Path(got))
		}
		if len(validation.IsDNS1123Label(got.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(got.Name)) > 0 {
			t.Fatalf("ParsePath(%q) accepted invalid names: %+v", path, got)
		}
		r, ok := lookupResource(got.Resource)
		if !ok {
			t.Fatalf("ParsePath(%q) accepted resource %q", path, got.Resource)
		}
		if r.Plural == "namespaces" && got.Name != got.Namespace {
			t.Fatalf("ParsePath(%q) = %+v: a namespace tap is of its own namespace only", path, got)
		}
	})
}

func TestBindingName(t *testing.T) {
	for _, tc := range []struct{ user, want string }{
		{"alice", "mesh-tap-alice"},
		{"system:serviceaccount:shop:ci", "mesh-tap-shop-ci"},
		{"Alice@Example.com", "mesh-tap-alice-example.com"},
		{"https://issuer.example#1234567890123456789012345678901234567890", "mesh-tap-https---issuer.example-1234567890123456789012345678901"},
	} {
		got := bindingName(tc.user)
		if got != tc.want || len(validation.IsDNS1123Subdomain(got)) > 0 || len(got) > 63 {
			t.Errorf("bindingName(%q) = %q, want %q, a valid name of at most 63 characters", tc.user, got, tc.want)
		}
	}
}
