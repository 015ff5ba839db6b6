package route

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
)

// perMillion is a share of requests in the proxies' unit, parts per
// million, from a percentage.
const perMillion = 10_000

// extensionRef resolves an ExtensionRef filter of a route in ns. The one
// kind mesh serves is HTTPFault of policy.mesh.dev, in the route's own
// namespace (a LocalObjectReference), and only among a rule's filters: a
// fault on a backendRef refuses the route (UnsupportedValue), as does an
// HTTPFault whose spec mesh cannot apply. Any other kind, or an HTTPFault
// that does not exist, unresolves the route and becomes a Fail filter:
// httproute_types.go says such a filter "MUST NOT be skipped. Instead,
// requests that would have been processed by that filter MUST receive a
// HTTP error response". The reasons are the spec's (shared_types.go):
// InvalidKind for "a reference to an unknown or unsupported Group and/or
// Kind", BackendNotFound for "a reference to a resource that does not
// exist", which despite its name is not about backends alone.
func (b *builder) extensionRef(ref *gatewayv1.LocalObjectReference, at filterSite, p *problems) Filter {
	if ref == nil {
		p.refuse(gatewayv1.RouteReasonUnsupportedValue, "%s: ExtensionRef filter without extensionRef", at.where)
		return failFilter("invalid filter")
	}
	what := fmt.Sprintf("%s/%s %s", ref.Group, ref.Kind, ref.Name)
	if string(ref.Group) != policyv1alpha1.GroupName || string(ref.Kind) != policyv1alpha1.KindHTTPFault {
		p.unresolve(gatewayv1.RouteReasonInvalidKind, "%s: extensionRef %s: mesh serves no filter of that kind (only %s/%s)",
			at.where, what, policyv1alpha1.GroupName, policyv1alpha1.KindHTTPFault)
		return failFilter("unresolved filter " + what)
	}
	name := types.NamespacedName{Namespace: at.ns, Name: string(ref.Name)}
	if at.backend {
		p.refuse(gatewayv1.RouteReasonUnsupportedValue, "%s: extensionRef HTTPFault %s: mesh applies an HTTPFault to a rule, not to a backendRef", at.where, name)
		return failFilter("invalid filter " + what)
	}
	hf := b.faults[name]
	if hf == nil {
		p.unresolve(gatewayv1.RouteReasonBackendNotFound, "%s: extensionRef HTTPFault %s not found", at.where, name)
		return failFilter("unresolved filter " + what)
	}
	f, err := faultOf(hf.Spec)
	if err != nil {
		p.refuse(gatewayv1.RouteReasonUnsupportedValue, "%s: HTTPFault %s: %v", at.where, name, err)
		return failFilter("invalid filter " + what)
	}
	return Filter{Kind: FilterFault, Fault: f}
}

func failFilter(msg string) Filter {
	return Filter{Kind: FilterFail, Fail: Fail{Status: http.StatusInternalServerError, Message: msg}}
}

// faultOf checks an HTTPFault's spec as its CRD's schema does, for
// objects that passed no schema (an older CRD, or one edited by hand),
// and converts it.
func faultOf(spec policyv1alpha1.HTTPFaultSpec) (Fault, error) {
	var f Fault
	if spec.Abort == nil && spec.Delay == nil {
		return f, errors.New("neither abort nor delay is given")
	}
	if a := spec.Abort; a != nil {
		if a.Percent < 0 || a.Percent > 100 {
			return f, fmt.Errorf("abort.percent %d: want 0 to 100", a.Percent)
		}
		if a.HTTPStatus < 200 || a.HTTPStatus > 599 {
			return f, fmt.Errorf("abort.httpStatus %d: want 200 to 599", a.HTTPStatus)
		}
		f.Abort = &FaultAbort{PerMillion: uint32(a.Percent) * perMillion, Status: int(a.HTTPStatus)}
	}
	if d := spec.Delay; d != nil {
		if d.Percent < 0 || d.Percent > 100 {
			return f, fmt.Errorf("delay.percent %d: want 0 to 100", d.Percent)
		}
		// Every Gateway API duration (GEP-2257, "1h30m10s500ms") is a
		// Go duration.
		dur, err := time.ParseDuration(string(d.Duration))
		if err != nil || dur < 0 {
			return f, fmt.Errorf("delay.duration %q: want a duration like 200ms or 1s", d.Duration)
		}
		f.Delay = &FaultDelay{PerMillion: uint32(d.Percent) * perMillion, Duration: dur}
	}
	return f, nil
}

// typedFault is the transform that keeps HTTPFaults in the informer's
// cache as *policyv1alpha1.HTTPFault rather than unstructured data, so
// that each is converted once per change, not once per rebuild. One that
// does not convert keeps only its metadata, so that a route naming it
// finds it and says what is wrong ("neither abort nor delay"), and is
// logged.
func typedFault(log *slog.Logger) cache.TransformFunc {
	return func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil // already converted, or a tombstone
		}
		out := &policyv1alpha1.HTTPFault{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
			log.Error("HTTPFault does not match its schema; routes naming it are refused", "namespace", u.GetNamespace(), "name", u.GetName(), "error", err)
			out = &policyv1alpha1.HTTPFault{}
			out.Namespace, out.Name, out.UID = u.GetNamespace(), u.GetName(), u.GetUID()
			out.ResourceVersion, out.Generation = u.GetResourceVersion(), u.GetGeneration()
		}
		out.ManagedFields = nil
		return out, nil
	}
}
