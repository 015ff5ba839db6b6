package cluster

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func testPaths(t *testing.T) paths {
	t.Helper()
	return newPaths(Config{StateDir: t.TempDir(), CacheDir: t.TempDir(), Name: "mesh-test", RepoRoot: t.TempDir()})
}

// TestWriteConfigs renders every template and checks the settings the notes
// say the node cannot work without.
func TestWriteConfigs(t *testing.T) {
	p := testPaths(t)
	if err := os.MkdirAll(p.kubelet, 0o755); err != nil {
		t.Fatal(err)
	}
	images := infraImages{pause: "ghcr.io/mesh-dev/pause:v1", coredns: "ghcr.io/mesh-dev/coredns:v1.15.0"}
	if err := writeConfigs(p, images); err != nil {
		t.Fatal(err)
	}
	read := func(rel string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(p.state, rel))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct {
		file string
		want []string
	}{
		{"containerd/config.toml", []string{
			`sandbox_image = "ghcr.io/mesh-dev/pause:v1"`, "restrict_oom_score_adj = true",
			`bin_dir = "/usr/lib/cni"`, `address = "` + p.containerdSock + `"`,
			`root = "` + p.state + `/containerd/root"`, "netns_mounts_under_state_dir = true",
		}},
		{"kubelet/config.yaml", []string{
			"failCgroupV1: false", "cgroupDriver: cgroupfs", "cgroupRoot: /mesh-test",
			"- " + DNSIP, "resolvConf: " + p.kubelet + "/resolv.conf",
		}},
		{"kube-proxy.yaml", []string{"mode: iptables", "clusterCIDR: " + PodCIDR}},
		{"manifests/coredns.yaml", []string{"image: ghcr.io/mesh-dev/coredns:v1.15.0", "clusterIP: " + DNSIP}},
		{"kubelet/resolv.conf", []string{"nameserver " + DNSIP + "\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got := read(tc.file)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%s lacks %q:\n%s", tc.file, w, got)
				}
			}
		})
	}
	if n := strings.Count(read("kubelet/resolv.conf"), "nameserver"); n != 1 {
		t.Errorf("resolv.conf names %d servers, want only the cluster DNS", n)
	}

	// The CNI conflist is JSON: parse it rather than match text.
	var conf struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type string `json:"type"`
			IPAM struct {
				DataDir string                `json:"dataDir"`
				Ranges  [][]map[string]string `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(read("cni/net.d/10-mesh.conflist")), &conf); err != nil {
		t.Fatalf("conflist: %v", err)
	}
	var types []string
	for _, pl := range conf.Plugins {
		types = append(types, pl.Type)
	}
	if diff := cmp.Diff([]string{"bridge", "portmap", "loopback"}, types); diff != "" {
		t.Errorf("plugins (-want +got):\n%s", diff)
	}
	if conf.Name != "mesh-test" || conf.Plugins[0].IPAM.Ranges[0][0]["subnet"] != PodCIDR ||
		!strings.HasPrefix(conf.Plugins[0].IPAM.DataDir, p.state) {
		t.Errorf("conflist = %+v", conf)
	}
}

func TestK8sVersion(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, wrapperDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mod := "module x\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v1.37.2\n\nreplace k8s.io/api => k8s.io/api v0.37.2\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := K8sVersion(root)
	if err != nil || v != "v1.37.2" {
		t.Errorf("K8sVersion = %q, %v", v, err)
	}
	if _, err := K8sVersion(t.TempDir()); err == nil {
		t.Error("K8sVersion of a checkout without the wrapper module succeeded")
	}
}

// TestWrapperModulePinsKubernetes keeps the committed wrapper module and the
// cache key in step.
func TestWrapperModulePinsKubernetes(t *testing.T) {
	v, err := K8sVersion(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("..", "..", wrapperDir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	staging := "v0" + strings.TrimPrefix(v, "v1")
	for _, m := range []string{"k8s.io/api", "k8s.io/client-go", "k8s.io/kubelet", "k8s.io/kubectl"} {
		if !strings.Contains(string(b), m+" => "+m+" "+staging) {
			t.Errorf("wrapper go.mod does not replace %s with %s", m, staging)
		}
	}
}

func TestK8sLDFlags(t *testing.T) {
	got := k8sLDFlags("v1.37.2")
	for _, want := range []string{
		"-X k8s.io/component-base/version.gitVersion=v1.37.2",
		"-X k8s.io/client-go/pkg/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=37",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ldflags %q lack %q", got, want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/var/lib/x", "/var/lib/x"},
		{`/mnt/a\040b`, "/mnt/a b"},
		{`/mnt/tab\011x`, "/mnt/tab\tx"},
		{`/odd\`, `/odd\`},
	}
	for _, tc := range tests {
		if got := unescapeMount(tc.in); got != tc.want {
			t.Errorf("unescapeMount(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestUnder(t *testing.T) {
	tests := []struct {
		p, dir string
		want   bool
	}{
		{"/var/lib/mesh-cluster", "/var/lib/mesh-cluster", true},
		{"/var/lib/mesh-cluster/kubelet", "/var/lib/mesh-cluster", true},
		{"/var/lib/mesh-cluster2", "/var/lib/mesh-cluster", false},
		{"/var/lib", "/var/lib/mesh-cluster", false},
	}
	for _, tc := range tests {
		if got := under(tc.p, tc.dir); got != tc.want {
			t.Errorf("under(%q, %q) = %v", tc.p, tc.dir, got)
		}
	}
}

func TestHostVethNameFits(t *testing.T) {
	for _, n := range []string{"mesh-cluster", "a-much-longer-cluster-name"} {
		if got := hostVethName(n); len(got) > 15 {
			t.Errorf("hostVethName(%q) = %q, longer than 15 bytes", n, got)
		}
	}
}

func TestPKI(t *testing.T) {
	p := testPaths(t)
	if err := writePKI(p); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "sa.key", "sa.pub", "tokens.csv"} {
		if _, err := os.Stat(filepath.Join(p.pki, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	tokens, err := os.ReadFile(filepath.Join(p.pki, "tokens.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(tokens), `,mesh-admin,1000,"system:masters"`) {
		t.Errorf("tokens.csv has no system:masters admin:\n%s", tokens)
	}
	// Pods reach the apiserver through the kubernetes Service, the host and
	// the components by the node address: the certificate must name both.
	caPEM, _ := os.ReadFile(filepath.Join(p.pki, "ca.crt"))
	srvPEM, _ := os.ReadFile(filepath.Join(p.pki, "apiserver.crt"))
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	block, _ := pem.Decode(srvPEM)
	if block == nil {
		t.Fatal("apiserver.crt holds no PEM block")
	}
	srv, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{NodeIP, APIServerIP, "kubernetes.default.svc", "kubernetes.default.svc." + Domain} {
		opts := x509.VerifyOptions{Roots: roots, DNSName: name}
		if _, err := srv.Verify(opts); err != nil {
			t.Errorf("apiserver certificate for %s: %v", name, err)
		}
	}
	kc, err := os.ReadFile(p.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(kc), "server: https://"+NodeIP+":6443") {
		t.Errorf("kubeconfig:\n%s", kc)
	}
}

// TestStartGroupsCoverComponents keeps the start order and the component
// list in step: a component missing from startGroups would never start.
func TestStartGroupsCoverComponents(t *testing.T) {
	var grouped []string
	for _, g := range startGroups {
		grouped = append(grouped, g...)
	}
	var names []string
	for _, c := range components(testPaths(t), "/bin") {
		names = append(names, c.name)
	}
	if diff := cmp.Diff(names, grouped); diff != "" {
		t.Errorf("startGroups vs components (-components +groups):\n%s", diff)
	}
}
