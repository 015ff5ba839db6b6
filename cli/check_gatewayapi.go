package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/mesh-dev/mesh/install/manifests"
)

// checkGatewayAPICRDs reports the Gateway API CRDs mesh routes with:
// whether they are there, their release and channel, and whether mesh
// installed them. It warns, and does not fail, about what is missing or
// older than mesh supports: the mesh works without routes, and another
// project may own the CRDs.
func checkGatewayAPICRDs(ctx context.Context, c *checker) (string, error) {
	want, err := manifests.GatewayAPICRDs()
	if err != nil {
		return "", err
	}
	var (
		found            []manifests.GatewayAPICRD
		missing, caveats []string
	)
	for _, m := range want {
		name := m.Object.GetName()
		crd, err := c.k.dynamic.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			missing = append(missing, name)
			continue
		case apierrors.IsForbidden(err):
			return "", warnf("cannot tell: you may not read customresourcedefinitions (%s)", firstLine(err.Error()))
		case err != nil:
			return "", fmt.Errorf("get customresourcedefinition %s: %w", name, err)
		}
		g := manifests.ReadGatewayAPICRD(crd)
		found = append(found, g)
		if p := crdProblem(crd, gatewayv1.GroupVersion.Version); p != "" {
			caveats = append(caveats, name+" "+p)
		}
		switch cmp, err := g.CompareToSupported(); {
		case errors.Is(err, manifests.ErrNoBundleVersion):
			caveats = append(caveats, fmt.Sprintf("%s has no %s annotation: its release is unknown", name, manifests.BundleVersionAnnotation))
		case err != nil:
			caveats = append(caveats, fmt.Sprintf("%s: %v", name, err))
		case cmp < 0:
			caveats = append(caveats, fmt.Sprintf("%s is %s, older than the %s mesh supports: %s", name, g.Version, manifests.GatewayAPIBundleVersion, upgradeHint(g)))
		}
	}
	if len(found) == 0 {
		return "", warnf("not installed: HTTPRoute and GRPCRoute cannot configure the mesh's traffic; mesh install installs the standard channel %s", manifests.GatewayAPIBundleVersion)
	}
	detail := describeGatewayAPI(found)
	if len(missing) > 0 {
		caveats = append(caveats, fmt.Sprintf("%s %s missing: mesh install adds %s", strings.Join(missing, ", "),
			plural(len(missing), "is", "are"), plural(len(missing), "it", "them")))
	}
	if len(caveats) > 0 {
		return "", warnf("%s\n%s", detail, strings.Join(caveats, "\n"))
	}
	return detail, nil
}

// upgradeHint says who upgrades an old Gateway API CRD.
func upgradeHint(g manifests.GatewayAPICRD) string {
	if g.Mesh && g.Channel == manifests.GatewayAPIChannel {
		return "mesh install upgrades it"
	}
	return "upgrade it with the project that installed it (mesh install never replaces another project's CRDs, nor the experimental channel)"
}

// describeGatewayAPI sums up the CRDs' releases, channels and owners: in
// one phrase when they agree, else one per CRD.
func describeGatewayAPI(found []manifests.GatewayAPICRD) string {
	about := func(g manifests.GatewayAPICRD) string {
		version, channel, owner := g.Version, g.Channel, "installed by another project"
		if version == "" {
			version = "unknown release"
		}
		if channel == "" {
			channel = "unknown"
		}
		if g.Mesh {
			owner = "installed by mesh"
		}
		return fmt.Sprintf("%s, %s channel, %s", version, channel, owner)
	}
	same := true
	for _, g := range found[1:] {
		same = same && about(g) == about(found[0])
	}
	if same {
		return fmt.Sprintf("%d %s, %s", len(found), plural(len(found), "CRD", "CRDs"), about(found[0]))
	}
	parts := make([]string, len(found))
	for i, g := range found {
		parts[i] = strings.TrimSuffix(g.Name, "."+manifests.GatewayAPIGroup) + " " + about(g)
	}
	return strings.Join(parts, "; ")
}
