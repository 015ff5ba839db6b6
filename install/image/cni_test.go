package image

import (
	"slices"
	"testing"
)

// TestCNISpec: the image runs the binary the installer copies onto nodes,
// as root (the owner of the nodes' CNI directories), and holds nothing
// else that a plugin run on the node could need.
func TestCNISpec(t *testing.T) {
	s := CNI("v1.2.3", "/tmp/build/mesh-cni")
	if s.Ref != Registry+"/mesh-cni:v1.2.3" {
		t.Errorf("ref %s", s.Ref)
	}
	if !slices.Equal(s.Entrypoint, []string{cniBin}) || s.User != "0:0" {
		t.Errorf("entrypoint %q user %q, want %s as 0:0", s.Entrypoint, s.User, cniBin)
	}
	if len(s.Files) != 1 || s.Files[0].Path != cniBin || s.Files[0].Src != "/tmp/build/mesh-cni" || s.Files[0].Mode != 0o755 || s.Files[0].Libs {
		t.Errorf("files %+v, want only the static binary at %s", s.Files, cniBin)
	}
}
