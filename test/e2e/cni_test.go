package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/install/cluster"
	"github.com/mesh-dev/mesh/install/cni/interception"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

const cniNS = "e2e-cni"

// The local cluster's containerd (install/cluster/templates/containerd.toml):
// bin_dir and conf_dir.
var (
	localCNIBinDir  = "/usr/lib/cni"
	localCNIConfDir = filepath.Join(cluster.DefaultStateDir, "cni", "net.d")
)

// TestCNI meshes a namespace that enforces the restricted Pod Security
// Standard, which only CNI mode can: `mesh install --cni` puts the plugin
// on the node, the injected pods have no mesh-init and no container with
// NET_ADMIN, and their traffic is still intercepted: it is mesh TLS on the
// wire (tcpdump never sees a marker the client sends) and the server's
// proxy counts it under the client's identity. At the end the normal
// install is restored, which takes the plugin off the node.
//
// It changes the install for everyone, so it is a serial test (no
// t.Parallel; main_test.go).
func TestCNI(t *testing.T) {
	needEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	_, err := e2e.client.CoreV1().Namespaces().Get(ctx, manifests.DefaultNamespace, metav1.GetOptions{})
	hadMesh := err == nil
	// Registered first, so it runs after the namespace's cleanup: no pod
	// injected for the plugin outlives it.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		restoreNormalInstall(t, ctx, hadMesh)
	})

	args := append(slices.Clone(installArgs), "--cni", "--cni-bin-dir", localCNIBinDir, "--cni-conf-dir", localCNIConfDir)
	r := mustRun(t, ctx, nil, e2e.mesh, args...)
	t.Logf("mesh %s:\n%s", strings.Join(args, " "), r.stdout)
	if !strings.Contains(r.stdout, "daemonset/"+manifests.CNIName+" ready on every node") {
		t.Errorf("mesh install --cni did not wait for the plugin on every node:\n%s", r.stdout)
	}

	t.Run("the plugin is chained last on the node", func(t *testing.T) {
		if file, last := chainedLast(t); last != manifests.CNIName {
			t.Errorf("the last plugin of %s is %q, want %s", file, last, manifests.CNIName)
		}
	})

	applyHardening(t, ctx, "cni.yaml", cniNS)
	t.Run("the namespace refuses what mesh-init would need", func(t *testing.T) {
		// Proves the namespace enforces restricted: without CNI mode, the
		// injected pods themselves would be refused like this one.
		r := command(ctx, []byte(netAdminPod(cniNS)), nil, e2e.kubectl, "apply", "--dry-run=server", "-f", "-")
		if r.err == nil || !strings.Contains(r.stderr, "restricted") {
			t.Fatalf("a pod adding NET_ADMIN in %s: %v\n%s%s; want it refused by Pod Security restricted", cniNS, r.err, r.stdout, r.stderr)
		}
	})
	waitDeployments(t, ctx, cniNS, 3*time.Minute)
	server := meshedPod(t, ctx, cniNS, "server", true)
	defer func() {
		if t.Failed() {
			dumpProxy(t, server)
			logs := command(ctx, nil, nil, e2e.kubectl, "logs", "-n", manifests.CNINamespace, "daemonset/"+manifests.CNIName, "--tail", "50")
			t.Logf("mesh-cni logs:\n%s%s", logs.stdout, logs.stderr)
		}
	}()
	checkCNIPod(t, server)

	t.Run("meshed traffic is mesh TLS and counted", func(t *testing.T) {
		marker := "mesh-cni-marker-" + randomHex(t)
		capture := startCapture(t, ctx)
		client := startLoadIn(t, ctx, cniNS, restrictedLoadJob(cniNS, "client", "server", "/"+marker), "client", true)
		checkCNIPod(t, client)
		waitJobIn(t, ctx, cniNS, "client", 2*time.Minute)
		seen, packets := capture.stop(t, marker)
		t.Logf("captured %d lines on port 8080; marker seen: %v", packets, seen)
		if packets == 0 {
			t.Fatal("tcpdump captured nothing on port 8080: the check would prove nothing")
		}
		if seen {
			t.Errorf("marker %s crossed the node in plain text: the plugin did not intercept the pods' traffic", marker)
		}
		m, err := scrape(ctx, server)
		if err != nil {
			t.Fatal(err)
		}
		clientID := "spiffe://cluster.local/ns/" + cniNS + "/sa/default"
		n := m.Sum("mesh_proxy_http_requests_total", "direction", "inbound", "client_id", clientID)
		t.Logf("the server's proxy counted %.0f inbound requests from %s", n, clientID)
		if n < 1 {
			t.Errorf("the server's proxy counted no inbound request from %s:\n%s", clientID, formatSeries(m, "mesh_proxy_http_requests_total"))
		}
	})

	t.Run("mesh check passes the CNI checks", func(t *testing.T) {
		r := command(ctx, nil, nil, e2e.mesh, "check", "-o", "json")
		var report struct {
			Checks []struct{ Category, Name, Status, Detail, Hint string } `json:"checks"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &report); err != nil {
			t.Fatalf("mesh check -o json: %v\n%s%s", err, r.stdout, r.stderr)
		}
		found := 0
		for _, c := range report.Checks {
			if c.Category != "cni" {
				continue
			}
			found++
			t.Logf("%s: %s %s%s", c.Name, c.Status, c.Detail, c.Hint)
			// A warning about pods of a reused cluster injected before
			// the switch is theirs; one naming this test's is not.
			if c.Status == "error" || c.Status == "warning" && (strings.Contains(c.Hint, cniNS+"/") || strings.Contains(c.Name, "plugin")) {
				t.Errorf("mesh check %q: %s: %s", c.Name, c.Status, c.Hint)
			}
		}
		if found != 2 {
			t.Errorf("mesh check ran %d CNI checks, want 2", found)
		}
	})
}

// checkCNIPod fails unless pod was injected for the plugin: the
// interception annotation the plugin reads, no mesh-init, and no container
// adding a capability.
func checkCNIPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	ref := pod.Namespace + "/" + pod.Name
	if initC, _ := sidecars(pod); initC {
		t.Errorf("pod %s has %s in CNI mode", ref, names.InitContainerName)
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if sc := c.SecurityContext; sc != nil && sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
			t.Errorf("pod %s: container %s adds %v", ref, c.Name, sc.Capabilities.Add)
		}
	}
	v, ok := pod.Annotations[names.AnnotationInterception]
	if !ok {
		t.Errorf("pod %s lacks %s", ref, names.AnnotationInterception)
	} else if _, err := interception.Parse(v); err != nil {
		t.Errorf("pod %s: %v", ref, err)
	}
}

// chainedLast returns the node's network configuration that containerd
// uses (the first .conflist of the conf dir, by name) and the type of its
// last plugin.
func chainedLast(t *testing.T) (file, last string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(localCNIConfDir, "*.conflist"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no network configuration in %s: %v", localCNIConfDir, err)
	}
	slices.Sort(files)
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatalf("%s: %v", files[0], err)
	}
	if len(conf.Plugins) == 0 {
		t.Fatalf("%s has no plugins", files[0])
	}
	return files[0], conf.Plugins[len(conf.Plugins)-1].Type
}

// restoreNormalInstall runs the suite's usual install (without --cni),
// which must take the plugin off the node, then uninstalls when the test
// found no mesh.
func restoreNormalInstall(t *testing.T, ctx context.Context, hadMesh bool) {
	t.Helper()
	r := command(ctx, nil, nil, e2e.mesh, installArgs...)
	if r.err != nil {
		t.Errorf("cleanup: mesh %s: %v\n%s%s", strings.Join(installArgs, " "), r.err, r.stdout, r.stderr)
		return
	}
	if !strings.Contains(r.stdout, "namespace/"+manifests.CNINamespace+" deleted") {
		t.Errorf("mesh install without --cni did not remove the plugin:\n%s", r.stdout)
	}
	poll(t, ctx, 3*time.Minute, "namespace "+manifests.CNINamespace+" gone", func(ctx context.Context) (bool, string, error) {
		_, err := e2e.client.CoreV1().Namespaces().Get(ctx, manifests.CNINamespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		return false, fmt.Sprint("still there: ", err), nil
	})
	if file, last := chainedLast(t); last == manifests.CNIName {
		t.Errorf("the plugin is still chained in %s after the normal install", file)
	}
	if _, err := os.Stat(filepath.Join(localCNIBinDir, manifests.CNIName)); !os.IsNotExist(err) {
		t.Errorf("%s is still on the node: %v", filepath.Join(localCNIBinDir, manifests.CNIName), err)
	}
	if hadMesh {
		return
	}
	if r := command(ctx, nil, nil, e2e.mesh, "uninstall"); r.err != nil {
		t.Errorf("cleanup: mesh uninstall: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
}

// netAdminPod is a pod, not injected, whose container asks for what
// mesh-init needs: root and NET_ADMIN.
func netAdminPod(ns string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: net-admin
  namespace: %s
  annotations: {%s: %s}
spec:
  containers:
    - name: app
      image: ghcr.io/mesh-dev/mesh-demo:%s
      securityContext:
        runAsUser: 0
        capabilities: {add: [NET_ADMIN]}
`, ns, names.AnnotationInject, names.Disabled, e2e.version)
}

// restrictedLoadJob is a loadgen Job requesting path of service that the
// restricted Pod Security Standard admits.
func restrictedLoadJob(ns, name, service, path string) string {
	return fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {job: %[1]s}
    spec:
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: loadgen
          image: ghcr.io/mesh-dev/mesh-demo:%[3]s
          imagePullPolicy: IfNotPresent
          args: ["loadgen", "--target", "%[4]s:8080", "--path", "%[5]s", "--rps", "20", "--concurrency", "4",
                 "--duration", "3s", "--interval", "5s", "--max-failures", "0", "--admin-addr", ""]
          securityContext:
            runAsUser: 65532
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
`, name, ns, e2e.version, service, path)
}
