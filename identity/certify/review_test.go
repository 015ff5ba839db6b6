package certify

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestKubeTokenReviewer runs KubeTokenReviewer against a fake clientset
// whose "create tokenreviews" reactor answers as kube-apiserver would. It
// is fake because this tier has no API server; the real TokenReview of
// projected tokens is exercised end to end on the local cluster. What is
// tested here is our side: the request we send and how we read answers.
func TestKubeTokenReviewer(t *testing.T) {
	const audience = "identity.mesh.dev"
	authenticated := authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{audience},
		User: authnv1.UserInfo{
			Username: "system:serviceaccount:shop:web",
			Extra:    map[string]authnv1.ExtraValue{podNameKey: {"web-5d8f-abcde"}},
		},
	}
	tests := []struct {
		name    string
		status  authnv1.TokenReviewStatus
		err     error // returned by the API server instead of a review
		want    TokenInfo
		wantErr string
		unauth  bool // the error wraps ErrUnauthenticated
	}{{
		name:   "accepted token bound to a pod",
		status: authenticated,
		want:   TokenInfo{Username: "system:serviceaccount:shop:web", Pod: "web-5d8f-abcde"},
	}, {
		name:    "expired token",
		status:  authnv1.TokenReviewStatus{Error: "[invalid bearer token, service account token has expired]"},
		wantErr: "has expired",
		unauth:  true,
	}, {
		name:    "refused without a reason",
		status:  authnv1.TokenReviewStatus{},
		wantErr: "token not accepted by the API server",
		unauth:  true,
	}, {
		name: "API server ignores the audience",
		status: func() authnv1.TokenReviewStatus {
			s := authenticated
			s.Audiences = []string{"https://kubernetes.default.svc"}
			return s
		}(),
		wantErr: `do not include "identity.mesh.dev"`,
		unauth:  true,
	}, {
		name:    "not allowed to create tokenreviews",
		err:     apierrors.NewForbidden(schema.GroupResource{Group: "authentication.k8s.io", Resource: "tokenreviews"}, "", errors.New("RBAC")),
		wantErr: "token review: tokenreviews.authentication.k8s.io is forbidden",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, sent := fakeAPIServer(tc.status, tc.err)
			got, err := NewKubeTokenReviewer(client).Review(t.Context(), "the-token", audience)
			if sent() == nil {
				t.Fatal("no TokenReview created")
			}
			if diff := cmp.Diff(authnv1.TokenReviewSpec{Token: "the-token", Audiences: []string{audience}}, sent().Spec); diff != "" {
				t.Errorf("TokenReview spec (-want +got):\n%s", diff)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Review error = %v, want one saying %q", err, tc.wantErr)
				}
				if errors.Is(err, ErrUnauthenticated) != tc.unauth {
					t.Errorf("errors.Is(%v, ErrUnauthenticated) = %v, want %v", err, !tc.unauth, tc.unauth)
				}
				return
			}
			if err != nil {
				t.Fatalf("Review: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("TokenInfo (-want +got):\n%s", diff)
			}
		})
	}
}

// fakeAPIServer returns a clientset that answers every TokenReview with
// status, or fails it with err, and a func returning the last review sent.
// The reactor runs on the caller's goroutine, so sent needs no lock.
func fakeAPIServer(status authnv1.TokenReviewStatus, err error) (*fake.Clientset, func() *authnv1.TokenReview) {
	client := fake.NewClientset()
	var sent *authnv1.TokenReview
	client.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		sent = action.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		if err != nil {
			return true, nil, err
		}
		out := sent.DeepCopy()
		out.Status = status
		return true, out, nil
	})
	return client, func() *authnv1.TokenReview { return sent }
}

func TestServiceAccount(t *testing.T) {
	tests := []struct {
		username string
		ns, sa   string // "" means refused
	}{
		{"system:serviceaccount:shop:web", "shop", "web"},
		{"system:serviceaccount:kube-system:default", "kube-system", "default"},
		{"system:serviceaccount:shop", "", ""},
		{"system:serviceaccount::web", "", ""},
		{"system:serviceaccount:shop:", "", ""},
		{"system:serviceaccount:shop:web:extra", "", ""},
		{"system:serviceaccounts:shop:web", "", ""},
		{"alice@example.com", "", ""},
		{"", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.username, func(t *testing.T) {
			ns, sa, err := serviceAccount(tc.username)
			if tc.ns == "" {
				if !errors.Is(err, errNotServiceAccount) {
					t.Errorf("serviceAccount(%q) = %q, %q, %v; want errNotServiceAccount", tc.username, ns, sa, err)
				}
				return
			}
			if err != nil || ns != tc.ns || sa != tc.sa {
				t.Errorf("serviceAccount(%q) = %q, %q, %v; want %q, %q", tc.username, ns, sa, err, tc.ns, tc.sa)
			}
		})
	}
}
