package route

import (
	"slices"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// parentStatuses returns the status.parents a route should have: the
// entries of other controllers as they are (mesh never touches them),
// then mesh's from want. ok is false when that differs from current in
// nothing but times, so that an unchanged route is never written (no
// write storms; Linkerd compares the same way,
// eq_time_insensitive_http_route_parent_statuses). A condition that keeps
// its status keeps its lastTransitionTime.
func parentStatuses(current []gatewayv1.RouteParentStatus, want RouteStatus, now metav1.Time) (out []gatewayv1.RouteParentStatus, changed bool) {
	var ours []gatewayv1.RouteParentStatus
	for _, p := range current {
		// Entries of ours for a Server parent are controller/policy's
		// (inbound routes): kept as they are, like another controller's.
		if p.ControllerName == ControllerName && serviceParent(p.ParentRef) {
			ours = append(ours, p)
		} else {
			out = append(out, p)
		}
	}
	var next []gatewayv1.RouteParentStatus
	for _, p := range want.Parents {
		var old []metav1.Condition
		if i := slices.IndexFunc(ours, func(o gatewayv1.RouteParentStatus) bool { return equality.Semantic.DeepEqual(o.ParentRef, p.Ref) }); i >= 0 {
			old = ours[i].Conditions
		}
		next = append(next, gatewayv1.RouteParentStatus{
			ParentRef:      p.Ref,
			ControllerName: ControllerName,
			Conditions: []metav1.Condition{
				condition(string(gatewayv1.RouteConditionAccepted), p.Accepted, want.Generation, old, now),
				condition(string(gatewayv1.RouteConditionResolvedRefs), p.ResolvedRefs, want.Generation, old, now),
			},
		})
	}
	return append(out, next...), !equality.Semantic.DeepEqual(withoutTimes(ours), withoutTimes(next))
}

// condition builds a condition of type typ, keeping the transition time
// of the one in old of the same type and status.
func condition(typ string, c Condition, generation int64, old []metav1.Condition, now metav1.Time) metav1.Condition {
	status := metav1.ConditionFalse
	if c.OK {
		status = metav1.ConditionTrue
	}
	out := metav1.Condition{Type: typ, Status: status, ObservedGeneration: generation, LastTransitionTime: now, Reason: string(c.Reason), Message: c.Message}
	for _, o := range old {
		if o.Type == typ && o.Status == status {
			out.LastTransitionTime = o.LastTransitionTime
		}
	}
	return out
}

// withoutTimes returns ps with every lastTransitionTime cleared.
func withoutTimes(ps []gatewayv1.RouteParentStatus) []gatewayv1.RouteParentStatus {
	out := make([]gatewayv1.RouteParentStatus, 0, len(ps))
	for _, p := range ps {
		p.Conditions = slices.Clone(p.Conditions)
		for i := range p.Conditions {
			p.Conditions[i].LastTransitionTime = metav1.Time{}
		}
		out = append(out, p)
	}
	return out
}
