package watcher

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/internal/ports"
	"github.com/mesh-dev/mesh/internal/workload"
)

// Keys of Endpoint.Labels.
const (
	LabelNamespace      = "namespace"
	LabelService        = "service"
	LabelPod            = "pod"
	LabelServiceAccount = "serviceaccount"
	// LabelDeployment is derived from a ReplicaSet owner; the pod's
	// controller itself is under its kind in lower case ("replicaset").
	LabelDeployment = "deployment"
	// LabelWorkload is kind/name of the pod's workload (internal/workload),
	// which proxies export as dst_workload and mesh viz groups by.
	LabelWorkload = "workload"
)

// Endpoint is one address of a destination and what is known of the pod
// behind it. Values are immutable once in a Set.
type Endpoint struct {
	Addr netip.AddrPort
	// Zone is the EndpointSlice endpoint's zone; "" when unknown, and always
	// for a pod-IP destination (pods do not record their zone).
	Zone string
	// Meshed is true when the pod carries mesh.dev/proxy-version, the mark
	// the injector leaves on every pod it gives a mesh-proxy.
	Meshed bool
	// Namespace and ServiceAccount name the pod's identity; ServiceAccount
	// is "" when the endpoint is not backed by a pod the cache knows.
	Namespace      string
	ServiceAccount string
	// Opaque is true when the port is listed in config.mesh.dev/opaque-ports
	// of the pod (its target port) or the Service (its service port), each
	// inheriting its namespace's annotation when it has none of its own.
	Opaque bool
	// Labels describe the workload for metrics (the Label* keys and the
	// pod's owner kind); shared between Sets, never modified.
	Labels map[string]string
}

// Equal reports whether e and o are the same address with the same metadata.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Addr == o.Addr && e.Zone == o.Zone && e.Meshed == o.Meshed && e.Namespace == o.Namespace &&
		e.ServiceAccount == o.ServiceAccount && e.Opaque == o.Opaque && maps.Equal(e.Labels, o.Labels)
}

// Set is everything a destination resolves to at one moment.
type Set struct {
	// Exists is false when the Service (or the pod with the IP) is gone.
	Exists bool
	// Endpoints are keyed by their address; shared between listeners and
	// never modified.
	Endpoints map[netip.AddrPort]Endpoint
}

// Equal reports whether s and o hold the same endpoints with the same
// metadata.
func (s Set) Equal(o Set) bool {
	return s.Exists == o.Exists && maps.EqualFunc(s.Endpoints, o.Endpoints, Endpoint.Equal)
}

// serviceEndpoints computes the Set of target (a Service target) from the
// Service, its EndpointSlices, the pods they point to, and the namespace.
// podNames are the pods the slices refer to, whatever their readiness, so a
// change to one of them can be traced back to this target.
//
// Readiness follows kube-proxy: endpoints whose ready condition is true
// (serving and not terminating) are used; only when there is none are the
// serving endpoints that are terminating used instead, so a Service whose
// every pod is being replaced keeps answering while the old pods drain
// (KEP-1669, ProxyTerminatingEndpoints). Endpoints neither ready nor serving
// are never used.
func serviceEndpoints(target Target, svc *corev1.Service, eps []*discoveryv1.EndpointSlice, lk *lookup) (Set, map[string]struct{}) {
	if svc == nil || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return Set{}, nil
	}
	set := Set{Exists: true, Endpoints: map[netip.AddrPort]Endpoint{}}
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
	var sp *corev1.ServicePort
	if !headless {
		if sp = servicePort(svc, target.Port); sp == nil {
			return set, nil
		}
	}
	ns := lk.namespace(svc.Namespace)
	svcOpaque := opaquePorts(svc.Annotations, ns).Contains(target.Port)

	// A dual-stack Service has slices of both families, so each pod twice;
	// handing out both would double its share. Its primary family is the
	// one its cluster IP and DNS name lead to first.
	family := discoveryv1.AddressType("")
	if len(svc.Spec.IPFamilies) > 1 {
		family = discoveryv1.AddressType(svc.Spec.IPFamilies[0])
	}
	podNames := map[string]struct{}{}
	var ready, terminating []sliceEndpoint
	for _, slice := range eps {
		if slice.AddressType != discoveryv1.AddressTypeIPv4 && slice.AddressType != discoveryv1.AddressTypeIPv6 ||
			family != "" && slice.AddressType != family {
			continue
		}
		// A client without the mesh reaches a headless Service's pods
		// directly at the port it asked for; a cluster IP's port is mapped
		// to the target port, resolved per pod into the slice's ports.
		port, ok := target.Port, true
		if !headless {
			port, ok = slicePort(slice, sp)
		}
		if !ok {
			continue
		}
		for _, ep := range slice.Endpoints {
			if target.Hostname != "" && (ep.Hostname == nil || *ep.Hostname != target.Hostname) {
				continue
			}
			if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" {
				podNames[ref.Name] = struct{}{}
			}
			if len(ep.Addresses) == 0 {
				continue
			}
			// Addresses are fungible by the API's contract; the first is
			// the one to use.
			ip, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				continue
			}
			se := sliceEndpoint{addr: netip.AddrPortFrom(ip.Unmap(), port), ep: ep}
			switch isReady, serving, term := conditions(ep.Conditions); {
			case isReady:
				ready = append(ready, se)
			case serving && term:
				terminating = append(terminating, se)
			}
		}
	}
	use := ready
	if len(use) == 0 {
		use = terminating
	}
	for _, se := range use {
		set.Endpoints[se.addr] = lk.serviceEndpoint(svc, se, svcOpaque, ns)
	}
	return set, podNames
}

// sliceEndpoint is an EndpointSlice endpoint with the address it resolved to.
type sliceEndpoint struct {
	addr netip.AddrPort
	ep   discoveryv1.Endpoint
}

// conditions reads an endpoint's conditions with the API's defaults: ready
// and serving are true when unset, terminating false; serving defaults to
// ready for slices written before serving existed.
func conditions(c discoveryv1.EndpointConditions) (ready, serving, terminating bool) {
	ready = c.Ready == nil || *c.Ready
	serving = ready
	if c.Serving != nil {
		serving = *c.Serving
	}
	terminating = c.Terminating != nil && *c.Terminating
	return ready, serving, terminating
}

// servicePort returns svc's TCP port numbered port, or nil.
func servicePort(svc *corev1.Service, port uint16) *corev1.ServicePort {
	for i, p := range svc.Spec.Ports {
		if p.Port == int32(port) && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			return &svc.Spec.Ports[i]
		}
	}
	return nil
}

// slicePort returns the port the slice's endpoints serve sp on. The
// EndpointSlice controller names a slice's ports after the Service's ports
// and groups pods by what a named target port resolves to in each of them,
// which is how one Service port can land on different pod ports.
func slicePort(slice *discoveryv1.EndpointSlice, sp *corev1.ServicePort) (uint16, bool) {
	for _, p := range slice.Ports {
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if name != sp.Name || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
			continue
		}
		if p.Port != nil && *p.Port > 0 && *p.Port <= 65535 {
			return uint16(*p.Port), true
		}
		// A nil port means "all ports" (selector-less slices written by
		// hand); a numeric target port is then the best guess.
		if p.Port == nil && sp.TargetPort.IntValue() > 0 && sp.TargetPort.IntValue() <= 65535 {
			return uint16(sp.TargetPort.IntValue()), true
		}
	}
	return 0, false
}

// serviceEndpoint describes se of svc, from its pod when the cache has it.
func (lk *lookup) serviceEndpoint(svc *corev1.Service, se sliceEndpoint, svcOpaque bool, ns *corev1.Namespace) Endpoint {
	var pod *corev1.Pod
	if ref := se.ep.TargetRef; ref != nil && ref.Kind == "Pod" {
		podNS := ref.Namespace
		if podNS == "" {
			podNS = svc.Namespace
		}
		pod = lk.pod(podNS, ref.Name)
	}
	var e Endpoint
	if pod != nil {
		e = podEndpoint(pod, se.addr, ns)
	} else {
		e = Endpoint{Addr: se.addr, Namespace: svc.Namespace, Labels: map[string]string{LabelNamespace: svc.Namespace}}
	}
	e.Labels[LabelService] = svc.Name
	e.Opaque = e.Opaque || svcOpaque
	if se.ep.Zone != nil {
		e.Zone = *se.ep.Zone
	}
	return e
}

// podEndpoint describes pod serving at addr. ns is the pod's namespace, nil
// when the cache does not have it.
func podEndpoint(pod *corev1.Pod, addr netip.AddrPort, ns *corev1.Namespace) Endpoint {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default" // what the API server admits a pod with
	}
	_, meshed := pod.Annotations[names.AnnotationProxyVersion]
	return Endpoint{
		Addr:           addr,
		Meshed:         meshed,
		Namespace:      pod.Namespace,
		ServiceAccount: sa,
		Opaque:         opaquePorts(pod.Annotations, ns).Contains(addr.Port()),
		Labels:         podLabels(pod, sa),
	}
}

// podLabels returns the metric labels of pod: its namespace, name, service
// account and owner. A ReplicaSet's Deployment is the ReplicaSet's name
// without the pod-template-hash suffix the Deployment controller appends,
// which spares the controller a ReplicaSet informer.
func podLabels(pod *corev1.Pod, sa string) map[string]string {
	labels := map[string]string{}
	if ref := metav1.GetControllerOfNoCopy(pod); ref != nil && isLabelName(ref.Kind) {
		labels[strings.ToLower(ref.Kind)] = ref.Name
	}
	if d, ok := workload.Deployment(pod); ok {
		labels[LabelDeployment] = d
	}
	// Written last so an owner of an odd kind ("Pod") cannot hide them.
	labels[LabelWorkload] = workload.Of(pod).String()
	labels[LabelNamespace] = pod.Namespace
	labels[LabelPod] = pod.Name
	labels[LabelServiceAccount] = sa
	return labels
}

// isLabelName reports whether kind, lower-cased, is a valid Prometheus
// label name; kinds of custom resources are chosen by their authors.
func isLabelName(kind string) bool {
	if kind == "" {
		return false
	}
	for i, c := range kind {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// opaquePorts returns the opaque ports annotated on an object, or on its
// namespace when the object has no annotation of its own (even an empty
// one, which turns the namespace's off). A malformed annotation is ignored
// whole, as the injector does, so the proxy and the hint never disagree;
// the watcher logs it when the object changes.
func opaquePorts(annotations map[string]string, ns *corev1.Namespace) ports.Set {
	v, ok := annotations[names.AnnotationOpaquePorts]
	if !ok && ns != nil {
		v, ok = ns.Annotations[names.AnnotationOpaquePorts]
	}
	if !ok {
		return ports.Set{}
	}
	set, err := ports.Parse(v)
	if err != nil {
		return ports.Set{}
	}
	return set
}

// podIPEndpoints computes the Set of a pod-IP target: the one live pod with
// the IP, at the port asked for, whatever its readiness (the client connects
// to that pod whatever the mesh says).
func podIPEndpoints(target Target, lk *lookup) Set {
	pod := lk.podByIP(target.IP)
	if pod == nil {
		return Set{}
	}
	addr := netip.AddrPortFrom(target.IP, target.Port)
	return Set{Exists: true, Endpoints: map[netip.AddrPort]Endpoint{
		addr: podEndpoint(pod, addr, lk.namespace(pod.Namespace)),
	}}
}

// livePod reports whether pod can own its IP: not finished (its IP may be
// handed to a new pod) and not on the node's network (its IP is the node's).
func livePod(pod *corev1.Pod) bool {
	return !pod.Spec.HostNetwork && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// firstLivePod returns the live pod among pods, the oldest when there are
// several (an IP being handed over), by name when they tie.
func firstLivePod(pods []*corev1.Pod) *corev1.Pod {
	pods = slices.DeleteFunc(slices.Clone(pods), func(p *corev1.Pod) bool { return !livePod(p) })
	if len(pods) == 0 {
		return nil
	}
	return slices.MinFunc(pods, func(a, b *corev1.Pod) int {
		if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
}
