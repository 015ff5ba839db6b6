// Package fleet is the pretend cluster of the viz benchmark: meshed pods of
// Deployments in one namespace, each pod's proxy on a loopback address of
// its own (all of 127.0.0.0/8 is loopback on Linux). The benchmark, which
// runs the pods' proxies, and vizserver, which shows the pods to
// controller/viz through a fake clientset, build the same Fleet from the
// same namespace, pod count and port.
package fleet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mesh-dev/mesh/internal/names"
)

// PodsPerDeployment is the replicas of every Deployment but perhaps the
// last.
const PodsPerDeployment = 4

// MaxPods is how many pods get an address: 127.0.1.1 to 127.0.254.250.
const MaxPods = 254 * 250

// Callees is how many other Deployments each Deployment calls (fewer when
// there are not that many others).
const Callees = 3

// AppPort is the port the pods serve on and their Services forward to.
const AppPort = 8080

// templateHash is every pod's pod-template-hash: one ReplicaSet per
// Deployment.
const templateHash = "7c9d5f8b6"

// Fleet is the pods and Deployments of a run. It is read only once built.
type Fleet struct {
	Namespace string
	// Port is the proxies' admin port, the one scraped at /metrics.
	Port        int
	Deployments []Deployment
	Pods        []Pod
}

// Deployment is one workload: its pods, its Service (same name, a cluster
// IP) and the Deployments it calls.
type Deployment struct {
	Name      string
	ServiceIP netip.Addr
	// Callees and Callers index Fleet.Deployments.
	Callees, Callers []int
}

// Pod is one meshed pod; its proxy's admin server listens on IP:Port.
type Pod struct {
	Name       string
	Deployment int // index in Fleet.Deployments
	IP         netip.Addr
}

// New returns the fleet of pods pods in namespace, PodsPerDeployment per
// Deployment, whose proxies listen on port.
func New(namespace string, pods, port int) (*Fleet, error) {
	switch {
	case namespace == "":
		return nil, errors.New("fleet: empty namespace")
	case pods < 1 || pods > MaxPods:
		return nil, fmt.Errorf("fleet: %d pods: want 1 to %d", pods, MaxPods)
	case port < 1 || port > 65535:
		return nil, fmt.Errorf("fleet: port %d out of range", port)
	}
	f := &Fleet{Namespace: namespace, Port: port}
	nd := (pods + PodsPerDeployment - 1) / PodsPerDeployment
	for d := range nd {
		dep := Deployment{
			Name: fmt.Sprintf("app-%03d", d),
			// 10.96.0.10 onwards, as a Service CIDR would hand them out.
			ServiceIP: netip.AddrFrom4([4]byte{10, 96, byte((d + 10) / 250), byte((d + 10) % 250)}),
		}
		for k := 1; k <= min(Callees, nd-1); k++ {
			dep.Callees = append(dep.Callees, (d+k)%nd)
			dep.Callers = append(dep.Callers, (d-k+nd)%nd)
		}
		f.Deployments = append(f.Deployments, dep)
	}
	for i := range pods {
		d := i / PodsPerDeployment
		f.Pods = append(f.Pods, Pod{
			Name:       fmt.Sprintf("%s-%s-p%04d", f.Deployments[d].Name, templateHash, i),
			Deployment: d,
			IP:         netip.AddrFrom4([4]byte{127, 0, byte(i/250 + 1), byte(i%250 + 1)}),
		})
	}
	return f, nil
}

// MetricsAddr is ip:port of p's proxy's admin server.
func (f *Fleet) MetricsAddr(p Pod) string {
	return net.JoinHostPort(p.IP.String(), strconv.Itoa(f.Port))
}

// ID is the SPIFFE ID of Deployment d's pods: each Deployment runs as a
// ServiceAccount of its name.
func (f *Fleet) ID(d int) string {
	return "spiffe://cluster.local/ns/" + f.Namespace + "/sa/" + f.Deployments[d].Name
}

// Authority is the Host clients use to call Deployment d's Service.
func (f *Fleet) Authority(d int) string {
	return f.Deployments[d].Name + "." + f.Namespace + ".svc.cluster.local:" + strconv.Itoa(AppPort)
}

// Objects are what the API server would hold for the fleet: the
// namespace, a Service per Deployment and the pods, Running, each owned by
// its Deployment's ReplicaSet and carrying the injector's annotation.
// Started is the pods' start time.
func (f *Fleet) Objects(started time.Time) []runtime.Object {
	objs := []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.Namespace}}}
	for _, d := range f.Deployments {
		objs = append(objs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, Name: d.Name},
			Spec: corev1.ServiceSpec{
				Selector:  map[string]string{"app": d.Name},
				ClusterIP: d.ServiceIP.String(),
				Ports:     []corev1.ServicePort{{Name: "http", Port: AppPort, Protocol: corev1.ProtocolTCP}},
			},
		})
	}
	yes := true
	start := metav1.NewTime(started)
	for _, p := range f.Pods {
		d := f.Deployments[p.Deployment]
		objs = append(objs, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Namespace:   f.Namespace,
				Name:        p.Name,
				UID:         types.UID("uid-" + p.Name),
				Labels:      map[string]string{"app": d.Name, "pod-template-hash": templateHash},
				Annotations: map[string]string{names.AnnotationProxyVersion: "v0.1.0"},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "apps/v1", Kind: "ReplicaSet", Name: d.Name + "-" + templateHash,
					UID: types.UID("uid-rs-" + d.Name), Controller: &yes,
				}},
			},
			Spec: corev1.PodSpec{
				ServiceAccountName: d.Name,
				Containers: []corev1.Container{
					{Name: "app", Image: "bench.invalid/app"},
					{Name: names.ProxyContainerName, Image: "bench.invalid/mesh-proxy", Ports: []corev1.ContainerPort{
						{Name: names.AdminPortName, ContainerPort: int32(f.Port), Protocol: corev1.ProtocolTCP},
					}},
				},
			},
			Status: corev1.PodStatus{
				Phase:     corev1.PodRunning,
				PodIP:     p.IP.String(),
				PodIPs:    []corev1.PodIP{{IP: p.IP.String()}},
				StartTime: &start,
			},
		})
	}
	return objs
}
