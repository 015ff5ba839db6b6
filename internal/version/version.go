// Package version holds the release version of every mesh binary. Builds
// set it with -ldflags "-X github.com/mesh-dev/mesh/internal/version.Version=v0.1.0";
// the Makefile does this from the VERSION file.
package version

// Version is the release of this build. Images are tagged with it, never
// "latest", so what runs is always what was asked for.
var Version = "v0.1.0-dev"
