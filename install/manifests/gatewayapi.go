package manifests

import (
	"embed"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"sigs.k8s.io/gateway-api/pkg/consts"
)

// The Gateway API's CustomResourceDefinitions are how users configure the
// mesh's traffic (issue 14, docs/traffic.md): HTTPRoute and GRPCRoute
// whose parent is a Service (the GAMMA profile). hack/generate.sh copies
// them unchanged from the standard channel of the sigs.k8s.io/gateway-api
// module go.mod requires, and says why this set.
//
// Unlike the policy CRDs they are not mesh's alone: a gateway controller,
// or the cluster's vendor, may have installed them first, at another
// version. So they are not part of Render: install applies them only
// where the cluster has none or an older copy mesh installed, and
// uninstall removes them only while no route exists.
const (
	// GatewayAPIGroup is the API group of the Gateway API's kinds.
	GatewayAPIGroup = "gateway.networking.k8s.io"
	// BundleVersionAnnotation on every Gateway API CRD is the release it
	// comes from, like "v1.6.3".
	BundleVersionAnnotation = consts.BundleVersionAnnotation
	// ChannelAnnotation is "standard" or "experimental"; the experimental
	// channel's CRDs hold more fields than the standard one's.
	ChannelAnnotation = consts.ChannelAnnotation
	// GatewayAPIBundleVersion is the release mesh installs and supports.
	GatewayAPIBundleVersion = consts.BundleVersion
	// GatewayAPIChannel is the channel mesh installs.
	GatewayAPIChannel = "standard"
)

//go:embed gatewayapi/*.yaml
var gatewayAPIFiles embed.FS

// GatewayAPICRDs returns the Gateway API CustomResourceDefinitions mesh
// installs, sorted by file name, each labelled PartOfLabel=PartOf so
// uninstall can tell them from another project's.
func GatewayAPICRDs() ([]Manifest, error) {
	out, err := loadCRDs(gatewayAPIFiles, "gatewayapi/*.yaml",
		"# The Gateway API's standard channel "+GatewayAPIBundleVersion+" (sigs.k8s.io/gateway-api, make generate), labelled by mesh install.\n")
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no Gateway API CustomResourceDefinitions embedded: run make generate")
	}
	for _, m := range out {
		if !IsGatewayAPICRD(m.Object) {
			return nil, fmt.Errorf("%s is not of the group %s", m.Name(), GatewayAPIGroup)
		}
	}
	return out, nil
}

// IsGatewayAPICRD reports whether obj is a CustomResourceDefinition of the
// Gateway API's group, whoever installed it.
func IsGatewayAPICRD(obj *unstructured.Unstructured) bool {
	group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
	return obj.GetKind() == CRDKind && group == GatewayAPIGroup
}

// GatewayAPICRD is what a cluster's Gateway API CRD says of itself.
type GatewayAPICRD struct {
	Name string
	// Version is the bundle-version annotation; "" when it has none (a
	// release before v0.5, or a hand-made copy).
	Version string
	// Channel is the channel annotation, "" when it has none.
	Channel string
	// Mesh is set when mesh install made it (PartOfLabel=PartOf).
	Mesh bool
	// Terminating is set when it is being deleted.
	Terminating bool
}

// ReadGatewayAPICRD reads the annotations and labels of a CRD.
func ReadGatewayAPICRD(obj *unstructured.Unstructured) GatewayAPICRD {
	a := obj.GetAnnotations()
	return GatewayAPICRD{
		Name:        obj.GetName(),
		Version:     a[BundleVersionAnnotation],
		Channel:     a[ChannelAnnotation],
		Mesh:        obj.GetLabels()[PartOfLabel] == PartOf,
		Terminating: obj.GetDeletionTimestamp() != nil,
	}
}

// ErrNoBundleVersion is returned by CompareToSupported for a CRD without
// a bundle-version annotation: its release cannot be told.
var ErrNoBundleVersion = errors.New("no " + BundleVersionAnnotation + " annotation")

// CompareToSupported compares the CRD's bundle version with
// GatewayAPIBundleVersion: -1 older, 0 the same, +1 newer. A release
// candidate of a release sorts before it, as semantic versions do.
func (c GatewayAPICRD) CompareToSupported() (int, error) {
	if c.Version == "" {
		return 0, ErrNoBundleVersion
	}
	v, err := utilversion.ParseSemantic(c.Version)
	if err != nil {
		return 0, fmt.Errorf("bundle version %q: %w", c.Version, err)
	}
	return v.Compare(GatewayAPIBundleVersion)
}
