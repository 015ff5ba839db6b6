package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/mesh-dev/mesh/install/manifests"
)

// permission is one thing a command must be allowed to do.
type permission struct {
	Verb     string
	Group    string
	Resource string
	// Namespace is where; empty means cluster-wide: a cluster-scoped
	// resource, or every namespace when ClusterScoped is false.
	Namespace     string
	ClusterScoped bool
}

// String reads like kubectl's resource names: "create deployments.apps in
// namespace mesh-system", "create clusterroles.rbac.authorization.k8s.io
// (cluster-scoped)".
func (p permission) String() string {
	s := p.Verb + " " + p.resourceName()
	switch {
	case p.Namespace != "":
		return s + " in namespace " + p.Namespace
	case p.ClusterScoped:
		return s + " (cluster-scoped)"
	default:
		return s + " (all namespaces)"
	}
}

func (p permission) resourceName() string {
	if p.Group == "" {
		return p.Resource
	}
	return p.Resource + "." + p.Group
}

// canI is the kubectl command that checks p, for hints.
func (p permission) canI() string {
	s := "kubectl auth can-i " + p.Verb + " " + p.resourceName()
	if p.Namespace != "" {
		return s + " -n " + p.Namespace
	}
	if !p.ClusterScoped {
		return s + " --all-namespaces"
	}
	return s
}

// MissingPermissionsError lists what the user may not do; returned before
// install changes anything.
type MissingPermissionsError struct {
	// Command is what needed the rights, e.g. "mesh install".
	Command string
	// Missing are the operations the API server refused.
	Missing []permission
	// Ungrantable are rules of the controller's roles the user may not
	// grant: RBAC only lets a user grant what they hold themselves, unless
	// they may escalate and bind roles.
	Ungrantable []permission
}

func (e *MissingPermissionsError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s needs rights you do not have:", e.Command)
	for _, p := range groupVerbs(e.Missing) {
		fmt.Fprintf(&b, "\n  cannot %s", p)
	}
	if len(e.Ungrantable) > 0 {
		b.WriteString("\n  to grant the controller its roles (RBAC lets you grant only what you hold yourself,\n  unless you may escalate and bind roles):")
		for _, p := range groupVerbs(e.Ungrantable) {
			fmt.Fprintf(&b, "\n    %s", p)
		}
	}
	first := append(append([]permission{}, e.Missing...), e.Ungrantable...)[0]
	fmt.Fprintf(&b, "\nask a cluster admin to run %s or to grant you these rights; check one with: %s", e.Command, first.canI())
	return b.String()
}

// groupVerbs merges permissions that differ only in their verb, in order:
// "get, create, patch secrets in namespace mesh-system".
func groupVerbs(ps []permission) []permission {
	var out []permission
	index := map[permission]int{}
	for _, p := range ps {
		key := p
		key.Verb = ""
		if i, ok := index[key]; ok {
			out[i].Verb += ", " + p.Verb
			continue
		}
		index[key] = len(out)
		out = append(out, p)
	}
	return out
}

// installAccess is what `mesh install` must be allowed to do: the
// operations on its own objects, and the rules of the roles it creates,
// which it may only grant if it holds them or may escalate.
type installAccess struct {
	ops []permission
	// grants are keyed by the role kind granting them.
	grants map[string][]permission
}

// requiredForInstall derives installAccess from the rendered objects.
func requiredForInstall(ctx context.Context, k *kube, ms []manifests.Manifest, namespace string) (installAccess, error) {
	acc := installAccess{grants: map[string][]permission{}}
	for _, m := range ms {
		mapping, err := k.mapper.RESTMappingWithContext(ctx, m.Object.GroupVersionKind().GroupKind(), m.Object.GroupVersionKind().Version)
		if err != nil {
			return acc, fmt.Errorf("the API server does not serve %s: %w", m.Object.GroupVersionKind(), err)
		}
		p := permission{Group: mapping.Resource.Group, Resource: mapping.Resource.Resource}
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			p.Namespace = m.Object.GetNamespace()
		} else {
			p.ClusterScoped = true
		}
		for _, verb := range []string{"get", "create", "patch"} {
			p.Verb = verb
			acc.ops = append(acc.ops, p)
		}
		kind := m.Object.GetKind()
		if kind != "ClusterRole" && kind != "Role" {
			continue
		}
		var role rbacv1.ClusterRole // a Role's rules have the same shape
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m.Object.Object, &role); err != nil {
			return acc, fmt.Errorf("%s: %w", m.Name(), err)
		}
		acc.grants[kind] = append(acc.grants[kind], rulePermissions(role.Rules, m.Object.GetNamespace())...)
	}
	// Waiting for the rollout reads these.
	acc.ops = append(acc.ops,
		permission{Verb: "list", Resource: "pods", Namespace: namespace},
		permission{Verb: "list", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: namespace},
	)
	acc.ops = dedupe(acc.ops)
	return acc, nil
}

// rulePermissions expands RBAC rules into single permissions.
func rulePermissions(rules []rbacv1.PolicyRule, namespace string) []permission {
	var out []permission
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, permission{Verb: v, Group: g, Resource: res, Namespace: namespace})
				}
			}
		}
	}
	return out
}

func dedupe(ps []permission) []permission {
	seen := map[permission]bool{}
	out := ps[:0]
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// check asks the API server about every permission of acc and returns a
// *MissingPermissionsError naming each refused one, or nil. checked is how
// many reviews were asked.
func (acc installAccess) check(ctx context.Context, k *kube) (checked int, err error) {
	missing, err := k.missing(ctx, acc.ops)
	if err != nil {
		return 0, err
	}
	checked = len(acc.ops)
	var ungrantable []permission
	for _, kind := range []string{"ClusterRole", "Role"} {
		grants := acc.grants[kind]
		if len(grants) == 0 {
			continue
		}
		notHeld, err := k.missing(ctx, grants)
		if err != nil {
			return 0, err
		}
		checked += len(grants)
		if len(notHeld) == 0 || slices.ContainsFunc(missing, func(p permission) bool {
			return p.Group == rbacv1.GroupName && p.Resource == strings.ToLower(kind)+"s"
		}) {
			continue // nothing to grant, or the role cannot be created anyway
		}
		// RBAC's escalation check lets a user with escalate and bind on the
		// role kind grant what they do not hold.
		ns := grants[0].Namespace
		res := strings.ToLower(kind) + "s"
		override := []permission{
			{Verb: "escalate", Group: rbacv1.GroupName, Resource: res, Namespace: ns, ClusterScoped: ns == ""},
			{Verb: "bind", Group: rbacv1.GroupName, Resource: res, Namespace: ns, ClusterScoped: ns == ""},
		}
		lacking, err := k.missing(ctx, override)
		if err != nil {
			return 0, err
		}
		checked += len(override)
		if len(lacking) > 0 {
			ungrantable = append(ungrantable, notHeld...)
		}
	}
	if len(missing) == 0 && len(ungrantable) == 0 {
		return checked, nil
	}
	return checked, &MissingPermissionsError{Command: "mesh install", Missing: missing, Ungrantable: ungrantable}
}

// missing returns the permissions a SelfSubjectAccessReview refuses, in
// the order given. Reviews run a few at a time.
func (k *kube) missing(ctx context.Context, ps []permission) ([]permission, error) {
	allowed := make([]bool, len(ps))
	errs := make([]error, len(ps))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			allowed[i], errs[i] = k.allowed(ctx, p)
		}()
	}
	wg.Wait()
	var out []permission
	for i, p := range ps {
		if errs[i] != nil {
			return nil, fmt.Errorf("ask the API server whether you may %s: %w", p, errs[i])
		}
		if !allowed[i] {
			out = append(out, p)
		}
	}
	return out, nil
}

// allowed asks one SelfSubjectAccessReview.
func (k *kube) allowed(ctx context.Context, p permission) (bool, error) {
	review := &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: p.Namespace,
				Verb:      p.Verb,
				Group:     p.Group,
				Resource:  p.Resource,
			},
		},
	}
	res, err := k.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return res.Status.Allowed, nil
}
