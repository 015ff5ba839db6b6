package certify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// ErrUnauthenticated is returned (wrapped) by a TokenReviewer for a token
// the API server does not accept: expired, revoked, bound to a pod that is
// gone, for another audience, or not a token at all. Any other error means
// the review itself could not be done.
var ErrUnauthenticated = errors.New("token not accepted")

// TokenInfo is what the API server says about an accepted token.
type TokenInfo struct {
	// Username is the token's user, system:serviceaccount:<ns>:<sa> for a
	// ServiceAccount token.
	Username string
	// Pod is the name of the pod the token is bound to, for logs; "" when
	// the API server did not say.
	Pod string
}

// TokenReviewer authenticates a Kubernetes token for an audience. It must
// be safe for concurrent use.
type TokenReviewer interface {
	// Review returns who token belongs to, or an error wrapping
	// ErrUnauthenticated when the token is not valid for audience.
	Review(ctx context.Context, token, audience string) (TokenInfo, error)
}

// TokenReviewerFunc adapts a function to TokenReviewer.
type TokenReviewerFunc func(ctx context.Context, token, audience string) (TokenInfo, error)

// Review calls f.
func (f TokenReviewerFunc) Review(ctx context.Context, token, audience string) (TokenInfo, error) {
	return f(ctx, token, audience)
}

// podNameKey is the extra the API server adds to a token bound to a pod.
const podNameKey = "authentication.kubernetes.io/pod-name"

// KubeTokenReviewer reviews tokens with the API server's TokenReview API
// (authentication.k8s.io/v1). The controller's ServiceAccount needs
// "create" on tokenreviews, as in the system:auth-delegator ClusterRole.
type KubeTokenReviewer struct {
	client kubernetes.Interface
}

// NewKubeTokenReviewer returns a TokenReviewer calling client's API server.
func NewKubeTokenReviewer(client kubernetes.Interface) *KubeTokenReviewer {
	return &KubeTokenReviewer{client: client}
}

// The rate of the Kubernetes client NewKubeTokenReviewerForConfig makes
// when asked for none: ten times client-go's default, as a flood is what
// it must absorb, while the identity service's own limits keep it far
// below this in any but a flood from many addresses.
const (
	DefaultReviewQPS   = 50
	DefaultReviewBurst = 100
)

// NewKubeTokenReviewerForConfig returns a TokenReviewer with a Kubernetes
// client of its own, made from a copy of rc with qps and burst (0 means
// DefaultReviewQPS and DefaultReviewBurst). client-go rate-limits each
// client, 5 QPS by default: sharing one with the informers would let a
// flood of junk tokens delay everything else the controller asks, and a
// busy controller delay certificates.
func NewKubeTokenReviewerForConfig(rc *rest.Config, qps float32, burst int) (*KubeTokenReviewer, error) {
	if qps < 0 || burst < 0 {
		return nil, fmt.Errorf("token review client: negative QPS %g or burst %d", qps, burst)
	}
	if qps == 0 {
		qps = DefaultReviewQPS
	}
	if burst == 0 {
		burst = DefaultReviewBurst
	}
	rc = rest.CopyConfig(rc)
	rc.QPS, rc.Burst, rc.RateLimiter = qps, burst, nil
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("token review client: %w", err)
	}
	return NewKubeTokenReviewer(client), nil
}

// Review creates a TokenReview for token with audience. A token is accepted
// only if the API server says it is authenticated and lists audience among
// the token's audiences: an API server that ignores spec.audiences answers
// with its own, and a token for the API server must not get a mesh
// identity.
func (k *KubeTokenReviewer) Review(ctx context.Context, token, audience string) (TokenInfo, error) {
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{audience}}}
	got, err := k.client.AuthenticationV1().TokenReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return TokenInfo{}, fmt.Errorf("token review: %w", err)
	}
	st := got.Status
	switch {
	case !st.Authenticated && st.Error != "":
		return TokenInfo{}, fmt.Errorf("%w: %s", ErrUnauthenticated, st.Error)
	case !st.Authenticated:
		return TokenInfo{}, fmt.Errorf("%w by the API server", ErrUnauthenticated)
	case !slices.Contains(st.Audiences, audience):
		return TokenInfo{}, fmt.Errorf("%w: its audiences %q do not include %q", ErrUnauthenticated, st.Audiences, audience)
	}
	info := TokenInfo{Username: st.User.Username}
	if pods := st.User.Extra[podNameKey]; len(pods) > 0 {
		info.Pod = pods[0]
	}
	return info, nil
}

// saPrefix starts the username of every ServiceAccount token.
const saPrefix = "system:serviceaccount:"

// errNotServiceAccount: the token is valid but is not a ServiceAccount's,
// so it maps to no workload identity.
var errNotServiceAccount = errors.New("token is not a ServiceAccount's")

// serviceAccount splits system:serviceaccount:<ns>:<sa> into ns and sa.
func serviceAccount(username string) (ns, sa string, err error) {
	rest, ok := strings.CutPrefix(username, saPrefix)
	if ok {
		ns, sa, ok = strings.Cut(rest, ":")
	}
	if !ok || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return "", "", fmt.Errorf("%w: user %q", errNotServiceAccount, username)
	}
	return ns, sa, nil
}
