package image

import (
	"strconv"

	"github.com/mesh-dev/mesh/internal/names"
)

// The images the project builds. Their references are the defaults `mesh
// install` and the local cluster use, so they live in one place.

const (
	// Registry is the repository prefix of every image the project builds.
	Registry = "ghcr.io/mesh-dev"
	// CoreDNSVersion is the CoreDNS release the local cluster runs as its
	// DNS; its image is tagged with it.
	CoreDNSVersion = "v1.15.0"
	// NonRootUID is the UID of images that need no particular identity
	// (the distroless "nonroot" convention).
	NonRootUID = "65532"
)

// proxyUID is the UID and GID mesh-proxy's image runs as.
var proxyUID = strconv.Itoa(names.ProxyUID)

// Image names, without registry or tag.
const (
	ProxyName      = "mesh-proxy"
	ControllerName = "mesh-controller"
	PauseName      = "pause"
	CoreDNSName    = "coredns"
	DemoName       = "mesh-demo"
)

// Ref returns Registry/name:tag.
func Ref(name, tag string) string { return Registry + "/" + name + ":" + tag }

// iptablesTools are the names Debian's xtables-nft-multi answers to that
// `mesh-proxy init` may run. The binary picks its mode from argv[0].
var iptablesTools = []string{
	"iptables", "iptables-save", "iptables-restore",
	"ip6tables", "ip6tables-save", "ip6tables-restore",
	"iptables-nft", "iptables-nft-save", "iptables-nft-restore",
	"ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore",
}

// Host paths of Debian's iptables (package iptables, nf_tables backend).
const (
	xtablesMulti = "/usr/sbin/xtables-nft-multi"
	// xtablesLibDir holds the match and target extensions (libxt_owner.so,
	// libxt_REDIRECT.so ...) that iptables loads at run time to parse rules;
	// without them `-m owner` or `-j REDIRECT` fail inside the image.
	xtablesLibDir = "/usr/lib/x86_64-linux-gnu/xtables"
)

// Proxy describes the mesh-proxy image: the static proxy binary plus Debian's
// iptables with its libraries, for the `mesh-proxy init` container.
func Proxy(version, binary string) Spec {
	s := Spec{
		Ref: Ref(ProxyName, version),
		Files: []File{
			{Path: "/usr/local/bin/mesh-proxy", Src: binary, Mode: 0o755},
			{Src: xtablesMulti, Libs: true},
			{Src: xtablesLibDir, Libs: true},
			// iptables asks getprotobyname for "-p tcp" before its own table.
			{Src: "/etc/protocols"},
		},
		Dirs:       []string{"/tmp", "/run"},
		Entrypoint: []string{"/usr/local/bin/mesh-proxy"},
		// names.ProxyUID, whose traffic `mesh-proxy init` exempts from
		// interception (DESIGN.md, fixed contract).
		User:   proxyUID + ":" + proxyUID,
		Labels: labels(version),
	}
	for _, name := range iptablesTools {
		s.Symlinks = append(s.Symlinks, Symlink{Path: "/usr/sbin/" + name, Target: "xtables-nft-multi"})
	}
	return s
}

// Controller describes the mesh-controller image.
func Controller(version, binary string) Spec {
	return staticSpec(Ref(ControllerName, version), "/usr/local/bin/mesh-controller", binary, NonRootUID, version)
}

// Demo is the demo app of testdata/demo: one binary whose subcommand
// (web, catalog, orders, payments, loadgen) the manifests pass as args.
func Demo(version, binary string) Spec {
	return staticSpec(Ref(DemoName, version), "/demo", binary, NonRootUID, version)
}

// Pause describes the sandbox image containerd starts for every pod
// (install/cluster/pause). It runs as 65535 like Kubernetes' own pause.
func Pause(version, binary string) Spec {
	return staticSpec(Ref(PauseName, version), "/pause", binary, "65535:65535", version)
}

// CoreDNS describes the cluster DNS image around a static coredns binary.
// It runs as root so it can bind port 53; its pod drops every capability
// but NET_BIND_SERVICE.
func CoreDNS(binary string) Spec {
	s := staticSpec(Ref(CoreDNSName, CoreDNSVersion), "/coredns", binary, "0:0", CoreDNSVersion)
	s.Cmd = []string{"-conf", "/etc/coredns/Corefile"}
	return s
}

// Static describes an image holding one static binary as its entrypoint,
// such as a test server.
func Static(ref, binary string) Spec {
	return staticSpec(ref, "/app", binary, NonRootUID, "")
}

func staticSpec(ref, path, binary, user, version string) Spec {
	return Spec{
		Ref:        ref,
		Files:      []File{{Path: path, Src: binary, Mode: 0o755}},
		Dirs:       []string{"/tmp"},
		Entrypoint: []string{path},
		User:       user,
		Labels:     labels(version),
	}
}

func labels(version string) map[string]string {
	if version == "" {
		return nil
	}
	return map[string]string{
		"org.opencontainers.image.source":  "https://github.com/mesh-dev/mesh",
		"org.opencontainers.image.version": version,
	}
}
