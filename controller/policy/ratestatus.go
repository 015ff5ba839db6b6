package policy

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
)

// defaultStatusRetry is how long after a failed status write (other than
// a conflict, which the newer version's event retries) its namespace is
// written again.
const defaultStatusRetry = 5 * time.Second

// runStatus keeps the Accepted condition of the HTTPLocalRateLimitPolicies
// and the Server parents' entries of the routes of the namespaces marked
// for it current, until ctx is done. It runs on a goroutine of its own so
// that a slow API server never holds up the policies sent to proxies.
// Every replica of the controller writes the same status from the same
// objects, and only when it differs from what the object has, so replicas
// do not fight over it.
func (s *Server) runStatus(ctx context.Context) {
	written := map[types.NamespacedName]statusWrite{}
	routesWritten := map[routeStatusKey]routeWrite{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ix.statusDirty.wake:
			namespaces, _ := s.ix.statusDirty.take()
			for ns := range namespaces {
				if s.statusClient != nil {
					s.writeStatuses(ctx, ns, written)
				}
				if s.gatewayClient != nil && s.ix.gateway != nil {
					s.writeRouteStatuses(ctx, ns, routesWritten)
				}
			}
		}
	}
}

// writeStatuses writes the status of the rate limit policies of ns whose
// Accepted condition is not what the caches make of them.
// statusWrite is a status written over a version of a policy. Until the
// cache holds a newer version, the policy's status there is not the one
// written yet, and writing the same again would only repeat it (or
// conflict).
type statusWrite struct {
	resourceVersion string
	generation      int64
	outcome         rateLimitOutcome
}

func (s *Server) writeStatuses(ctx context.Context, ns string, written map[types.NamespacedName]statusWrite) {
	in := s.ix.namespaceInputs(ns)
	present := make(map[types.NamespacedName]bool, len(in.rateLimits))
	for _, p := range in.rateLimits {
		present[types.NamespacedName{Namespace: ns, Name: p.Name}] = true
	}
	for key := range written {
		if key.Namespace == ns && !present[key] {
			delete(written, key)
		}
	}
	if len(in.rateLimits) == 0 {
		return
	}
	b := nsBuilder{in: in, td: s.td}
	_, outcomes := b.rateLimits(b.servers())
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for _, p := range in.rateLimits {
		key := types.NamespacedName{Namespace: ns, Name: p.Name}
		this := statusWrite{resourceVersion: p.ResourceVersion, generation: p.Generation, outcome: outcomes[p.Name]}
		if written[key] == this {
			continue // the event of that write is on its way
		}
		conds, changed := acceptedConditions(p.Status.Conditions, outcomes[p.Name], p.Generation, now)
		if !changed {
			continue
		}
		// A merge patch replaces the list whole; resourceVersion makes it
		// fail, rather than undo a change, if the object changed since
		// the cache saw it.
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": p.ResourceVersion},
			"status":   map[string]any{"conditions": conds},
		})
		if err != nil {
			s.log.Error("encoding an HTTPLocalRateLimitPolicy status", "namespace", ns, "name", p.Name, "error", err)
			continue
		}
		_, err = s.statusClient.Resource(policyv1alpha1.HTTPLocalRateLimitPoliciesResource).Namespace(ns).
			Patch(ctx, p.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "mesh-controller"}, "status")
		switch {
		case err == nil:
			written[key] = this
			s.log.Debug("HTTPLocalRateLimitPolicy status written", "namespace", ns, "name", p.Name, "accepted", outcomes[p.Name].String())
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			// Its newer version, or its deletion, brings another event.
			s.log.Debug("HTTPLocalRateLimitPolicy status not written: the policy changed", "namespace", ns, "name", p.Name, "error", err)
		case ctx.Err() != nil:
			return
		default:
			s.log.Error("writing HTTPLocalRateLimitPolicy status; retrying", "namespace", ns, "name", p.Name, "error", err, "retry_in", s.statusRetry)
			time.AfterFunc(s.statusRetry, func() { s.ix.statusDirty.addNamespace(ns) })
		}
	}
}

// acceptedConditions returns the conditions a policy should have: those of
// other types as they are, and Accepted as out says, keeping its
// lastTransitionTime when its status is unchanged. changed is false when
// that differs from current in nothing, so an unchanged policy is never
// written.
func acceptedConditions(current []metav1.Condition, out rateLimitOutcome, generation int64, now metav1.Time) (conds []metav1.Condition, changed bool) {
	want := metav1.Condition{
		Type:               policyv1alpha1.RateLimitConditionAccepted,
		Status:             metav1.ConditionFalse,
		ObservedGeneration: generation,
		LastTransitionTime: now,
		Reason:             out.reason,
		Message:            out.message,
	}
	if out.accepted {
		want.Status = metav1.ConditionTrue
	}
	i := slices.IndexFunc(current, func(c metav1.Condition) bool { return c.Type == want.Type })
	if i >= 0 {
		old := current[i]
		if old.Status == want.Status {
			want.LastTransitionTime = old.LastTransitionTime
			if old.Reason == want.Reason && old.Message == want.Message && old.ObservedGeneration == want.ObservedGeneration {
				return current, false
			}
		}
	}
	conds = slices.DeleteFunc(slices.Clone(current), func(c metav1.Condition) bool { return c.Type == want.Type })
	return append(conds, want), true
}
