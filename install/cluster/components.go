package cluster

import (
	"path/filepath"
)

// component is one long-running process of the node, started inside the
// node namespace in this order and stopped in the reverse.
type component struct {
	name string
	bin  string
	args []string
	// health is a URL checked from inside the node namespace; 200 means
	// ready. Empty means the component has its own check (see waitReady).
	health string
}

// components lists the processes of a cluster whose Kubernetes binaries are
// in k8sBin.
func components(p paths, k8sBin string) []component {
	s := p.state
	pki := func(f string) string { return filepath.Join(p.pki, f) }
	kc := func(f string) string { return filepath.Join(s, f) }
	return []component{
		{
			name: "etcd", bin: "/usr/bin/etcd",
			args: []string{
				"--name=" + NodeName, "--data-dir=" + filepath.Join(s, "etcd"),
				"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
				"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
				"--initial-cluster=" + NodeName + "=http://127.0.0.1:2380",
				"--listen-metrics-urls=http://127.0.0.1:2381",
			},
			health: "http://127.0.0.1:2379/health",
		},
		{
			name: "containerd", bin: "/usr/bin/containerd",
			args: []string{"--config=" + filepath.Join(p.containerd, "config.toml")},
		},
		{
			name: "kube-apiserver", bin: filepath.Join(k8sBin, "kube-apiserver"),
			args: []string{
				"--advertise-address=" + NodeIP, "--secure-port=6443",
				"--etcd-servers=http://127.0.0.1:2379",
				"--service-cluster-ip-range=" + ServiceCIDR,
				"--token-auth-file=" + pki("tokens.csv"),
				"--client-ca-file=" + pki("ca.crt"),
				"--tls-cert-file=" + pki("apiserver.crt"), "--tls-private-key-file=" + pki("apiserver.key"),
				"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
				"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
				// Reach the kubelet by node IP, not by looking its name up.
				"--kubelet-preferred-address-types=InternalIP",
				// Send webhook calls straight to endpoint IPs.
				"--enable-aggregator-routing=true",
				"--authorization-mode=Node,RBAC",
				"--enable-admission-plugins=NodeRestriction",
				"--allow-privileged=true",
				// ServiceAccount tokens and TokenReview need an issuer and
				// a key pair.
				"--service-account-issuer=https://kubernetes.default.svc." + Domain,
				"--service-account-key-file=" + pki("sa.pub"),
				"--service-account-signing-key-file=" + pki("sa.key"),
				"--api-audiences=https://kubernetes.default.svc." + Domain,
				// The aggregation layer (mesh-viz's tap API): the apiserver
				// authenticates the user, then forwards the request with
				// the user in these headers over a client certificate the
				// extension server checks, as on a kubeadm cluster.
				"--requestheader-client-ca-file=" + pki("front-proxy-ca.crt"),
				"--requestheader-allowed-names=" + frontProxyClient,
				"--requestheader-username-headers=X-Remote-User",
				"--requestheader-group-headers=X-Remote-Group",
				"--requestheader-extra-headers-prefix=X-Remote-Extra-",
				"--proxy-client-cert-file=" + pki("front-proxy-client.crt"),
				"--proxy-client-key-file=" + pki("front-proxy-client.key"),
				"--profiling=false",
			},
		},
		{
			name: "kube-controller-manager", bin: filepath.Join(k8sBin, "kube-controller-manager"),
			args: []string{
				"--kubeconfig=" + kc("controller-manager.kubeconfig"),
				"--authentication-kubeconfig=" + kc("controller-manager.kubeconfig"),
				"--authorization-kubeconfig=" + kc("controller-manager.kubeconfig"),
				"--bind-address=127.0.0.1", "--leader-elect=false",
				"--service-account-private-key-file=" + pki("sa.key"),
				"--root-ca-file=" + pki("ca.crt"),
				"--use-service-account-credentials=true",
				"--cluster-signing-cert-file=" + pki("ca.crt"), "--cluster-signing-key-file=" + pki("ca.key"),
				"--service-cluster-ip-range=" + ServiceCIDR,
				"--profiling=false",
			},
			health: "https://127.0.0.1:10257/healthz",
		},
		{
			name: "kube-scheduler", bin: filepath.Join(k8sBin, "kube-scheduler"),
			args: []string{
				"--kubeconfig=" + kc("scheduler.kubeconfig"),
				"--authentication-kubeconfig=" + kc("scheduler.kubeconfig"),
				"--authorization-kubeconfig=" + kc("scheduler.kubeconfig"),
				"--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false",
			},
			health: "https://127.0.0.1:10259/healthz",
		},
		{
			name: "kubelet", bin: filepath.Join(k8sBin, "kubelet"),
			args: []string{
				"--config=" + filepath.Join(p.kubelet, "config.yaml"),
				"--kubeconfig=" + kc("kubelet.kubeconfig"),
				"--root-dir=" + filepath.Join(p.kubelet, "root"),
				"--cert-dir=" + filepath.Join(p.kubelet, "pki"),
				"--node-ip=" + NodeIP, "--hostname-override=" + NodeName,
			},
			health: "http://127.0.0.1:10248/healthz",
		},
		{
			name: "kube-proxy", bin: filepath.Join(k8sBin, "kube-proxy"),
			args:   []string{"--config=" + kc("kube-proxy.yaml")},
			health: "http://127.0.0.1:10256/livez",
		},
	}
}
