package conformance

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"
	gwconformance "sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	meshtests "sigs.k8s.io/gateway-api/conformance/tests/mesh"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"

	"github.com/mesh-dev/mesh/test/conformance/mesh"
)

// supportedFeatures are the features mesh claims beyond the profiles' core
// ones (docs/traffic.md 4.1): every mesh extended feature, and the HTTPRoute
// features that mesh tests also require — MeshPorts needs
// HTTPRouteParentRefPort and HTTPRouteResponseHeaderModification, the
// 303/307/308 redirect tests their status-code features. Without them the
// suite skips those tests, and a skipped test proves nothing.
var supportedFeatures = []features.FeatureName{
	features.SupportMeshClusterIPMatching,
	features.SupportMeshConsumerRoute,
	features.SupportMeshHTTPRouteRewritePath,
	features.SupportMeshHTTPRouteSchemeRedirect,
	features.SupportMeshHTTPRouteRedirectPort,
	features.SupportMeshHTTPRouteRedirectPath,
	features.SupportMeshHTTPRouteBackendRequestHeaderModification,
	features.SupportMeshHTTPRouteQueryParamMatching,
	features.SupportMeshHTTPRouteNamedRouteRule,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
}

// repoRoot is the mesh checkout, two levels above this module.
const repoRoot = "../.."

// projectVersion is the VERSION file: the tag `make images` gave the echo
// image, and the implementation version the report names.
func projectVersion() (string, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "VERSION"))
	if err != nil {
		return "", fmt.Errorf("conformance: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// meshOptions turns the suite's defaults (flags, kubeconfig) into mesh's
// run: the mesh profiles, our features, injection on the namespaces the
// suite creates, our manifests ahead of the suite's, and the report under
// docs/conformance/ unless -report-output says otherwise.
func meshOptions(opts suite.ConformanceOptions, version string) (suite.ConformanceOptions, error) {
	manifests, err := mesh.FS(version)
	if err != nil {
		return opts, err
	}
	opts.ConformanceProfiles = []suite.ConformanceProfileName{suite.MeshHTTPConformanceProfileName, suite.MeshGRPCConformanceProfileName}
	opts.SupportedFeatures = append([]features.FeatureName(nil), supportedFeatures...)
	if opts.NamespaceAnnotations == nil {
		opts.NamespaceAnnotations = map[string]string{}
	}
	opts.NamespaceAnnotations["mesh.dev/inject"] = "enabled"
	// The suite reads a manifest from every file system that has it and
	// applies them all, one after the other (utils/kubernetes/apply.go,
	// getContentsFromPathOrURL): its own mesh manifests would then
	// replace ours, echo image included. So its file systems lose them.
	suites := make([]fs.FS, 0, len(opts.ManifestFS))
	for _, f := range opts.ManifestFS {
		suites = append(suites, hiding{FS: f, name: mesh.Path})
	}
	opts.ManifestFS = append([]fs.FS{manifests}, suites...)
	opts.MeshManifests = mesh.Path
	opts.CleanupBaseResources = true
	opts.Implementation = confv1.Implementation{
		Organization: "mesh-dev",
		Project:      "mesh",
		URL:          "https://github.com/mesh-dev/mesh",
		Version:      version,
		Contact:      []string{"https://github.com/mesh-dev/mesh/issues"},
	}
	if opts.ReportOutputPath == "" {
		opts.ReportOutputPath = filepath.Join(repoRoot, "docs", "conformance", "mesh-"+version+"-report.yaml")
	}
	return opts, nil
}

// hiding is a file system without one of its files.
type hiding struct {
	fs.FS
	name string
}

func (h hiding) Open(name string) (fs.File, error) {
	if name == h.name {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return h.FS.Open(name)
}

func TestMeshOptions(t *testing.T) {
	version, err := projectVersion()
	if err != nil {
		t.Fatal(err)
	}
	base := suite.ConformanceOptions{ManifestFS: []fs.FS{gwconformance.Manifests}}
	base.NamespaceAnnotations = map[string]string{"kept": "yes"}
	opts, err := meshOptions(base, version)
	if err != nil {
		t.Fatal(err)
	}
	if got := opts.NamespaceAnnotations; got["mesh.dev/inject"] != "enabled" || got["kept"] != "yes" {
		t.Errorf("namespace annotations %v", got)
	}
	if err := opts.Implementation.Validate(); err != nil {
		t.Errorf("implementation: %v", err)
	}
	if want := "../../docs/conformance/mesh-" + version + "-report.yaml"; opts.ReportOutputPath != want {
		t.Errorf("report path %q, want %q", opts.ReportOutputPath, want)
	}
	// The suite applies MeshManifests from every file system that has
	// it: ours only, with the echo image of this version; the suite's
	// other manifests stay readable.
	if len(opts.ManifestFS) != 2 {
		t.Fatalf("%d manifest file systems, want ours and the suite's", len(opts.ManifestFS))
	}
	var found []string
	for _, f := range opts.ManifestFS {
		if b, err := fs.ReadFile(f, opts.MeshManifests); err == nil {
			found = append(found, string(b))
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d file systems hold %s, want ours alone", len(found), opts.MeshManifests)
	}
	if want := "image: " + mesh.Image + ":" + version + "\n"; strings.Count(found[0], want) != 3 {
		t.Errorf("our manifests do not run %q three times", want)
	}
	if _, err := fs.ReadFile(opts.ManifestFS[1], "tests/mesh/httproute-weight.yaml"); err != nil {
		t.Errorf("the suite's test manifests: %v", err)
	}
	// Every feature a mesh test requires is claimed: the profiles' core
	// ones or ours. A test left out would be skipped, silently.
	claimed := sets.New(opts.SupportedFeatures...)
	profiles := map[suite.ConformanceProfileName]suite.ConformanceProfile{
		suite.MeshHTTPConformanceProfileName: suite.MeshHTTPConformanceProfile,
		suite.MeshGRPCConformanceProfileName: suite.MeshGRPCConformanceProfile,
	}
	for _, p := range opts.ConformanceProfiles {
		profile, ok := profiles[p]
		if !ok {
			t.Fatalf("profile %s is not a mesh profile", p)
		}
		claimed = claimed.Union(profile.CoreFeatures)
	}
	for _, test := range meshtests.MeshConformanceTests {
		for _, f := range test.Features {
			if !claimed.Has(f) {
				t.Errorf("%s needs %s, which mesh does not claim", test.ShortName, f)
			}
		}
	}
}
