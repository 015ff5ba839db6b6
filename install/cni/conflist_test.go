package cni

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// bridgeConflist is the local cluster's network: bridge, host-local,
// portmap, loopback.
const bridgeConflist = `{
  "cniVersion": "1.0.0",
  "name": "cbr0",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

var testEntry = map[string]any{"type": PluginType, "kubeconfig": "/etc/cni/net.d/mesh-cni.kubeconfig", "cniVersion": "0.4.0"}

func pluginTypes(t testing.TB, data []byte) []string {
	t.Helper()
	var conf struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	if conf.CNIVersion == "" || conf.Name == "" {
		t.Errorf("the list lost its name or version:\n%s", data)
	}
	var types []string
	for _, p := range conf.Plugins {
		types = append(types, p["type"].(string))
		if _, ok := p["cniVersion"]; ok && p["type"] == PluginType {
			t.Errorf("the entry keeps its own cniVersion:\n%s", data)
		}
	}
	return types
}

func TestInsertPlugin(t *testing.T) {
	tests := []struct {
		name, in  string
		wantTypes []string
		wantErr   string
	}{
		{name: "conflist", in: bridgeConflist, wantTypes: []string{"bridge", "portmap", PluginType}},
		{
			name:      "single .conf becomes a list",
			in:        `{"cniVersion":"0.4.0","name":"cbr0","type":"bridge","ipam":{"type":"host-local"}}`,
			wantTypes: []string{"bridge", PluginType},
		},
		{
			name:      "an old entry moves to the end",
			in:        `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"mesh-cni","kubeconfig":"/old"},{"type":"bridge"}]}`,
			wantTypes: []string{"bridge", PluginType},
		},
		{name: "not JSON", in: `{"plugins":`, wantErr: "network configuration"},
		{name: "plugins not a list", in: `{"name":"n","plugins":{}}`, wantErr: "not a list"},
		{name: "neither", in: `{"name":"n"}`, wantErr: "neither"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, changed, err := InsertPlugin([]byte(tc.in), testEntry)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !changed {
				t.Error("not changed")
			}
			if diff := cmp.Diff(tc.wantTypes, pluginTypes(t, out)); diff != "" {
				t.Errorf("plugins (-want +got):\n%s", diff)
			}
			if !strings.Contains(string(out), `"kubeconfig": "/etc/cni/net.d/mesh-cni.kubeconfig"`) {
				t.Errorf("the entry lost its settings:\n%s", out)
			}
			again, changed, err := InsertPlugin(out, testEntry)
			if err != nil || changed || string(again) != string(out) {
				t.Errorf("inserting again: changed %v, err %v:\n%s", changed, err, again)
			}
			removed, ok, err := RemovePlugin(out, PluginType)
			if err != nil || !ok {
				t.Fatalf("RemovePlugin: %v, %v", ok, err)
			}
			if slices.Contains(pluginTypes(t, removed), PluginType) || len(pluginTypes(t, removed)) != len(tc.wantTypes)-1 {
				t.Errorf("after removal:\n%s", removed)
			}
			if _, ok, _ := RemovePlugin(removed, PluginType); ok {
				t.Error("removing twice removed something")
			}
		})
	}
}

func TestRemovePluginLeavesOthersAlone(t *testing.T) {
	for _, in := range []string{bridgeConflist, `{"cniVersion":"0.4.0","name":"cbr0","type":"bridge"}`} {
		out, changed, err := RemovePlugin([]byte(in), PluginType)
		if err != nil || changed || string(out) != in {
			t.Errorf("RemovePlugin(%s) = %s, %v, %v; want it unchanged", in, out, changed, err)
		}
	}
}

func TestFirstConfFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := FirstConfFile(dir); err != ErrNoNetwork {
		t.Errorf("empty dir: %v, want ErrNoNetwork", err)
	}
	for _, name := range []string{"mesh-cni.kubeconfig", "20-other.conflist", "10-bridge.conf", "05-notes.txt"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "00-dir.conflist"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := FirstConfFile(dir)
	if err != nil || filepath.Base(got) != "10-bridge.conf" {
		t.Errorf("FirstConfFile = %q, %v; want 10-bridge.conf", got, err)
	}
}
