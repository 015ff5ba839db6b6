package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

const (
	// namespaceLabel marks the namespace as the benchmark's, so a later
	// run may delete one an interrupted run left behind, and no other.
	namespaceLabel = "bench.mesh.dev/destination"
	// managedBy keeps kube-controller-manager's EndpointSlice controller
	// away from the slices.
	managedBy = "bench.mesh.dev"
	// proxyNameLabel names a service proxy other than kube-proxy. kube-proxy
	// lists Services and EndpointSlices without this label only, so the
	// shared node's iptables never gets the benchmark's endpoints.
	proxyNameLabel = "service.kubernetes.io/service-proxy-name"

	servicePort = 80
	targetPort  = 8080
	portName    = "http"
)

// service is one Service of the run and what its watchers should hold.
type service struct {
	name      string
	authority string // what its watchers ask for
	watchers  int    // streams asking for it
	// slices are as the API last returned them; written by setup, then by
	// the change loop only.
	slices []*discoveryv1.EndpointSlice
	// initial are the addresses after setup; never modified after it, so
	// the watchers may read them.
	initial map[string]struct{}
	// addrs are the addresses now; written by the change loop only.
	addrs map[string]struct{}
}

// fixture is the namespace and its Services.
type fixture struct {
	ns       string
	services []*service
	nextAddr uint32 // index of the next unused endpoint address
}

// newFixture lays out the Services and their slices, not yet created:
// cfg.Endpoints addresses spread evenly, each Service's cut into slices of
// at most cfg.SliceSize, and cfg.Watchers streams spread evenly.
func newFixture(cfg config) *fixture {
	f := &fixture{ns: cfg.Namespace}
	width := len(strconv.Itoa(cfg.Services - 1))
	for i := range cfg.Services {
		name := fmt.Sprintf("svc-%0*d", width, i)
		svc := &service{
			name:      name,
			authority: fmt.Sprintf("%s.%s.svc.cluster.local:%d", name, cfg.Namespace, servicePort),
			watchers:  cfg.Watchers / cfg.Services,
			initial:   map[string]struct{}{},
			addrs:     map[string]struct{}{},
		}
		if i < cfg.Watchers%cfg.Services {
			svc.watchers++
		}
		n := cfg.Endpoints / cfg.Services
		if i < cfg.Endpoints%cfg.Services {
			n++
		}
		var eps []discoveryv1.Endpoint
		for range n {
			addr := f.newAddr()
			svc.initial[addr.String()] = struct{}{}
			svc.addrs[addr.String()] = struct{}{}
			eps = append(eps, endpoint(addr))
		}
		for k, chunk := range chunks(eps, cfg.SliceSize) {
			svc.slices = append(svc.slices, newSlice(fmt.Sprintf("%s-%d", name, k), name, chunk))
		}
		f.services = append(f.services, svc)
	}
	return f
}

func chunks[T any](s []T, size int) [][]T {
	var out [][]T
	for c := range slices.Chunk(s, size) {
		out = append(out, c)
	}
	return out
}

// newAddr returns an address no endpoint had yet in this run.
func (f *fixture) newAddr() netip.AddrPort {
	a := endpointAddr(f.nextAddr)
	f.nextAddr++
	return a
}

// endpointAddr is the i-th address of 10.200.0.0/14, a range nothing in the
// local cluster uses (pods are 10.244.0.0/24, Services 10.96.0.0/16). No
// packet is ever sent to it: the endpoints exist only in the API.
func endpointAddr(i uint32) netip.AddrPort {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(10<<24|200<<16)+i)
	return netip.AddrPortFrom(netip.AddrFrom4(b), targetPort)
}

func endpoint(addr netip.AddrPort) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{addr.Addr().String()},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
	}
}

func newSlice(name, service string, eps []discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: service,
			discoveryv1.LabelManagedBy:   managedBy,
			proxyNameLabel:               managedBy,
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{
			Name: ptr(portName), Port: ptr(int32(targetPort)), Protocol: ptr(corev1.ProtocolTCP),
		}},
		Endpoints: eps,
	}
}

func ptr[T any](v T) *T { return &v }

// createNamespace creates the namespace. One left by an interrupted run
// (it has namespaceLabel) is deleted first; any other is an error, as the
// run would delete it at the end.
func (f *fixture) createNamespace(ctx context.Context, client kubernetes.Interface, log io.Writer) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns, Labels: map[string]string{namespaceLabel: "true"}}}
	_, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	old, err := client.CoreV1().Namespaces().Get(ctx, f.ns, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if old.Labels[namespaceLabel] != "true" {
		return fmt.Errorf("namespace %s exists and is not the benchmark's (no %s label): pass another --namespace", f.ns, namespaceLabel)
	}
	fmt.Fprintf(log, "deleting namespace %s, left behind by an earlier run\n", f.ns)
	if err := f.deleteNamespace(ctx, client); err != nil {
		return err
	}
	_, err = client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	return err
}

// deleteNamespace deletes the namespace and waits until it is gone.
func (f *fixture) deleteNamespace(ctx context.Context, client kubernetes.Interface) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err := client.CoreV1().Namespaces().Delete(ctx, f.ns, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete namespace %s: %w", f.ns, err)
	}
	for {
		_, err := client.CoreV1().Namespaces().Get(ctx, f.ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace %s still there: %w", f.ns, context.Cause(ctx))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// createObjects creates every Service and slice, 16 Services at a time, and
// returns the number of API calls made.
func (f *fixture) createObjects(ctx context.Context, client kubernetes.Interface) (int, error) {
	var calls atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, svc := range f.services {
		g.Go(func() error {
			s := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: svc.name, Labels: map[string]string{proxyNameLabel: managedBy}},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
					Name: portName, Port: servicePort, TargetPort: intstr.FromInt32(targetPort), Protocol: corev1.ProtocolTCP,
				}}},
			}
			calls.Add(1)
			if _, err := client.CoreV1().Services(f.ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create service %s: %w", svc.name, err)
			}
			for k, slice := range svc.slices {
				calls.Add(1)
				created, err := client.DiscoveryV1().EndpointSlices(f.ns).Create(ctx, slice, metav1.CreateOptions{})
				if err != nil {
					return fmt.Errorf("create endpointslice %s: %w", slice.Name, err)
				}
				svc.slices[k] = created
			}
			return nil
		})
	}
	err := g.Wait()
	return int(calls.Load()), err
}

// opKind is what a change does to an endpoint.
type opKind uint8

const (
	opAdd opKind = iota
	opRemove
)

func (o opKind) String() string {
	if o == opAdd {
		return "add"
	}
	return "remove"
}

// changeKey names a change by what a watcher sees of it. Added addresses
// are always new and a removed one never comes back, so a key is unique
// within a run.
type changeKey struct {
	op   opKind
	addr string
}

// edit is one change to make: slice k of svc, replaced by updated.
type edit struct {
	svc     *service
	k       int
	updated *discoveryv1.EndpointSlice
	key     changeKey
}

// nextEdit picks a random slice and adds a new endpoint to it, or removes a
// random endpoint of a slice that keeps at least one.
func (f *fixture) nextEdit(rng *rand.Rand, op opKind) (edit, error) {
	type ref struct {
		svc *service
		k   int
	}
	var refs []ref
	for _, svc := range f.services {
		for k, s := range svc.slices {
			if op == opAdd || len(s.Endpoints) >= 2 {
				refs = append(refs, ref{svc, k})
			}
		}
	}
	if len(refs) == 0 {
		return edit{}, errors.New("no slice has an endpoint to spare")
	}
	r := refs[rng.IntN(len(refs))]
	updated := r.svc.slices[r.k].DeepCopy()
	e := edit{svc: r.svc, k: r.k, updated: updated, key: changeKey{op: op}}
	if op == opAdd {
		addr := f.newAddr()
		updated.Endpoints = append(updated.Endpoints, endpoint(addr))
		e.key.addr = addr.String()
		return e, nil
	}
	j := rng.IntN(len(updated.Endpoints))
	ip, err := netip.ParseAddr(updated.Endpoints[j].Addresses[0])
	if err != nil {
		return edit{}, err
	}
	updated.Endpoints = slices.Delete(updated.Endpoints, j, j+1)
	e.key.addr = netip.AddrPortFrom(ip, targetPort).String()
	return e, nil
}

// applied records that the API accepted e, as stored.
func (e edit) applied(stored *discoveryv1.EndpointSlice) {
	e.svc.slices[e.k] = stored
	if e.key.op == opAdd {
		e.svc.addrs[e.key.addr] = struct{}{}
	} else {
		delete(e.svc.addrs, e.key.addr)
	}
}

// sliceAddrs returns the addresses of a slice's endpoints as the
// destination API writes them.
func sliceAddrs(s *discoveryv1.EndpointSlice) map[string]struct{} {
	out := make(map[string]struct{}, len(s.Endpoints))
	for _, ep := range s.Endpoints {
		if len(ep.Addresses) == 0 {
			continue
		}
		if ip, err := netip.ParseAddr(ep.Addresses[0]); err == nil {
			out[netip.AddrPortFrom(ip, targetPort).String()] = struct{}{}
		}
	}
	return out
}
