package main

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mesh-dev/mesh/bench/internal/kubelab"
	"github.com/mesh-dev/mesh/internal/names"
)

const (
	// namespaceLabel marks the run's namespaces, so a later run may delete
	// one an interrupted run left behind, and no other.
	namespaceLabel = "bench.mesh.dev/meshcost"
	// demoImage is the demo's image without its tag, which follows the
	// repo's VERSION (make images builds it).
	demoImage = "ghcr.io/mesh-dev/mesh-demo"
	// clientApp and serverApp name the pair's Deployments, their
	// containers, and the server's Service.
	clientApp = "client"
	serverApp = "server"
	// serverPort is where `demo echo` listens and the Service's port.
	serverPort = 8080
	// runAsUser is the demo's user: not the proxy's UID 2102, whose
	// traffic skips interception.
	runAsUser = 65532
)

// pair is the client and server of one side of the comparison, all in one
// namespace.
type pair struct {
	meshed bool
	ns     *corev1.Namespace
	client *appsv1.Deployment
	server *appsv1.Deployment
	svc    *corev1.Service
}

// newPair returns the objects of one side: namespace ns, annotated for
// injection when meshed, with a client and a server Deployment of the demo
// image at version and the server's Service. Both pods run `demo echo`:
// the server answers the load; the client only holds the network
// namespace the load is sent from (and, meshed, its proxy). Neither has a
// probe of its own: the kubelet's requests would cross the proxy in both
// the idle and the loaded windows.
func newPair(ns, version string, meshed bool) pair {
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   ns,
		Labels: map[string]string{namespaceLabel: "true"},
	}}
	if meshed {
		namespace.Annotations = map[string]string{names.AnnotationInject: names.Enabled}
	}
	return pair{
		meshed: meshed,
		ns:     namespace,
		client: echoDeployment(ns, clientApp, version),
		server: echoDeployment(ns, serverApp, version),
		svc: &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: serverApp, Namespace: ns, Labels: map[string]string{kubelab.NameLabel: serverApp}},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{kubelab.NameLabel: serverApp},
				Ports: []corev1.ServicePort{{
					Name: "http", Port: serverPort, TargetPort: intstr.FromString("http"), AppProtocol: new("http"),
				}},
			},
		},
	}
}

// echoDeployment is one pod of `demo echo` named app, without the probe
// server (--admin-addr "").
func echoDeployment(ns, app, version string) *appsv1.Deployment {
	labels := map[string]string{kubelab.NameLabel: app}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: new(int64(5)),
					Containers: []corev1.Container{{
						Name:            app,
						Image:           demoImage + ":" + version,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args:            []string{"echo", "--admin-addr", ""},
						Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: serverPort}},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{
								corev1.ResourceCPU:    resource.MustParse("10m"),
								corev1.ResourceMemory: resource.MustParse("16Mi"),
							},
							Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
						},
						SecurityContext: &corev1.SecurityContext{
							RunAsNonRoot:             new(true),
							RunAsUser:                new(int64(runAsUser)),
							RunAsGroup:               new(int64(runAsUser)),
							AllowPrivilegeEscalation: new(false),
							ReadOnlyRootFilesystem:   new(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}

// create makes p's objects in the cluster; the namespace must not exist.
func (p pair) create(ctx context.Context, l *kubelab.Lab) error {
	kc := l.Client
	if _, err := kc.CoreV1().Namespaces().Create(ctx, p.ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", p.ns.Name, err)
	}
	if _, err := kc.CoreV1().Services(p.ns.Name).Create(ctx, p.svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service %s/%s: %w", p.ns.Name, p.svc.Name, err)
	}
	for _, d := range []*appsv1.Deployment{p.server, p.client} {
		if _, err := kc.AppsV1().Deployments(p.ns.Name).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create deployment %s/%s: %w", p.ns.Name, d.Name, err)
		}
	}
	return nil
}
