package cli

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
)

func TestPermissionString(t *testing.T) {
	tests := []struct {
		p        permission
		want     string
		wantCanI string
	}{
		{
			p:        permission{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", ClusterScoped: true},
			want:     "create clusterroles.rbac.authorization.k8s.io (cluster-scoped)",
			wantCanI: "kubectl auth can-i create clusterroles.rbac.authorization.k8s.io",
		},
		{
			p:        permission{Verb: "patch", Group: "apps", Resource: "deployments", Namespace: "mesh-system"},
			want:     "patch deployments.apps in namespace mesh-system",
			wantCanI: "kubectl auth can-i patch deployments.apps -n mesh-system",
		},
		{
			p:        permission{Verb: "list", Resource: "pods"},
			want:     "list pods (all namespaces)",
			wantCanI: "kubectl auth can-i list pods --all-namespaces",
		},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.p.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			if got := tc.p.canI(); got != tc.wantCanI {
				t.Errorf("canI() = %q, want %q", got, tc.wantCanI)
			}
		})
	}
}

func TestMissingPermissionsError(t *testing.T) {
	err := &MissingPermissionsError{
		Command: "mesh install",
		Missing: []permission{
			{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", ClusterScoped: true},
			{Verb: "get", Group: "apps", Resource: "deployments", Namespace: "mesh-system"},
			{Verb: "create", Group: "apps", Resource: "deployments", Namespace: "mesh-system"},
		},
		Ungrantable: []permission{{Verb: "list", Resource: "pods"}, {Verb: "watch", Resource: "pods"}},
	}
	want := `mesh install needs rights you do not have:
  cannot create clusterroles.rbac.authorization.k8s.io (cluster-scoped)
  cannot get, create deployments.apps in namespace mesh-system
  to grant the controller its roles (RBAC lets you grant only what you hold yourself,
  unless you may escalate and bind roles):
    list, watch pods (all namespaces)
ask a cluster admin to run mesh install or to grant you these rights; check one with: kubectl auth can-i create clusterroles.rbac.authorization.k8s.io`
	if diff := cmp.Diff(want, err.Error()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestRulePermissions(t *testing.T) {
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	}
	got := rulePermissions(rules, "")
	want := []permission{
		{Verb: "create", Resource: "events"},
		{Verb: "patch", Resource: "events"},
		{Verb: "create", Group: "events.k8s.io", Resource: "events"},
		{Verb: "patch", Group: "events.k8s.io", Resource: "events"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := dedupe(append(got, got...)); len(got) != 4 {
		t.Errorf("dedupe kept %d, want 4", len(got))
	}
}
