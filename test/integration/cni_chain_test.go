package integration

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/mesh-dev/mesh/install/cni"
	"github.com/mesh-dev/mesh/test/netnstest"
)

// cniPluginsDir is where Debian's containernetworking-plugins puts bridge
// and host-local, and where the local cluster's containerd finds them.
const cniPluginsDir = "/usr/lib/cni"

// TestCNIChain runs the whole chain as containerd does it on a node:
// `mesh-cni install` (in-process) turns the node's single bridge .conf into
// a conflist ending in mesh-cni; libcni, running in a network namespace
// that plays the node, then runs bridge, host-local and mesh-cni for a
// pod, which gets its address and the mesh's rules; DEL runs the chain
// back; and when the installer stops, the node's configuration no longer
// names mesh-cni and its files are gone. The API server is the fake one
// of TestCNIPlugin, listening in the node's namespace as a real one would
// be reachable from a node.
func TestCNIChain(t *testing.T) {
	lab := netnstest.New(t)
	netnstestRequire(t, "iptables", "iptables-save")
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(cniPluginsDir, p)); err != nil {
			t.Fatalf("the %s CNI plugin is missing: apt-get install containernetworking-plugins (%v)", p, err)
		}
	}
	bin := buildCNI(t)
	node, pod := lab.Pod("cninode"), lab.Pod("cnipod")
	ln, err := node.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := newFakeAPIServer(t, ln, meshedCNIPod())

	// The node's directories and the installer pod's ServiceAccount.
	root := t.TempDir()
	binDir, confDir, sa := filepath.Join(root, "bin"), filepath.Join(root, "net.d"), filepath.Join(root, "sa")
	for _, d := range []string{binDir, confDir, sa} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeTestFile(t, filepath.Join(sa, "token"), "cni-token\n")
	writeTestFile(t, filepath.Join(sa, "ca.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})))
	// A subnet apart from the lab's 10.251.0.0/16.
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.253.%d.0/24", time.Now().UnixNano()%250))
	writeTestFile(t, filepath.Join(confDir, "10-bridge.conf"), fmt.Sprintf(`{"cniVersion":"1.0.0","name":"meshtest","type":"bridge",
		"bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","subnet":%q,"dataDir":%q}}`, subnet, filepath.Join(root, "ipam")))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- cni.Install(ctx, cni.InstallConfig{
			Binary: bin, BinDir: binDir, ConfDir: confDir, Server: api.URL,
			TokenFile: filepath.Join(sa, "token"), CAFile: filepath.Join(sa, "ca.crt"),
			Interval: 20 * time.Millisecond,
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { stop() })

	conflist := filepath.Join(confDir, "10-bridge.conflist")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(readTestFile(conflist), cni.PluginType) {
		if time.Now().After(deadline) {
			t.Fatalf("the installer did not chain mesh-cni in 10s; conf dir: %v", listDir(confDir))
		}
		time.Sleep(10 * time.Millisecond)
	}

	list, err := libcni.ConfListFromFile(conflist)
	if err != nil {
		t.Fatalf("containerd would not load the installer's conflist: %v\n%s", err, readTestFile(conflist))
	}
	runtime := libcni.NewCNIConfigWithCacheDir([]string{binDir, cniPluginsDir}, filepath.Join(root, "cache"), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: "mesh-chain-test", NetNS: pod.NSPath(), IfName: "eth1",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "web-1"}},
	}
	// The plugins run as children of a thread in the node's namespace, as
	// they would under a node's containerd.
	var res *current.Result
	err = node.Do(func() error {
		r, err := runtime.AddNetworkList(context.Background(), list, rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		t.Fatalf("ADD of the chain: %v", err)
	}
	if len(res.IPs) != 1 || !subnet.Contains(netip.MustParseAddr(res.IPs[0].Address.IP.String())) {
		t.Errorf("the pod's result lost bridge's address: %+v", res)
	}
	if out := pod.Run(t, "ip", "-4", "addr", "show", "eth1"); !strings.Contains(out, res.IPs[0].Address.IP.String()) {
		t.Errorf("eth1 lacks the pod's address:\n%s", out)
	}
	rules := natRules(t, pod)
	for _, want := range []string{"-A OUTPUT -p tcp -j MESH_PROXY_OUTPUT", "-A MESH_PROXY_INBOUND -p tcp -m tcp --dport 9090 -j RETURN"} {
		if !strings.Contains(rules, want) {
			t.Errorf("the pod's nat table lacks %q:\n%s", want, rules)
		}
	}
	if err := node.Do(func() error { return runtime.CheckNetworkList(context.Background(), list, rt) }); err != nil {
		t.Errorf("CHECK of the chain: %v", err)
	}
	if err := node.Do(func() error { return runtime.DelNetworkList(context.Background(), list, rt) }); err != nil {
		t.Errorf("DEL of the chain: %v", err)
	}

	if err := stop(); err != nil {
		t.Fatalf("the installer: %v", err)
	}
	if c := readTestFile(conflist); strings.Contains(c, cni.PluginType) || !strings.Contains(c, `"bridge"`) {
		t.Errorf("after the installer stopped, the conflist is:\n%s", c)
	}
	for _, f := range []string{filepath.Join(binDir, cni.PluginType), filepath.Join(confDir, "mesh-cni.kubeconfig")} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
}

func writeTestFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readTestFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func listDir(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
