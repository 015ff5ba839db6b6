package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/mesh-dev/mesh/install/cni/interception"
)

// prevResult is what a bridge plugin hands on: an interface, an address
// and a route, in CNI 1.0.0.
const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/var/run/netns/x"}],` +
	`"ips":[{"interface":0,"address":"10.244.0.7/24","gateway":"10.244.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.96.0.10"]}}`

func stdin(t testing.TB, extra string) []byte {
	t.Helper()
	s := `{"cniVersion":"1.0.0","name":"cbr0","type":"mesh-cni","kubeconfig":"/etc/cni/net.d/mesh-cni.kubeconfig","prevResult":` + prevResult + extra + `}`
	if !json.Valid([]byte(s)) {
		t.Fatalf("test config is not JSON: %s", s)
	}
	return []byte(s)
}

func TestParseNetConf(t *testing.T) {
	tests := []struct {
		name, conf, wantErr string
	}{
		{name: "minimal", conf: `{"cniVersion":"1.0.0","type":"mesh-cni","kubeconfig":"/k"}`},
		{name: "every setting", conf: `{"cniVersion":"0.4.0","type":"mesh-cni","kubeconfig":"/k","iptablesMode":"legacy",` +
			`"excludeNamespaces":["kube-system"],"logLevel":"debug","logFile":"/tmp/x","apiTimeout":"3s"}`},
		{name: "not JSON", conf: `{`, wantErr: "mesh-cni config"},
		{name: "no kubeconfig", conf: `{"cniVersion":"1.0.0","type":"mesh-cni"}`, wantErr: "mesh-cni install"},
		{name: "unknown iptables mode", conf: `{"kubeconfig":"/k","iptablesMode":"bpf"}`, wantErr: "want legacy, nft"},
		{name: "bad timeout", conf: `{"kubeconfig":"/k","apiTimeout":"-1s"}`, wantErr: "positive duration"},
		{name: "bad prevResult", conf: `{"cniVersion":"1.0.0","kubeconfig":"/k","prevResult":{"ips":"x"}}`, wantErr: "prevResult"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseNetConf([]byte(tc.conf))
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args   string
		want   PodRef
		wantOK bool
	}{
		{"IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u", PodRef{"shop", "web-1"}, true},
		{"K8S_POD_NAME=web-1", PodRef{Name: "web-1"}, false},
		{"", PodRef{}, false},
		{"garbage;=;;K8S_POD_NAMESPACE", PodRef{}, false},
	}
	for _, tc := range tests {
		got, ok := ParseArgs(tc.args)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("ParseArgs(%q) = %v, %v; want %v, %v", tc.args, got, ok, tc.want, tc.wantOK)
		}
	}
}

// TestAddPassesThrough: for every pod that is not meshed, ADD prints the
// previous result unchanged and touches no namespace (the netns given
// does not exist, so touching it would fail).
func TestAddPassesThrough(t *testing.T) {
	plain := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web"}}}}
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "web-1")
	tests := []struct {
		name     string
		args     string
		extra    string
		pod      *corev1.Pod
		err      error
		wantCall bool
	}{
		{name: "not injected", args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1", pod: plain, wantCall: true},
		{name: "deleted meanwhile", args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1", err: notFound, wantCall: true},
		{name: "not a Kubernetes pod", args: "IgnoreUnknown=1"},
		{name: "excluded namespace", args: "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns",
			extra: `,"excludeNamespaces":["kube-system"]`, err: errors.New("API server down")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			var out, logs bytes.Buffer
			p := &Plugin{
				Pods: func(_ context.Context, ref PodRef) (*corev1.Pod, error) {
					called = true
					if ref != (PodRef{"shop", "web-1"}) {
						t.Errorf("asked for pod %v", ref)
					}
					return tc.pod, tc.err
				},
				Stdout: &out, Stderr: &logs,
			}
			err := p.Add(&skel.CmdArgs{ContainerID: "c1", Netns: "/nonexistent/netns", IfName: "eth0",
				Args: tc.args, StdinData: stdin(t, tc.extra)})
			if err != nil {
				t.Fatalf("ADD: %v\nlog:\n%s", err, logs.String())
			}
			if called != tc.wantCall {
				t.Errorf("asked the API server: %v, want %v", called, tc.wantCall)
			}
			var want, got any
			json.Unmarshal([]byte(prevResult), &want)
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("result %q: %v", out.String(), err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("result (-prevResult +got):\n%s", diff)
			}
		})
	}
}

// TestAddFailsMeshedPods: a meshed pod whose rules cannot be installed, or
// whose meshing cannot be decided, fails with a message that says what to do.
func TestAddFailsMeshedPods(t *testing.T) {
	tests := []struct {
		name    string
		pod     *corev1.Pod
		err     error
		wantErr []string
	}{
		{name: "rules fail", pod: meshedPod(nil), wantErr: []string{"shop/web-1", "installing the mesh's interception rules", "iptablesMode"}},
		{name: "API server down", err: errors.New("connection refused"), wantErr: []string{"connection refused", "kubelet retries"}},
		{name: "malformed annotation", pod: meshedPod(map[string]string{interception.Annotation: "{"}), wantErr: []string{"re-create the pod"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, logs bytes.Buffer
			p := &Plugin{
				Pods:   func(context.Context, PodRef) (*corev1.Pod, error) { return tc.pod, tc.err },
				Stdout: &out, Stderr: &logs,
			}
			err := p.Add(&skel.CmdArgs{ContainerID: "c1", Netns: "/nonexistent/netns", IfName: "eth0",
				Args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1", StdinData: stdin(t, "")})
			if err == nil {
				t.Fatalf("ADD succeeded, printed %s", out.String())
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if out.Len() != 0 {
				t.Errorf("a failed ADD printed a result: %s", out.String())
			}
			if !strings.Contains(logs.String(), "ADD failed") {
				t.Errorf("the failure was not logged:\n%s", logs.String())
			}
		})
	}
}

func TestDelAlwaysSucceeds(t *testing.T) {
	p := &Plugin{Pods: func(context.Context, PodRef) (*corev1.Pod, error) {
		t.Error("DEL asked the API server")
		return nil, nil
	}}
	for _, conf := range []string{"", "{", string(stdin(t, ""))} {
		if err := p.Del(&skel.CmdArgs{Netns: "", StdinData: []byte(conf)}); err != nil {
			t.Errorf("DEL with config %q: %v", conf, err)
		}
	}
}

func TestBinary(t *testing.T) {
	for _, tc := range []struct{ mode, name, want string }{
		{"", "iptables-restore", "iptables-restore"},
		{"legacy", "iptables-restore", "iptables-legacy-restore"},
		{"legacy", "iptables-save", "iptables-legacy-save"},
		{"nft", "ip6tables", "ip6tables-nft"},
		{"nft", "ip6tables-restore", "ip6tables-nft-restore"},
	} {
		if got := binary(tc.mode, tc.name); got != tc.want {
			t.Errorf("binary(%q, %q) = %q, want %q", tc.mode, tc.name, got, tc.want)
		}
	}
}

func TestRestoreWaits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args, want []string
	}{
		{"iptables-restore", []string{"--noflush"}, []string{"-w", "--noflush"}},
		{"ip6tables-legacy-restore", []string{"--noflush"}, []string{"-w", "--noflush"}},
		{"iptables-restore", []string{"-w", "--noflush"}, []string{"-w", "--noflush"}},
		{"iptables", []string{"-w", "-t", "nat", "-C", "OUTPUT"}, []string{"-w", "-t", "nat", "-C", "OUTPUT"}},
		{"iptables-save", []string{"-t", "nat"}, []string{"-t", "nat"}},
	} {
		if diff := cmp.Diff(tc.want, restoreWaits(tc.name, tc.args)); diff != "" {
			t.Errorf("%s %q (-want +got):\n%s", tc.name, tc.args, diff)
		}
	}
}
