package image

import (
	_ "embed"
	"runtime"
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
	JaegerName     = "jaeger"
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

// xtablesMulti is where Debian's iptables (package iptables, nf_tables
// backend) puts its one binary.
const xtablesMulti = "/usr/sbin/xtables-nft-multi"

// multiarch are Debian's library directory names (multiarch tuples) of the
// architectures the images are built for.
var multiarch = map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}

// xtablesLibDir holds the match and target extensions (libxt_owner.so,
// libxt_REDIRECT.so ...) that iptables loads at run time to parse rules;
// without them `-m owner` or `-j REDIRECT` fail inside the image.
func xtablesLibDir(arch string) string { return "/usr/lib/" + multiarch[arch] + "/xtables" }

// Proxy describes the mesh-proxy image for the host's architecture with the
// host's iptables: ProxyFor(version, binary, runtime.GOARCH, "").
func Proxy(version, binary string) Spec { return ProxyFor(version, binary, runtime.GOARCH, "") }

// ProxyFor describes the mesh-proxy image for arch: the static proxy binary
// plus Debian's iptables with its libraries, for the `mesh-proxy init`
// container. root is where Debian's packages for arch are unpacked
// (DebianRoot with iptablesPackages); empty means the host's own iptables,
// which only serves the host's architecture.
func ProxyFor(version, binary, arch, root string) Spec {
	s := Spec{
		Ref: Ref(ProxyName, version),
		Files: []File{
			{Path: "/usr/local/bin/mesh-proxy", Src: binary, Mode: 0o755},
			{Src: xtablesMulti, Libs: true, Root: root},
			{Src: xtablesLibDir(arch), Libs: true, Root: root},
			// iptables asks getprotobyname for "-p tcp" before its own table.
			{Src: "/etc/protocols", Root: root},
		},
		Arch:       arch,
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

// Jaeger v2 (github.com/jaegertracing/jaeger/cmd/jaeger), the tracing
// backend `mesh install --with-jaeger` deploys. Its tag is the release's
// number without the "v", as Jaeger's own images are tagged.
const (
	JaegerVersion = "1.75.0"
	jaegerPkg     = "github.com/jaegertracing/jaeger/cmd/jaeger"
	jaegerBin     = "/jaeger"
	// JaegerConfigPath is where the image keeps jaeger.yaml: the all-in-one
	// configuration, spans in memory.
	JaegerConfigPath = "/etc/jaeger/config.yaml"
)

// jaegerConfig receives OTLP (gRPC :4317, HTTP :4318), keeps traces in
// memory and serves the query API and UI on :16686, health on :13133, all
// on $JAEGER_LISTEN_HOST.
//
//go:embed jaeger.yaml
var jaegerConfig []byte

// jaegerLDFlags stamp the version Jaeger reports (its internal/version).
const jaegerLDFlags = "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=v" + JaegerVersion

// Jaeger describes the Jaeger image around a static jaeger binary for
// arch. It listens on every address of the pod and runs as non-root.
func Jaeger(binary, arch string) Spec {
	s := staticSpec(Ref(JaegerName, JaegerVersion), jaegerBin, binary, NonRootUID, JaegerVersion)
	s.Files = append(s.Files, File{Path: JaegerConfigPath, Data: jaegerConfig})
	s.Cmd = []string{"--config", JaegerConfigPath}
	s.Env = []string{"JAEGER_LISTEN_HOST=0.0.0.0"}
	s.Arch = arch
	s.Labels["org.opencontainers.image.source"] = "https://github.com/jaegertracing/jaeger"
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
