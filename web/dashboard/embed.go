// Package dashboard holds the web page `mesh viz dashboard` serves: the
// built files of the npm project in this directory (TypeScript sources in
// src/, bundled by Vite into dist/).
//
// dist/ is generated but committed, like generated protobuf code, so that
// `go build` works in a clean clone without node. After changing anything
// under src/, index.html or package.json, rebuild it with
//
//	make dashboard    # cd web/dashboard && npm ci && npm run build
//
// and commit dist/ with the change; embed_test.go fails when index.html
// points at assets that are not there.
package dashboard

import (
	"embed"
	"io/fs"
)

//go:embed all:dist
var dist embed.FS

// Files returns the page's files with index.html at the root, ready for
// http.FileServerFS. It is safe for concurrent use.
func Files() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		// fs.Sub fails only on an invalid path, and "dist" is a valid one.
		panic("dashboard: " + err.Error())
	}
	return sub
}
