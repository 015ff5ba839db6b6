package v1alpha1

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
)

// TestResources: every kind registered has its resource in Resources, and
// Resources names no other.
func TestResources(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	pkg := reflect.TypeFor[Server]().PkgPath()
	var want []string
	for kind, typ := range s.KnownTypes(SchemeGroupVersion) {
		if typ.PkgPath() != pkg || strings.HasSuffix(kind, "List") {
			continue // the metav1 kinds AddToGroupVersion adds, and lists
		}
		plural := strings.ToLower(kind) + "s"
		if strings.HasSuffix(plural, "ys") {
			plural = strings.TrimSuffix(plural, "ys") + "ies"
		}
		want = append(want, plural)
	}
	var got []string
	for _, r := range Resources {
		if r.GroupVersion() != SchemeGroupVersion {
			t.Errorf("%v is not of %v", r, SchemeGroupVersion)
		}
		got = append(got, r.Resource)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("Resources %v, want one per kind: %v", got, want)
	}
}
