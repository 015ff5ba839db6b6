package policy

import (
	"errors"
	"fmt"
	"slices"

	inboundv1 "github.com/mesh-dev/mesh/api/inbound/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
)

// rateLimitOutcome is what became of one HTTPLocalRateLimitPolicy: the
// Accepted condition its status gets.
type rateLimitOutcome struct {
	accepted bool
	reason   string // a policyv1alpha1.RateLimitReason...
	message  string
}

// rateLimits resolves the namespace's HTTPLocalRateLimitPolicies against
// servers, its usable Servers: the limit of each Server that has one, by
// Server name, and the outcome of every policy, by policy name. A Server
// takes one policy: of the valid ones that target it, the oldest
// (creation time, then name), as Linkerd does; the others are
// Conflicted. A policy naming a Server that does not exist, or that is
// ignored, is TargetNotFound; one that cannot be applied as written,
// Invalid (the CRD's rules should refuse all of those). Identities of an
// override that are not valid are dropped with a warning, which only
// narrows whom the override applies to.
func (b *nsBuilder) rateLimits(servers []serverRule) (byServer map[string]*inboundv1.RateLimit, outcomes map[string]rateLimitOutcome) {
	byServer = map[string]*inboundv1.RateLimit{}
	outcomes = make(map[string]rateLimitOutcome, len(b.in.rateLimits))
	usable := make(map[string]bool, len(servers))
	for _, s := range servers {
		usable[s.name] = true
	}
	exists := make(map[string]bool, len(b.in.servers))
	for _, s := range b.in.servers {
		exists[s.Name] = true
	}
	winners := map[string]string{} // Server → the policy that limits it
	policies := slices.Clone(b.in.rateLimits)
	slices.SortFunc(policies, olderFirst) // the first valid claim of a Server wins
	for _, p := range policies {
		ref := p.Spec.TargetRef
		out := rateLimitOutcome{reason: policyv1alpha1.RateLimitReasonAccepted}
		switch {
		case !ref.TargetsServer():
			out.reason = policyv1alpha1.RateLimitReasonInvalid
			out.message = fmt.Sprintf("targetRef %s %s is not a Server (group %s)", groupKind(ref.Group, ref.Kind), ref.Name, policyv1alpha1.GroupName)
		case !exists[ref.Name]:
			out.reason = policyv1alpha1.RateLimitReasonTargetNotFound
			out.message = fmt.Sprintf("Server %s does not exist in namespace %s", ref.Name, p.Namespace)
		case !usable[ref.Name]:
			out.reason = policyv1alpha1.RateLimitReasonTargetNotFound
			out.message = fmt.Sprintf("Server %s is ignored, its spec being invalid (the controller's log says why)", ref.Name)
		case winners[ref.Name] != "":
			out.reason = policyv1alpha1.RateLimitReasonConflicted
			out.message = fmt.Sprintf("Server %s is limited by HTTPLocalRateLimitPolicy %s, which is older; a Server takes one", ref.Name, winners[ref.Name])
		default:
			rl, err := b.rateLimit(p)
			if err != nil {
				out.reason = policyv1alpha1.RateLimitReasonInvalid
				out.message = err.Error()
				break
			}
			out.accepted = true
			out.message = fmt.Sprintf("limits the HTTP requests of Server %s", ref.Name)
			winners[ref.Name] = p.Name
			byServer[ref.Name] = rl
		}
		if !out.accepted {
			b.warn("HTTPLocalRateLimitPolicy %s/%s is not applied (%s): %s", p.Namespace, p.Name, out.reason, out.message)
		}
		outcomes[p.Name] = out
	}
	return byServer, outcomes
}

// rateLimit translates p's limits, dropping (and warning about) the
// identities of overrides that are not valid and the overrides left with
// none. It fails when nothing would be limited.
func (b *nsBuilder) rateLimit(p *policyv1alpha1.HTTPLocalRateLimitPolicy) (*inboundv1.RateLimit, error) {
	rl := &inboundv1.RateLimit{Name: p.Name}
	var err error
	if rl.TotalRps, err = rps("total", p.Spec.Total); err != nil {
		return nil, err
	}
	if rl.IdentityRps, err = rps("identity", p.Spec.Identity); err != nil {
		return nil, err
	}
	for i, o := range p.Spec.Overrides {
		n, err := rps(fmt.Sprintf("overrides[%d]", i), &policyv1alpha1.RateLimit{RequestsPerSecond: o.RequestsPerSecond})
		if err != nil {
			return nil, err
		}
		var patterns []string
		for _, s := range o.Identities {
			pat, err := identityPattern(s)
			if err != nil {
				b.warn("HTTPLocalRateLimitPolicy %s/%s: overrides[%d]: identity %q is ignored: %v", p.Namespace, p.Name, i, s, err)
				continue
			}
			patterns = append(patterns, pat)
		}
		for _, ref := range o.ClientRefs {
			pat, err := b.identityRef(ref, p.Namespace)
			if err != nil {
				b.warn("HTTPLocalRateLimitPolicy %s/%s: overrides[%d]: clientRef %s %s is ignored: %v", p.Namespace, p.Name, i, groupKind(ref.Group, ref.Kind), ref.Name, err)
				continue
			}
			patterns = append(patterns, pat)
		}
		if len(patterns) == 0 {
			b.warn("HTTPLocalRateLimitPolicy %s/%s: overrides[%d] is ignored: it names no valid client", p.Namespace, p.Name, i)
			continue
		}
		slices.Sort(patterns)
		rl.Overrides = append(rl.Overrides, &inboundv1.RateLimitOverride{Rps: n, Identities: slices.Compact(patterns)})
	}
	if rl.TotalRps == 0 && rl.IdentityRps == 0 && len(rl.Overrides) == 0 {
		return nil, errors.New("it sets no limit: give total, identity or an override with a valid client")
	}
	return rl, nil
}

// rps validates a limit: nil is none (0), else at least 1.
func rps(field string, l *policyv1alpha1.RateLimit) (uint32, error) {
	switch {
	case l == nil:
		return 0, nil
	case l.RequestsPerSecond < 1:
		return 0, fmt.Errorf("%s.requestsPerSecond is %d; it must be at least 1", field, l.RequestsPerSecond)
	}
	return uint32(l.RequestsPerSecond), nil
}

// String is the outcome as a condition reads, for logs and tests.
func (o rateLimitOutcome) String() string {
	return fmt.Sprintf("Accepted=%v %s: %s", o.accepted, o.reason, o.message)
}
