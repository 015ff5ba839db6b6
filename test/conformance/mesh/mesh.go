// Package mesh holds the base resources of the Gateway API conformance
// suite's mesh tests, pointed at the project's echo image. The suite's
// runner passes FS(version) first in ConfigurableOptions.ManifestFS, so the
// suite finds our manifests.yaml at its default MeshManifests path before
// its own.
package mesh

import (
	_ "embed"
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"testing/fstest"
)

// Path is where the suite looks for the mesh base resources
// (utils/suite/suite.go, the default of MeshManifests).
const Path = "mesh/manifests.yaml"

// Image is the echo image the manifests run, without its tag. hack/images
// builds it as Image:<VERSION>.
const Image = "ghcr.io/mesh-dev/conformance-echo"

const placeholder = "${MESH_VERSION}"

//go:embed manifests.yaml
var manifests string

// tagPattern is what an image tag may be (the OCI distribution spec).
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// FS returns a file system holding Path, the manifests with the echo
// image tagged version.
func FS(version string) (fs.FS, error) {
	if !tagPattern.MatchString(version) || version == "latest" {
		return nil, fmt.Errorf("mesh: %q is not a version tag for %s", version, Image)
	}
	return fstest.MapFS{
		Path: &fstest.MapFile{Data: []byte(strings.ReplaceAll(manifests, placeholder, version)), Mode: 0o444},
	}, nil
}
