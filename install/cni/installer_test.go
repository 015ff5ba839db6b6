package cni

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
)

// node is a fake node's CNI directories and the installer pod's
// ServiceAccount files.
type node struct {
	bin, conf, token, ca, plugin string
}

func newNode(t testing.TB) node {
	t.Helper()
	root := t.TempDir()
	n := node{
		bin: filepath.Join(root, "opt/cni/bin"), conf: filepath.Join(root, "etc/cni/net.d"),
		token: filepath.Join(root, "sa/token"), ca: filepath.Join(root, "sa/ca.crt"),
		plugin: filepath.Join(root, "image/mesh-cni"),
	}
	for _, d := range []string{n.bin, n.conf, filepath.Dir(n.token), filepath.Dir(n.plugin)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, n.token, "token-1\n")
	write(t, n.ca, "CA")
	write(t, n.plugin, "#!/bin/true\n")
	return n
}

func write(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds, failing the test after 5s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func read(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestInstall runs the installer against a fake node: it waits for the
// network's configuration, chains itself in, repairs what the network
// plugin or a token rotation changes, and removes everything on exit.
func TestInstall(t *testing.T) {
	n := newNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	done := make(chan error, 1)
	cfg := InstallConfig{
		Binary: n.plugin, BinDir: n.bin, ConfDir: n.conf, HostConfDir: "/etc/cni/net.d",
		Server: "https://10.96.0.1:443", TokenFile: n.token, CAFile: n.ca,
		Plugin:    NetConf{IPTablesMode: "nft", ExcludeNamespaces: []string{"kube-system"}},
		Interval:  10 * time.Millisecond,
		ReadyFile: filepath.Join(t.TempDir(), "ready"),
	}
	// Read only after Install returns.
	log := slog.New(slog.NewTextHandler(&logs, nil))
	go func() { done <- Install(ctx, cfg, log) }()

	conf := filepath.Join(n.conf, "10-bridge.conf")
	conflist := filepath.Join(n.conf, "10-bridge.conflist")
	kubeconfig := filepath.Join(n.conf, "mesh-cni.kubeconfig")
	eventually(t, "the binary and kubeconfig are in place", func() bool {
		return read(filepath.Join(n.bin, PluginType)) == "#!/bin/true\n" && strings.Contains(read(kubeconfig), "token-1")
	})
	// No network yet, so the plugin is in no chain: not ready.
	if err := Ready(cfg.ReadyFile); err == nil {
		t.Error("ready before the plugin is in any chain")
	}

	// The network plugin writes a single .conf: it becomes a conflist.
	write(t, conf, `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","ipam":{"type":"host-local"}}`)
	eventually(t, "the .conf is converted", func() bool { return read(conflist) != "" })
	eventually(t, "ready once chained", func() bool { return Ready(cfg.ReadyFile) == nil })
	if _, err := os.Stat(conf); !os.IsNotExist(err) {
		t.Errorf("the .conf is still there next to its conflist: %v", err)
	}
	if diff := slices.Compare([]string{"bridge", PluginType}, pluginTypes(t, []byte(read(conflist)))); diff != 0 {
		t.Errorf("conflist:\n%s", read(conflist))
	}
	for _, want := range []string{`"kubeconfig": "/etc/cni/net.d/mesh-cni.kubeconfig"`, `"iptablesMode": "nft"`, `"kube-system"`} {
		if !strings.Contains(read(conflist), want) {
			t.Errorf("the entry lacks %s:\n%s", want, read(conflist))
		}
	}

	// The network plugin rewrites its conflist without us.
	write(t, conflist, bridgeConflist)
	eventually(t, "the entry is back", func() bool {
		return strings.Contains(read(conflist), PluginType)
	})

	// The token rotates.
	write(t, n.token, "token-2\n")
	eventually(t, "the kubeconfig has the new token", func() bool {
		cfg, err := clientcmd.RESTConfigFromKubeConfig([]byte(read(kubeconfig)))
		return err == nil && cfg.BearerToken == "token-2"
	})
	if fi, err := os.Stat(kubeconfig); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v, %v; want 0600: it holds a token", fi.Mode(), err)
	}

	// A network that sorts first appears: the entry moves to it.
	first := filepath.Join(n.conf, "05-calico.conflist")
	write(t, first, strings.Replace(bridgeConflist, "cbr0", "k8s-pod-network", 1))
	eventually(t, "the entry moves to the first conflist", func() bool {
		return strings.Contains(read(first), PluginType) && !strings.Contains(read(conflist), PluginType)
	})

	// A writer leaves the conflist broken for a while: the installer
	// keeps running, and chains itself in again once it is whole.
	write(t, first, `{"plugins": [`)
	time.Sleep(5 * cfg.Interval)
	write(t, first, strings.Replace(bridgeConflist, "cbr0", "k8s-pod-network", 1))
	eventually(t, "the entry is back after the conflist was broken", func() bool {
		return strings.Contains(read(first), PluginType)
	})

	// Someone deletes the binary.
	os.Remove(filepath.Join(n.bin, PluginType))
	eventually(t, "the binary is back", func() bool { return read(filepath.Join(n.bin, PluginType)) != "" })

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Install: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("the broken conflist was not logged:\n%s", logs.String())
	}
	for _, f := range []string{first, conflist} {
		if strings.Contains(read(f), PluginType) {
			t.Errorf("%s still names the plugin:\n%s", f, read(f))
		}
	}
	for _, f := range []string{kubeconfig, filepath.Join(n.bin, PluginType), cfg.ReadyFile} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
	entries, _ := os.ReadDir(n.conf)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if diff := slices.Compare([]string{"05-calico.conflist", "10-bridge.conflist"}, left); diff != 0 {
		t.Errorf("conf dir after exit: %v", left)
	}
}

// TestInstallFailsClearly: a configuration error ends the installer with
// its reason, and what it already wrote is removed.
func TestInstallFailsClearly(t *testing.T) {
	n := newNode(t)
	write(t, filepath.Join(n.conf, "10-broken.conflist"), `{"plugins": 1}`)
	err := Install(context.Background(), InstallConfig{
		Binary: n.plugin, BinDir: n.bin, ConfDir: n.conf, Server: "https://x", TokenFile: n.token,
	}, discard())
	if err == nil || !strings.Contains(err.Error(), "10-broken.conflist") {
		t.Fatalf("Install: %v, want an error naming the broken file", err)
	}
	if _, err := os.Stat(filepath.Join(n.bin, PluginType)); !os.IsNotExist(err) {
		t.Errorf("the binary was left behind: %v", err)
	}
	err = Install(context.Background(), InstallConfig{
		Binary: n.plugin, BinDir: n.bin, ConfDir: n.conf, Server: "https://x", TokenFile: n.token,
		Plugin: NetConf{IPTablesMode: "iptables-nft"},
	}, discard())
	if err == nil || !strings.Contains(err.Error(), "iptablesMode") {
		t.Errorf("Install with a mode the plugin rejects: %v", err)
	}
	err = Install(context.Background(), InstallConfig{Binary: n.plugin, ConfDir: n.conf}, discard())
	if err == nil || !strings.Contains(err.Error(), "bin dir") {
		t.Errorf("Install without a bin dir: %v", err)
	}
}

func TestInstallFlags(t *testing.T) {
	var cfg InstallConfig
	fs := pflag.NewFlagSet("install", pflag.ContinueOnError)
	cfg.AddFlags(fs)
	if err := fs.Parse([]string{"--iptables-mode=legacy", "--exclude-namespaces=kube-system,mesh-system", "--interval=5s"}); err != nil {
		t.Fatal(err)
	}
	entry, err := cfg.Entry()
	if err != nil {
		t.Fatal(err)
	}
	if entry["kubeconfig"] != "/etc/cni/net.d/mesh-cni.kubeconfig" || entry["iptablesMode"] != "legacy" ||
		entry["type"] != PluginType || cfg.BinDir != "/host/opt/cni/bin" || cfg.Interval != 5*time.Second {
		t.Errorf("entry %v, config %+v", entry, cfg)
	}
	for _, k := range []string{"cniVersion", "name", "ipam", "dns"} {
		if _, ok := entry[k]; ok {
			t.Errorf("entry has %s: %v", k, entry)
		}
	}
}
