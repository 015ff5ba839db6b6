package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/mesh-dev/mesh/controller/route"
)

// The status of inbound routes: for each parentRef naming a Server, an
// entry under controller/route's controller name (one name for all of
// mesh), with Accepted as routes says and ResolvedRefs true (a Server
// parent resolves no reference). Entries of other controllers, and of
// this one for parents that are not Servers (controller/route's, for
// Services), are kept as they are: the two writers never write the same
// entry.

// routeStatusKey names a route of the cluster.
type routeStatusKey struct{ namespace, kind, name string }

// routeWrite is the status written over a version of a route. Until the
// cache holds a newer version, the route's status there is not the one
// written yet, and writing the same again would only repeat it (or
// conflict).
type routeWrite struct {
	resourceVersion string
	want            string // the outcomes written (fingerprint)
}

// fingerprint spells outcomes out, the parentRefs' pointed-to values
// rather than their addresses, so that equal outcomes compare equal.
func fingerprint(outcomes []parentOutcome) string {
	var b strings.Builder
	for _, o := range outcomes {
		r := o.ref
		fmt.Fprintf(&b, "%s/%s/%s/%s/%s/%d:%v;", deref(r.Group, ""), deref(r.Kind, ""), deref(r.Namespace, ""), r.Name,
			deref(r.SectionName, ""), deref(r.Port, 0), o.accepted)
	}
	return b.String()
}

// writeRouteStatuses writes the Server parents' entries of the routes of
// ns whose entries are not what the caches make of them.
func (s *Server) writeRouteStatuses(ctx context.Context, ns string, written map[routeStatusKey]routeWrite) {
	in := s.ix.namespaceInputs(ns)
	present := map[routeStatusKey]bool{}
	for _, r := range in.httpRoutes {
		present[routeStatusKey{ns, kindHTTPRoute, r.Name}] = true
	}
	for _, r := range in.grpcRoutes {
		present[routeStatusKey{ns, kindGRPCRoute, r.Name}] = true
	}
	for key := range written {
		if key.namespace == ns && !present[key] {
			delete(written, key)
		}
	}
	if len(present) == 0 {
		return
	}
	b := nsBuilder{in: in, td: s.td}
	_, outcomes := b.routes(b.servers(), nil)
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for _, r := range in.httpRoutes {
		s.writeRouteStatus(ctx, routeStatusKey{ns, kindHTTPRoute, r.Name}, &r.ObjectMeta, r.Status.Parents, outcomes, written, now,
			func(parents []gatewayv1.RouteParentStatus) error {
				u := r.DeepCopy()
				u.Status.Parents = parents
				_, err := s.gatewayClient.GatewayV1().HTTPRoutes(ns).UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "mesh-controller"})
				return err
			})
	}
	for _, r := range in.grpcRoutes {
		s.writeRouteStatus(ctx, routeStatusKey{ns, kindGRPCRoute, r.Name}, &r.ObjectMeta, r.Status.Parents, outcomes, written, now,
			func(parents []gatewayv1.RouteParentStatus) error {
				u := r.DeepCopy()
				u.Status.Parents = parents
				_, err := s.gatewayClient.GatewayV1().GRPCRoutes(ns).UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "mesh-controller"})
				return err
			})
	}
}

// writeRouteStatus writes one route's entries with update when they
// differ from current. update writes over the cached version, so it fails
// with a conflict, rather than undo a change, if the route changed since.
func (s *Server) writeRouteStatus(ctx context.Context, key routeStatusKey, meta *metav1.ObjectMeta, current []gatewayv1.RouteParentStatus,
	outcomes map[routeKey][]parentOutcome, written map[routeStatusKey]routeWrite, now metav1.Time, update func([]gatewayv1.RouteParentStatus) error) {
	want := outcomes[routeKey{key.kind, key.name}]
	this := routeWrite{resourceVersion: meta.ResourceVersion, want: fingerprint(want)}
	if written[key] == this {
		return // the event of that write is on its way
	}
	parents, changed := serverParentStatuses(current, want, meta.Generation, now)
	if !changed {
		return
	}
	err := update(parents)
	switch {
	case err == nil:
		written[key] = this
		s.log.Debug("route status written", "kind", key.kind, "namespace", key.namespace, "name", key.name, "server_parents", len(want))
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		// Its newer version, or its deletion, brings another event.
		s.log.Debug("route status not written: the route changed", "kind", key.kind, "namespace", key.namespace, "name", key.name, "error", err)
	case ctx.Err() != nil:
	default:
		s.log.Error("writing route status; retrying", "kind", key.kind, "namespace", key.namespace, "name", key.name, "error", err, "retry_in", s.statusRetry)
		time.AfterFunc(s.statusRetry, func() { s.ix.statusDirty.addNamespace(key.namespace) })
	}
}

// serverParentStatuses returns the status.parents a route should have:
// every entry that is not ours for a Server parent as it is, then ours
// from want. changed is false when ours differ from current's in nothing
// but times, so that an unchanged route is never written. A condition
// that keeps its status keeps its lastTransitionTime.
func serverParentStatuses(current []gatewayv1.RouteParentStatus, want []parentOutcome, generation int64, now metav1.Time) (out []gatewayv1.RouteParentStatus, changed bool) {
	var ours []gatewayv1.RouteParentStatus
	for _, p := range current {
		if string(p.ControllerName) == route.ControllerName && isServerParent(p.ParentRef) {
			ours = append(ours, p)
		} else {
			out = append(out, p)
		}
	}
	resolved := routeCondition{ok: true, reason: gatewayv1.RouteReasonResolvedRefs,
		message: "a Server parent resolves no reference: its requests go to the pod's port"}
	next := make([]gatewayv1.RouteParentStatus, 0, len(want))
	for _, w := range want {
		var old []metav1.Condition
		if i := slices.IndexFunc(ours, func(o gatewayv1.RouteParentStatus) bool { return equality.Semantic.DeepEqual(o.ParentRef, w.ref) }); i >= 0 {
			old = ours[i].Conditions
		}
		next = append(next, gatewayv1.RouteParentStatus{
			ParentRef:      w.ref,
			ControllerName: route.ControllerName,
			Conditions: []metav1.Condition{
				routeConditionOf(string(gatewayv1.RouteConditionAccepted), w.accepted, generation, old, now),
				routeConditionOf(string(gatewayv1.RouteConditionResolvedRefs), resolved, generation, old, now),
			},
		})
	}
	return append(out, next...), !equality.Semantic.DeepEqual(withoutTimes(ours), withoutTimes(next))
}

// routeConditionOf builds a condition of type typ, keeping the transition
// time of the one in old of the same type and status.
func routeConditionOf(typ string, c routeCondition, generation int64, old []metav1.Condition, now metav1.Time) metav1.Condition {
	status := metav1.ConditionFalse
	if c.ok {
		status = metav1.ConditionTrue
	}
	out := metav1.Condition{Type: typ, Status: status, ObservedGeneration: generation, LastTransitionTime: now, Reason: string(c.reason), Message: c.message}
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
