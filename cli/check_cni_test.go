package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

func cniDaemonSet(desired, updated, ready int32) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: manifests.CNINamespace, Name: manifests.CNIName, Generation: 2},
		Status: appsv1.DaemonSetStatus{ObservedGeneration: 2, DesiredNumberScheduled: desired,
			UpdatedNumberScheduled: updated, NumberReady: ready},
	}
}

var cniOn = map[string]string{names.AnnotationCNI: names.Enabled}

func TestCheckCNIPlugin(t *testing.T) {
	cp := manifests.DefaultNamespace
	tests := []struct {
		name       string
		objects    []runtime.Object
		wantStatus checkStatus
		wantDetail string
		wantHint   string
	}{
		{name: "not in CNI mode", objects: []runtime.Object{annotatedNS(cp, nil)}, wantStatus: statusOK, wantDetail: "not in CNI mode"},
		{name: "ready everywhere", objects: []runtime.Object{annotatedNS(cp, cniOn), cniDaemonSet(3, 3, 3)}, wantStatus: statusOK, wantDetail: "ready on 3 of 3 nodes"},
		{name: "one node not ready", objects: []runtime.Object{annotatedNS(cp, cniOn), cniDaemonSet(3, 3, 2)}, wantStatus: statusFail, wantHint: "ready on 2 of 3 nodes"},
		{name: "one node not updated", objects: []runtime.Object{annotatedNS(cp, cniOn), cniDaemonSet(3, 2, 3)}, wantStatus: statusFail, wantHint: "2 of 3 nodes updated"},
		{name: "on no node", objects: []runtime.Object{annotatedNS(cp, cniOn), cniDaemonSet(0, 0, 0)}, wantStatus: statusFail, wantHint: "scheduled on no node"},
		{name: "CNI mode without the plugin", objects: []runtime.Object{annotatedNS(cp, cniOn)}, wantStatus: statusFail, wantHint: "run mesh install --cni"},
		{name: "plugin left over", objects: []runtime.Object{annotatedNS(cp, nil), cniDaemonSet(1, 1, 1)}, wantStatus: statusWarn, wantHint: "mesh install to remove it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runOneCheck(t, checkCNIPlugin, tc.objects...)
			if got.Status != tc.wantStatus || got.Detail != tc.wantDetail || !strings.Contains(got.Hint, tc.wantHint) {
				t.Errorf("status %s, detail %q, hint %q; want %s, %q, %q", got.Status, got.Detail, got.Hint, tc.wantStatus, tc.wantDetail, tc.wantHint)
			}
		})
	}
}

// meshedPod is a running pod injected by the control plane, for the CNI
// plugin (annotated, no mesh-init) or not.
func meshedPod(name string, forCNI bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name,
			Labels:      map[string]string{names.LabelControlPlaneNamespace: manifests.DefaultNamespace},
			Annotations: map[string]string{names.AnnotationProxyVersion: "v0.0.0"}},
		Spec:   corev1.PodSpec{InitContainers: []corev1.Container{{Name: names.ProxyContainerName}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if forCNI {
		p.Annotations[names.AnnotationInterception] = "{}"
	} else {
		p.Spec.InitContainers = append([]corev1.Container{{Name: names.InitContainerName}}, p.Spec.InitContainers...)
	}
	return p
}

func TestCheckInterceptionMode(t *testing.T) {
	cp := manifests.DefaultNamespace
	tests := []struct {
		name       string
		objects    []runtime.Object
		wantStatus checkStatus
		wantDetail string
		wantHint   string
	}{
		{name: "CNI mode", objects: []runtime.Object{annotatedNS(cp, cniOn), meshedPod("a", true), meshedPod("b", true)},
			wantStatus: statusOK, wantDetail: "2 meshed pods, by the CNI plugin"},
		{name: "mesh-init mode", objects: []runtime.Object{annotatedNS(cp, nil), meshedPod("a", false)},
			wantStatus: statusOK, wantDetail: "1 meshed pod, by the mesh-init"},
		{name: "CNI mode, a pod from before", objects: []runtime.Object{annotatedNS(cp, cniOn), meshedPod("a", true), meshedPod("old", false)},
			wantStatus: statusWarn, wantHint: "shop/old"},
		{name: "mesh-init mode, a pod for the plugin", objects: []runtime.Object{annotatedNS(cp, nil), meshedPod("a", false), meshedPod("cni", true)},
			wantStatus: statusFail, wantHint: "shop/cni"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runOneCheck(t, checkInterceptionMode, tc.objects...)
			if got.Status != tc.wantStatus || got.Detail != tc.wantDetail || !strings.Contains(got.Hint, tc.wantHint) {
				t.Errorf("status %s, detail %q, hint %q; want %s, %q, %q", got.Status, got.Detail, got.Hint, tc.wantStatus, tc.wantDetail, tc.wantHint)
			}
		})
	}
}

// TestInstallCNIFlags: --cni's directories reach the manifests, go only
// with --cni, and must be paths a hostPath can name.
func TestInstallCNIFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
		want    manifests.CNI
	}{
		{args: nil, want: manifests.CNI{}},
		{args: []string{"--cni"}, want: manifests.CNI{Enabled: true}},
		{args: []string{"--cni", "--cni-bin-dir", "/usr/lib/cni", "--cni-conf-dir", "/var/lib/mesh-cluster/cni/net.d"},
			want: manifests.CNI{Enabled: true, BinDir: "/usr/lib/cni", ConfDir: "/var/lib/mesh-cluster/cni/net.d"}},
		{args: []string{"--cni-bin-dir", "/usr/lib/cni"}, wantErr: "--cni-bin-dir goes with --cni"},
		{args: []string{"--cni", "--cni-conf-dir", "etc/cni"}, wantErr: "--cni-bin-dir or --cni-conf-dir"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			opts := defaultInstallOptions()
			cmd := &cobra.Command{Use: "install"}
			opts.addFlags(cmd.Flags())
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			err := opts.validate(cmd, manifests.DefaultNamespace)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err %v, want %q", err, tc.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if got := opts.values(manifests.DefaultNamespace).CNI; got != tc.want {
				t.Errorf("values' CNI %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestPruneCNI: an install without --cni deletes what --cni made (the
// namespace, which holds the DaemonSet, and the RBAC), and leaves alone
// objects of the same names that are not install's.
func TestPruneCNI(t *testing.T) {
	ours := map[string]string{manifests.PartOfLabel: manifests.PartOf}
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: manifests.CNINamespace, Labels: ours}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: manifests.CNIName, Labels: ours}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: manifests.CNIName}}, // someone else's
	)
	pruned, err := pruneCNI(context.Background(), &kube{client: client})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(pruned, " "), "namespace/"+manifests.CNINamespace+" clusterrole/"+manifests.CNIName; got != want {
		t.Errorf("pruned %q, want %q", got, want)
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Get(context.Background(), manifests.CNIName, metav1.GetOptions{}); err != nil {
		t.Errorf("the unlabelled binding is gone: %v", err)
	}
	// Nothing left: nothing to do.
	pruned, err = pruneCNI(context.Background(), &kube{client: fake.NewClientset()})
	if err != nil || len(pruned) != 0 {
		t.Errorf("on an empty cluster: pruned %q, err %v", pruned, err)
	}
}

// TestCNIObjectsGoFirst: install applies and waits for exactly the
// plugin's objects before the rest, and the control-plane namespace, whose
// annotation switches the injector to CNI mode, is not among them.
func TestCNIObjectsGoFirst(t *testing.T) {
	ms, err := manifests.Render(manifests.Values{Namespace: manifests.DefaultNamespace, Registry: manifests.DefaultRegistry,
		Version: "v0.0.0", TrustDomain: "cluster.local", CNI: manifests.CNI{Enabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	var first []string
	for _, m := range ms {
		plugin := m.Object.GetNamespace() == manifests.CNINamespace || m.Object.GetName() == manifests.CNIName
		if isCNIObject(m) != plugin {
			t.Errorf("%s (namespace %q): isCNIObject %v, want %v", m.Name(), m.Object.GetNamespace(), !plugin, plugin)
		}
		if isCNIObject(m) {
			first = append(first, m.Name())
		}
	}
	want := "namespace/mesh-cni serviceaccount/mesh-cni clusterrole/mesh-cni clusterrolebinding/mesh-cni daemonset/mesh-cni"
	if got := strings.Join(first, " "); got != want {
		t.Errorf("applied first: %s; want %s", got, want)
	}
}
