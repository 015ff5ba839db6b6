package cli

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// fieldManager owns the fields mesh sets with server-side apply.
const fieldManager = "mesh"

// applyResult says what an apply did to an object.
type applyResult string

const (
	resultCreated    applyResult = "created"
	resultConfigured applyResult = "configured"
	resultUnchanged  applyResult = "unchanged"
)

// resource returns the client for objects of kind gvk in namespace (ignored
// for cluster-scoped kinds) and the mapping that found it.
func (k *kube) resource(ctx context.Context, gvk schema.GroupVersionKind, namespace string) (dynamic.ResourceInterface, *meta.RESTMapping, error) {
	m, err := k.mapper.RESTMappingWithContext(ctx, gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, nil, fmt.Errorf("the API server does not serve %s: %w", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return k.dynamic.Resource(m.Resource).Namespace(namespace), m, nil
	}
	return k.dynamic.Resource(m.Resource), m, nil
}

// apply server-side applies obj, taking over fields other managers set
// (mesh owns these objects), and tells from the resourceVersion before and
// after whether anything changed: a no-op apply does not write.
func (k *kube) apply(ctx context.Context, obj *unstructured.Unstructured) (applyResult, error) {
	ri, _, err := k.resource(ctx, obj.GroupVersionKind(), obj.GetNamespace())
	if err != nil {
		return "", err
	}
	name := displayName(obj)
	before := ""
	switch cur, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{}); {
	case err == nil:
		before = cur.GetResourceVersion()
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	after, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	if err != nil {
		return "", fmt.Errorf("apply %s: %w", name, err)
	}
	switch {
	case before == "":
		return resultCreated, nil
	case before == after.GetResourceVersion():
		return resultUnchanged, nil
	default:
		return resultConfigured, nil
	}
}

// displayName is "kind/name" in lower case, the way kubectl prints objects.
func displayName(obj *unstructured.Unstructured) string {
	return strings.ToLower(obj.GetKind()) + "/" + obj.GetName()
}
