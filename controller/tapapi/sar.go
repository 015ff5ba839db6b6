package tapapi

import (
	"context"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/kubernetes"
)

// ClusterRole is the role `mesh install` creates for users an admin lets
// tap: the watch verb on every resource of Group.
const ClusterRole = "mesh-tap"

// accessReview is the SubjectAccessReview that asks whether u may tap t:
// verb watch on t's resource, subresource tap, in Group.
func accessReview(u user.Info, t Target) *authorizationv1.SubjectAccessReview {
	var extra map[string]authorizationv1.ExtraValue
	if len(u.GetExtra()) > 0 {
		extra = make(map[string]authorizationv1.ExtraValue, len(u.GetExtra()))
		for k, v := range u.GetExtra() {
			extra[k] = v
		}
	}
	return &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace:   t.Namespace,
				Verb:        Verb,
				Group:       Group,
				Version:     Version,
				Resource:    t.Resource,
				Subresource: Subresource,
				Name:        t.Name,
			},
			User:   u.GetName(),
			UID:    u.GetUID(),
			Groups: u.GetGroups(),
			Extra:  extra,
		},
	}
}

// decision is the answer of a SubjectAccessReview.
type decision struct {
	Allowed bool
	// Reason is what the authorizer said, often nothing for RBAC.
	Reason string
}

// authorize asks the API server whether u may tap t. The API server
// checked RBAC on the path before it forwarded the request; asking again
// here means a request that reached this server some other way with a
// front-proxy certificate, or an API server whose authorizer skipped the
// path, still gets only what RBAC grants.
func authorize(ctx context.Context, client kubernetes.Interface, u user.Info, t Target) (decision, error) {
	sar, err := client.AuthorizationV1().SubjectAccessReviews().Create(ctx, accessReview(u, t), metav1.CreateOptions{})
	if err != nil {
		return decision{}, fmt.Errorf("SubjectAccessReview for user %q on %s: %w", u.GetName(), t, err)
	}
	reason := sar.Status.Reason
	if sar.Status.EvaluationError != "" {
		reason = strings.TrimSpace(reason + " " + sar.Status.EvaluationError)
	}
	return decision{Allowed: sar.Status.Allowed && !sar.Status.Denied, Reason: reason}, nil
}

// forbiddenMessage says who may not tap what, which permission is
// missing, and the command an admin runs to grant it: a RoleBinding of
// ClusterRole in the target's namespace, so the user can tap there and
// nowhere else.
func forbiddenMessage(u user.Info, t Target, reason string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "user %q may not tap %s: it needs the %q verb on %q in group %s",
		u.GetName(), t, Verb, t.Resource+"/"+Subresource, Group)
	if reason != "" {
		fmt.Fprintf(&b, " (the authorizer says: %s)", reason)
	}
	fmt.Fprintf(&b, ". An admin grants it in namespace %s with: kubectl create rolebinding %s -n %s --clusterrole=%s %s",
		t.Namespace, bindingName(u.GetName()), t.Namespace, ClusterRole, subjectFlag(u.GetName()))
	return b.String()
}

// subjectFlag is kubectl create rolebinding's flag for user name.
func subjectFlag(name string) string {
	if ns, sa, err := serviceaccount.SplitUsername(name); err == nil {
		return "--serviceaccount=" + ns + ":" + sa
	}
	return "--user=" + shellQuote(name)
}

// bindingName makes a RoleBinding name for a user: lower case, with
// characters an object name cannot hold replaced by dashes.
func bindingName(name string) string {
	if ns, sa, err := serviceaccount.SplitUsername(name); err == nil {
		name = ns + "-" + sa
	}
	var b strings.Builder
	b.WriteString(ClusterRole + "-")
	for _, c := range strings.ToLower(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-.")
	if len(s) > 63 {
		s = strings.Trim(s[:63], "-.")
	}
	return s
}

// shellQuote quotes s for a shell when it holds anything but plain name
// characters: user names come from the identity provider.
func shellQuote(s string) string {
	plain := s != "" && strings.IndexFunc(s, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.:@/", c))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
