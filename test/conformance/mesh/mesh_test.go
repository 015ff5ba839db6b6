package mesh_test

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/yaml"

	"github.com/mesh-dev/mesh/test/conformance/echo/server"
	"github.com/mesh-dev/mesh/test/conformance/mesh"
)

// objects parses a multi-document YAML file into generic objects.
func objects(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, doc := range strings.Split(string(data), "\n---") {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("yaml: %v\n%s", err, doc)
		}
		var obj map[string]any
		if err := json.Unmarshal(j, &obj); err != nil {
			t.Fatal(err)
		}
		if obj != nil {
			out = append(out, obj)
		}
	}
	return out
}

func read(t *testing.T, fsys fs.FS, path string) []byte {
	t.Helper()
	b, err := fs.ReadFile(fsys, path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// containers returns the pod template's containers of a Deployment, nil
// for other kinds.
func containers(obj map[string]any) []any {
	if obj["kind"] != "Deployment" {
		return nil
	}
	spec := obj["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	return spec["containers"].([]any)
}

// TestOnlyTheCommentedDifferences applies the two differences the file's
// header names to upstream's manifests and expects ours exactly.
func TestOnlyTheCommentedDifferences(t *testing.T) {
	fsys, err := mesh.FS("v9.8.7")
	if err != nil {
		t.Fatal(err)
	}
	ours := objects(t, read(t, fsys, mesh.Path))
	upstream := objects(t, read(t, conformance.Manifests, mesh.Path))
	if len(upstream) == 0 {
		t.Fatal("no upstream objects")
	}
	deployments := 0
	for _, obj := range upstream {
		cs := containers(obj)
		if cs != nil {
			deployments++
		}
		for _, c := range cs {
			c := c.(map[string]any)
			c["image"] = mesh.Image + ":v9.8.7"
			args, _ := c["args"].([]any)
			var kept []any
			for _, a := range args {
				if a != "--crt=/cert.crt" && a != "--key=/cert.key" {
					kept = append(kept, a)
				}
			}
			if args != nil {
				c["args"] = kept
			}
		}
	}
	if deployments != 3 {
		t.Errorf("upstream has %d Deployments, want the 3 echo ones", deployments)
	}
	if !reflect.DeepEqual(ours, upstream) {
		o, _ := json.MarshalIndent(ours, "", " ")
		u, _ := json.MarshalIndent(upstream, "", " ")
		t.Errorf("manifests differ beyond the commented differences (-upstream +ours):\n-%s\n+%s", u, o)
	}
}

// TestArgsParse runs every echo container's args through the server's own
// flag parser: a flag the manifests pass and the app does not know would
// crash-loop the pod on the cluster.
func TestArgsParse(t *testing.T) {
	fsys, err := mesh.FS("v1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"gateway-conformance-mesh/echo-v1":          "http=[8080 8443] grpc=[7070] tcp=[9090] tls=[8443]",
		"gateway-conformance-mesh/echo-v2":          "http=[8080 8443] grpc=[7070] tcp=[9090] tls=[8443]",
		"gateway-conformance-mesh-consumer/echo-v1": "http=[8080] grpc=[7070] tcp=[] tls=[]",
	}
	got := map[string]string{}
	for _, obj := range objects(t, read(t, fsys, mesh.Path)) {
		md := obj["metadata"].(map[string]any)
		for _, c := range containers(obj) {
			c := c.(map[string]any)
			if c["image"] != mesh.Image+":v1.0.0" {
				t.Errorf("%v: image %v", md["name"], c["image"])
			}
			var args []string
			if a, ok := c["args"].([]any); ok {
				for _, s := range a {
					args = append(args, s.(string))
				}
			}
			cfg, err := server.ParseFlags(args, io.Discard)
			if err != nil {
				t.Errorf("%v/%v: %q: %v", md["namespace"], md["name"], args, err)
				continue
			}
			got[fmt.Sprintf("%v/%v", md["namespace"], md["name"])] = fmt.Sprintf("http=%v grpc=%v tcp=%v tls=%v",
				cfg.HTTPPorts, cfg.GRPCPorts, cfg.TCPPorts, cfg.TLSPorts)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("listeners (-want +got):\n-%v\n+%v", want, got)
	}
}

func TestFSRejectsBadTags(t *testing.T) {
	for _, v := range []string{"", "latest", "v1 2", "a/b", "${MESH_VERSION}"} {
		if _, err := mesh.FS(v); err == nil {
			t.Errorf("FS(%q) accepted it", v)
		}
	}
}
