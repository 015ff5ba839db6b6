package benchdoc

import (
	"os"
	"path/filepath"
	"testing"
)

// Two blocks whose begin markers share a prefix: updating the one with
// the shorter name must not take the other's place.
func TestUpdateTellsBlocksWithSharedPrefixApart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	doc := "# Benchmarks\n\n" +
		"<!-- BEGIN bench-meshpath: generated -->\npath v1\n<!-- END bench-meshpath -->\n\n" +
		"<!-- BEGIN bench-mesh: generated -->\nmesh v1\n<!-- END bench-mesh -->\n"
	if err := os.WriteFile(path, []byte(doc), 0o640); err != nil {
		t.Fatal(err)
	}
	mesh := Block{Begin: "<!-- BEGIN bench-mesh", End: "<!-- END bench-mesh -->"}
	if err := mesh.Update(path, "<!-- BEGIN bench-mesh: generated -->\nmesh v2\n<!-- END bench-mesh -->"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "# Benchmarks\n\n" +
		"<!-- BEGIN bench-meshpath: generated -->\npath v1\n<!-- END bench-meshpath -->\n\n" +
		"<!-- BEGIN bench-mesh: generated -->\nmesh v2\n<!-- END bench-mesh -->\n"
	if string(got) != want {
		t.Errorf("after the update:\n%s\nwant:\n%s", got, want)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("mode after the update: %v, %v; want 0640", st.Mode(), err)
	}
}

func TestUpdateAppendsUnderHeading(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n\n<!-- BEGIN bench-meshpath -->\nx\n<!-- END bench-meshpath -->\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := Block{Begin: "<!-- BEGIN bench-mesh", End: "<!-- END bench-mesh -->", Heading: "## Mesh"}
	if err := b.Update(path, "<!-- BEGIN bench-mesh -->\ny\n<!-- END bench-mesh -->"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "# Benchmarks\n\n<!-- BEGIN bench-meshpath -->\nx\n<!-- END bench-meshpath -->\n\n## Mesh\n\n<!-- BEGIN bench-mesh -->\ny\n<!-- END bench-mesh -->\n"
	if string(got) != want {
		t.Errorf("after the update:\n%s\nwant:\n%s", got, want)
	}
}
