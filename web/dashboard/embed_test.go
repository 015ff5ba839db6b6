package dashboard

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// assetRef matches the src and href attributes of index.html that point at
// built files (relative URLs, as vite.config.mjs asks with base './').
var assetRef = regexp.MustCompile(`(?:src|href)="\./([^"]+)"`)

// TestFilesIndexReferencesExistingAssets fails when dist/ is stale or broken:
// index.html missing, or naming a script or stylesheet that is not there
// (src/ rebuilt without committing dist/, or the other way round).
func TestFilesIndexReferencesExistingAssets(t *testing.T) {
	files := Files()
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		t.Fatalf("dist has no index.html (run `make dashboard`): %v", err)
	}
	refs := assetRef.FindAllStringSubmatch(string(index), -1)
	var scripts, styles int
	for _, m := range refs {
		name := m[1]
		info, err := fs.Stat(files, name)
		if err != nil {
			t.Errorf("index.html references %q, which dist does not hold (run `make dashboard`): %v", name, err)
			continue
		}
		if info.Size() == 0 {
			t.Errorf("%s is empty", name)
		}
		switch {
		case strings.HasSuffix(name, ".js"):
			scripts++
		case strings.HasSuffix(name, ".css"):
			styles++
		}
	}
	if scripts == 0 || styles == 0 {
		t.Errorf("index.html references %d scripts and %d stylesheets under ./, want at least one of each:\n%s", scripts, styles, index)
	}
	if strings.Contains(string(index), `src="/src/`) {
		t.Errorf("index.html points at the sources (/src/...), not at a build: dist holds an unbuilt index.html")
	}
}

// TestFilesServe checks the files work behind http.FileServerFS, the way
// `mesh viz dashboard` serves them.
func TestFilesServe(t *testing.T) {
	srv := httptest.NewServer(http.FileServerFS(Files()))
	t.Cleanup(srv.Close)

	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET / Content-Type = %q, want text/html", ct)
	}
}
