package tapapi

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Group and Version are the aggregated API's, as the APIService
// v1alpha1.tap.mesh.dev registers them.
const (
	Group        = "tap.mesh.dev"
	Version      = "v1alpha1"
	GroupVersion = Group + "/" + Version
)

// Subresource is the RBAC subresource of every tap: a user needs the
// `watch` verb on "<resource>/tap" in Group.
const Subresource = "tap"

// Verb is what a tap asks of RBAC. The paths carry kube's /watch/ prefix,
// so the API server resolves them to this verb as well, and treats the
// requests as long-running (no request timeout).
const Verb = "watch"

// watchPrefix starts every tap path.
const watchPrefix = "/apis/" + GroupVersion + "/watch/namespaces/"

// resource is a kind one can tap: its plural name as RBAC and the paths
// spell it, and the viz API's kind for the same objects (api/viz/v1
// PathTap's resource parameter).
type resource struct {
	Plural   string
	Singular string
	VizKind  string
}

// resources are the kinds viz taps. Namespaces are tapped with
// watchPrefix + NS + "/tap"; every other kind is namespaced.
var resources = []resource{
	{Plural: "namespaces", Singular: "namespace", VizKind: "ns"},
	{Plural: "pods", Singular: "pod", VizKind: "pod"},
	{Plural: "deployments", Singular: "deployment", VizKind: "deploy"},
	{Plural: "statefulsets", Singular: "statefulset", VizKind: "sts"},
	{Plural: "daemonsets", Singular: "daemonset", VizKind: "ds"},
	{Plural: "replicasets", Singular: "replicaset", VizKind: "rs"},
	{Plural: "jobs", Singular: "job", VizKind: "job"},
}

// lookupResource returns the resource named by plural.
func lookupResource(plural string) (resource, bool) {
	i := slices.IndexFunc(resources, func(r resource) bool { return r.Plural == plural })
	if i < 0 {
		return resource{}, false
	}
	return resources[i], true
}

// Target is what a tap path names: Name of Resource in Namespace. For a
// whole namespace, Resource is "namespaces" and Name the namespace.
type Target struct {
	Namespace string
	Resource  string
	Name      string
}

// String is the target as RBAC and kubectl name it: "deployments/web -n
// shop", "namespaces/shop".
func (t Target) String() string {
	if t.Resource == "namespaces" {
		return t.Resource + "/" + t.Name
	}
	return t.Resource + "/" + t.Name + " in namespace " + t.Namespace
}

// errNotTap is returned for a path outside the tap paths, which the
// server answers with 404.
var errNotTap = errors.New("not a tap path")

// Path returns the tap path of t: the path `mesh viz tap` asks the API
// server for.
func Path(t Target) string {
	if t.Resource == "namespaces" {
		return watchPrefix + t.Namespace + "/" + Subresource
	}
	return watchPrefix + t.Namespace + "/" + t.Resource + "/" + t.Name + "/" + Subresource
}

// ParsePath reads a tap path:
//
//	/apis/tap.mesh.dev/v1alpha1/watch/namespaces/{ns}/tap
//	/apis/tap.mesh.dev/v1alpha1/watch/namespaces/{ns}/{resource}/{name}/tap
//
// It returns an error wrapping errNotTap for any other path, and one that
// says what is wrong for a tap path with a bad namespace, kind or name.
// The path is the request's decoded path: names cannot hold escapes, as
// no valid name contains a character that needs one.
func ParsePath(p string) (Target, error) {
	rest, ok := strings.CutPrefix(p, watchPrefix)
	if !ok {
		return Target{}, fmt.Errorf("%w: %q", errNotTap, p)
	}
	parts := strings.Split(rest, "/")
	if parts[len(parts)-1] != Subresource {
		return Target{}, fmt.Errorf("%w: %q", errNotTap, p)
	}
	var t Target
	switch len(parts) {
	case 2:
		t = Target{Namespace: parts[0], Resource: "namespaces", Name: parts[0]}
	case 4:
		t = Target{Namespace: parts[0], Resource: parts[1], Name: parts[2]}
		if t.Resource == "namespaces" {
			return Target{}, fmt.Errorf("tap a namespace with %s%s/tap", watchPrefix, t.Namespace)
		}
	default:
		return Target{}, fmt.Errorf("%w: %q", errNotTap, p)
	}
	if msgs := validation.IsDNS1123Label(t.Namespace); len(msgs) > 0 {
		return Target{}, fmt.Errorf("namespace %q: %s", t.Namespace, strings.Join(msgs, "; "))
	}
	if _, ok := lookupResource(t.Resource); !ok {
		return Target{}, fmt.Errorf("cannot tap %q: tap takes %s", t.Resource, tappable())
	}
	if msgs := validation.IsDNS1123Subdomain(t.Name); len(msgs) > 0 {
		return Target{}, fmt.Errorf("name %q: %s", t.Name, strings.Join(msgs, "; "))
	}
	return t, nil
}

// tappable lists the namespaced resources, for errors.
func tappable() string {
	var names []string
	for _, r := range resources[1:] {
		names = append(names, r.Plural)
	}
	return strings.Join(names, ", ") + " (and whole namespaces)"
}
