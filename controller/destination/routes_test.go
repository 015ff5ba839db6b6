package destination

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
	"github.com/mesh-dev/mesh/controller/route"
	"github.com/mesh-dev/mesh/internal/names"
)

func ptr[T any](v T) *T { return &v }

// splitRoute sends web's port 80 to web (weight) and web-v2 (100-weight).
func splitRoute(weight int32) *gatewayv1.HTTPRoute {
	backend := func(name string, w int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr(int32(80))},
			Weight:                 ptr(w),
		}}
	}
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "split"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: "web", Port: ptr(int32(80)),
			}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{backend("web", weight), backend("web-v2", 100-weight)}}},
		},
	}
}

// routesStream opens Routes for authority; its Recv fails after
// waitTimeout.
func routesStream(t *testing.T, c destinationv1.DestinationClient, authority, ns string) grpc.ServerStreamingClient[destinationv1.RouteTable] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	s, err := c.Routes(ctx, &destinationv1.GetDestinationRequest{Authority: authority, ContextNamespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// weights returns the backends of a table's first HTTP rule as
// authority → weight; nil when it has no rule.
func weights(t *testing.T, rt *destinationv1.RouteTable) map[string]uint32 {
	t.Helper()
	if len(rt.HttpRules) == 0 {
		return nil
	}
	out := map[string]uint32{}
	for _, b := range rt.HttpRules[0].Backends {
		out[b.Authority] = b.Weight
	}
	return out
}

func TestRoutesStreamsChanges(t *testing.T) {
	gw := gatewayfake.NewSimpleClientset(splitRoute(90))
	h := newHarness(t, harnessOptions{
		objects: []runtime.Object{web(), service("web-v2", "10.96.0.11", servicePortNamed("http", 80, intstr.FromInt32(8080)))},
		gateway: gw,
	})
	s := routesStream(t, h.dial(t), "web.shop.svc.cluster.local:80", "front")

	// The index may publish its first snapshot after the stream opens:
	// read until the route shows.
	var rt *destinationv1.RouteTable
	for rt == nil || len(rt.HttpRules) == 0 {
		var err error
		if rt, err = s.Recv(); err != nil {
			t.Fatalf("Recv: %v", err)
		}
	}
	want := map[string]uint32{"web.shop.svc.cluster.local:80": 90, "web-v2.shop.svc.cluster.local:80": 10}
	if got := weights(t, rt); !equalWeights(got, want) {
		t.Fatalf("weights = %v, want %v", got, want)
	}
	if p := rt.Parent; p.GetName() != "web" || p.GetPort() != 80 {
		t.Errorf("parent = %v, want Service web port 80", p)
	}

	first := rt.Version
	start := time.Now()
	if _, err := gw.GatewayV1().HTTPRoutes(testNS).Update(context.Background(), splitRoute(0), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rt, err := s.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	elapsed := time.Since(start)
	want = map[string]uint32{"web-v2.shop.svc.cluster.local:80": 100}
	if got := weights(t, rt); !equalWeights(got, want) {
		t.Errorf("weights after the change = %v, want %v", got, want)
	}
	if rt.Version <= first {
		t.Errorf("version went from %d to %d", first, rt.Version)
	}
	// Issue 14: a change reaches running proxies in under a second.
	if elapsed > 500*time.Millisecond {
		t.Errorf("the change took %v to reach the client, want well under 1s", elapsed)
	}
	t.Logf("route change reached the client in %v", elapsed)
}

func TestRoutesErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{objects: []runtime.Object{web()}})
	_, err := routesStream(t, h.dial(t), "web.shop.svc.cluster.local:80", "").Recv()
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("Routes without a route index: %v, want UNIMPLEMENTED", err)
	}

	h = newHarness(t, harnessOptions{objects: []runtime.Object{web()}, gateway: gatewayfake.NewSimpleClientset()})
	for _, tc := range []struct {
		authority string
		want      codes.Code
	}{
		{"nope.shop.svc.cluster.local:80", codes.NotFound},
		{"web.shop.svc.cluster.local", codes.InvalidArgument},
	} {
		if _, err := routesStream(t, h.dial(t), tc.authority, "").Recv(); status.Code(err) != tc.want {
			t.Errorf("Routes(%s): %v, want %v", tc.authority, err, tc.want)
		}
	}
	// A Service without routes gets an empty table, and the stream stays.
	rt, err := routesStream(t, h.dial(t), "web.shop.svc.cluster.local:80", "").Recv()
	if err != nil || len(rt.HttpRules)+len(rt.GrpcRules) != 0 {
		t.Errorf("Routes of a Service without routes: %v, %v; want an empty table", rt, err)
	}
}

// fakeSource is a RouteSource whose snapshots the test sets.
type fakeSource struct {
	mu      sync.Mutex
	current *route.Snapshot // guarded by mu
	changed chan struct{}   // guarded by mu
	// gen counts sets; read is the gen the server last read. Guarded by mu.
	gen, read int
}

func newFakeSource() *fakeSource { return &fakeSource{changed: make(chan struct{})} }

func (f *fakeSource) Snapshot() (*route.Snapshot, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.read = f.gen
	return f.current, f.changed
}

// wasRead reports whether the server has read the latest snapshot.
func (f *fakeSource) wasRead() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.read == f.gen
}

func (f *fakeSource) set(s *route.Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.current = s
	f.gen++
	close(f.changed)
	f.changed = make(chan struct{})
}

// TestRoutesKeepLastGoodTable checks that a table the translator refuses
// is not sent: the client keeps the one before, and gets the next good
// one.
func TestRoutesKeepLastGoodTable(t *testing.T) {
	src := newFakeSource()
	h := newHarness(t, harnessOptions{objects: []runtime.Object{web()}, routes: src})
	snapshot := func(redirectStatus int) *route.Snapshot {
		r := splitRoute(100)
		r.Spec.Rules[0].BackendRefs = r.Spec.Rules[0].BackendRefs[:1]
		if redirectStatus != 0 {
			r.Spec.Rules[0].BackendRefs = nil
			r.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestRedirect,
				RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{StatusCode: ptr(redirectStatus)}}}
		}
		return route.Build(route.Inputs{Services: []*corev1.Service{web()}, HTTPRoutes: []*gatewayv1.HTTPRoute{r}})
	}
	src.set(snapshot(0))
	s := routesStream(t, h.dial(t), "web.shop.svc.cluster.local:80", "")
	rt, err := s.Recv()
	if err != nil || len(rt.HttpRules) != 1 || len(rt.HttpRules[0].Backends) != 1 {
		t.Fatalf("first table: %v, %v", rt, err)
	}
	// 200 is no redirect status: the CRD's enum refuses it, but an object
	// that bypassed validation must not reach proxies.
	src.set(snapshot(200))
	eventually(t, "the server reading the bad table", src.wasRead)
	src.set(snapshot(301))
	rt, err = s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if f := rt.HttpRules[0].GetFilters(); len(f) != 1 || f[0].GetRedirect().GetStatusCode() != 301 {
		t.Errorf("table after a bad and a good update = %v, want the 301 redirect", rt)
	}
	if rt.Version != 2 {
		t.Errorf("version = %d, want 2: the refused table must not be sent", rt.Version)
	}
}

// TestTranslateRefusesBadTables checks that a table breaking the API's
// invariants (possible only from objects that bypassed the CRD's
// validation) is refused, so the stream keeps the client's last good one.
func TestTranslateRefusesBadTables(t *testing.T) {
	parent := route.ServicePort{Service: types.NamespacedName{Namespace: testNS, Name: "web"}, Port: 80}
	good := route.Rule{
		Route: route.RouteRef{Kind: route.KindHTTPRoute, Namespace: testNS, Name: "r"}, Name: "0",
		Match:    route.Match{PathType: route.PathPrefix, Path: "/"},
		Backends: []route.Backend{{Service: parent, Weight: 1}},
		Timeouts: route.Timeouts{Request: 300 * time.Millisecond},
	}
	got, err := translateTable(parent, &route.Table{Parent: parent, HTTP: []route.Rule{good}}, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	want := &destinationv1.RouteTable{
		Parent: &destinationv1.Resource{Kind: "Service", Namespace: testNS, Name: "web", Port: 80},
		HttpRules: []*destinationv1.Rule{{
			Route:    &destinationv1.Resource{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: testNS, Name: "r"},
			RuleName: "0",
			Matches:  []*destinationv1.Match{{Path: &destinationv1.Match_Prefix{Prefix: "/"}}},
			Backends: []*destinationv1.Backend{{Authority: "web.shop.svc.cluster.local:80", Weight: 1}},
			Timeouts: &destinationv1.Timeouts{Request: durationpb.New(300 * time.Millisecond)},
		}},
	}
	if !proto.Equal(got, want) {
		t.Errorf("table = %v\nwant %v", got, want)
	}

	for name, mutate := range map[string]func(*route.Rule){
		"redirect status": func(r *route.Rule) {
			r.Filters = []route.Filter{{Kind: route.FilterRedirect, Redirect: route.Redirect{StatusCode: 200}}}
		},
		"fail status": func(r *route.Rule) {
			r.Filters = []route.Filter{{Kind: route.FilterFail, Fail: route.Fail{Status: 42}}}
		},
		"weight 0":         func(r *route.Rule) { r.Backends[0].Weight = 0 },
		"negative timeout": func(r *route.Rule) { r.Timeouts.Request = -time.Second },
		"unknown filter":   func(r *route.Rule) { r.Filters = []route.Filter{{}} },
	} {
		bad := good
		bad.Backends = append([]route.Backend(nil), good.Backends...)
		mutate(&bad)
		if _, err := translateTable(parent, &route.Table{Parent: parent, HTTP: []route.Rule{bad}}, "cluster.local"); err == nil {
			t.Errorf("%s: translated, want refused", name)
		}
	}
}

// TestTranslateFault checks the translation of an HTTPFault filter and
// the refusal of one its CRD's schema rules out.
func TestTranslateFault(t *testing.T) {
	parent := route.ServicePort{Service: types.NamespacedName{Namespace: testNS, Name: "web"}, Port: 80}
	rule := func(f route.Fault) route.Rule {
		return route.Rule{
			Route: route.RouteRef{Kind: route.KindGRPCRoute, Namespace: testNS, Name: "g"}, Name: "0",
			Filters:  []route.Filter{{Kind: route.FilterFault, Fault: f}},
			Backends: []route.Backend{{Service: parent, Weight: 1}},
		}
	}
	good := route.Fault{
		Abort: &route.FaultAbort{PerMillion: 500_000, Status: 503},
		Delay: &route.FaultDelay{PerMillion: 1_000_000, Duration: 200 * time.Millisecond},
	}
	got, err := translateTable(parent, &route.Table{Parent: parent, GRPC: []route.Rule{rule(good)}}, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	want := &destinationv1.Filter{Kind: &destinationv1.Filter_Fault{Fault: &destinationv1.Fault{
		Abort: &destinationv1.Fault_Abort{PerMillion: 500_000, HttpStatus: 503},
		Delay: &destinationv1.Fault_Delay{PerMillion: 1_000_000, Duration: durationpb.New(200 * time.Millisecond)},
	}}}
	if len(got.GetGrpcRules()) != 1 || len(got.GrpcRules[0].GetFilters()) != 1 || !proto.Equal(got.GrpcRules[0].Filters[0], want) {
		t.Errorf("table = %v\nwant the one filter %v", got, want)
	}

	for name, f := range map[string]route.Fault{
		"neither":                   {},
		"abort above the whole":     {Abort: &route.FaultAbort{PerMillion: 1_000_001, Status: 503}},
		"abort status below 200":    {Abort: &route.FaultAbort{PerMillion: 1, Status: 100}},
		"abort status above 599":    {Abort: &route.FaultAbort{PerMillion: 1, Status: 600}},
		"delay above the whole":     {Delay: &route.FaultDelay{PerMillion: 1_000_001, Duration: time.Second}},
		"negative delay":            {Delay: &route.FaultDelay{PerMillion: 1, Duration: -time.Second}},
		"good delay with bad abort": {Delay: good.Delay, Abort: &route.FaultAbort{PerMillion: 1}},
	} {
		if _, err := translateTable(parent, &route.Table{Parent: parent, GRPC: []route.Rule{rule(f)}}, "cluster.local"); !errors.Is(err, errBadTable) {
			t.Errorf("%s: translated with error %v, want errBadTable", name, err)
		}
	}
}

func equalWeights(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestTranslatePolicy checks the translation of a table's Default rule,
// failure accrual, and a rule's retry and timeouts, and the refusal of
// ones the annotations cannot give.
func TestTranslatePolicy(t *testing.T) {
	parent := route.ServicePort{Service: types.NamespacedName{Namespace: testNS, Name: "web"}, Port: 80}
	budget := route.RetryBudget{Ratio: 0.2, MinPerSecond: 10, TTL: 10 * time.Second}
	rule := route.Rule{
		Route: route.RouteRef{Kind: route.KindHTTPRoute, Namespace: testNS, Name: "r"}, Name: "0",
		Match:    route.Match{PathType: route.PathPrefix, Path: "/"},
		Backends: []route.Backend{{Service: parent, Weight: 1}},
		Timeouts: route.Timeouts{BackendRequest: time.Second, Response: 2 * time.Second, Idle: time.Minute},
		Retry: &route.Retry{HTTP: []route.StatusRange{{Min: 502, Max: 504}}, GRPC: []uint32{1, 14}, Limit: 2,
			PerTryTimeout: 500 * time.Millisecond, MaxBodyBytes: 65536, Budget: budget},
	}
	def := &route.Rule{Route: route.RouteRef{Kind: route.KindService, Namespace: testNS, Name: "web"},
		Timeouts: route.Timeouts{Request: 5 * time.Second}, Retry: &route.Retry{Limit: 1, MaxBodyBytes: 65536, Budget: budget}}
	table := &route.Table{Parent: parent, HTTP: []route.Rule{rule}, Default: def,
		FailureAccrual: &route.FailureAccrual{MaxFailures: 3, MaxBackoff: 30 * time.Second}}
	got, err := translateTable(parent, table, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	protoBudget := &destinationv1.RetryBudget{Ratio: 0.2, MinPerSecond: 10, Ttl: durationpb.New(10 * time.Second)}
	want := &destinationv1.RouteTable{
		Parent: &destinationv1.Resource{Kind: "Service", Namespace: testNS, Name: "web", Port: 80},
		HttpRules: []*destinationv1.Rule{{
			Route:    &destinationv1.Resource{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: testNS, Name: "r"},
			RuleName: "0",
			Matches:  []*destinationv1.Match{{Path: &destinationv1.Match_Prefix{Prefix: "/"}}},
			Backends: []*destinationv1.Backend{{Authority: "web.shop.svc.cluster.local:80", Weight: 1}},
			Timeouts: &destinationv1.Timeouts{BackendRequest: durationpb.New(time.Second), Response: durationpb.New(2 * time.Second),
				Idle: durationpb.New(time.Minute)},
			Retry: &destinationv1.Retry{Http: []*destinationv1.StatusRange{{Min: 502, Max: 504}}, Grpc: []uint32{1, 14}, Limit: 2,
				PerTryTimeout: durationpb.New(500 * time.Millisecond), MaxBodyBytes: 65536, Budget: protoBudget},
		}},
		DefaultRule: &destinationv1.Rule{
			Route:    &destinationv1.Resource{Kind: "Service", Namespace: testNS, Name: "web"},
			Timeouts: &destinationv1.Timeouts{Request: durationpb.New(5 * time.Second)},
			Retry:    &destinationv1.Retry{Limit: 1, MaxBodyBytes: 65536, Budget: protoBudget},
		},
		FailureAccrual: &destinationv1.FailureAccrual{MaxFailures: 3, MaxBackoff: durationpb.New(30 * time.Second)},
	}
	if !proto.Equal(got, want) {
		t.Errorf("table = %v\nwant %v", got, want)
	}

	for name, mutate := range map[string]func(*route.Table){
		"retry limit":        func(t *route.Table) { t.HTTP[0].Retry.Limit = 11 },
		"status below 100":   func(t *route.Table) { t.HTTP[0].Retry.HTTP = []route.StatusRange{{Min: 99, Max: 200}} },
		"range upside down":  func(t *route.Table) { t.HTTP[0].Retry.HTTP = []route.StatusRange{{Min: 504, Max: 502}} },
		"grpc OK":            func(t *route.Table) { t.HTTP[0].Retry.GRPC = []uint32{0} },
		"negative per-try":   func(t *route.Table) { t.HTTP[0].Retry.PerTryTimeout = -time.Second },
		"negative idle":      func(t *route.Table) { t.HTTP[0].Timeouts.Idle = -time.Second },
		"default rule":       func(t *route.Table) { t.Default.Timeouts.Response = -time.Second },
		"backoffs reversed":  func(t *route.Table) { t.FailureAccrual.MinBackoff = time.Hour },
		"negative backoff":   func(t *route.Table) { t.FailureAccrual.MinBackoff = -time.Second },
		"budget ratio":       func(t *route.Table) { t.HTTP[0].Retry.Budget.Ratio = -1 },
		"default rule retry": func(t *route.Table) { t.Default.Retry.GRPC = []uint32{17} },
	} {
		bad := *table
		r := rule
		r.Retry = ptr(*rule.Retry)
		bad.HTTP = []route.Rule{r}
		d := *def
		d.Retry = ptr(*def.Retry)
		bad.Default = &d
		bad.FailureAccrual = ptr(*table.FailureAccrual)
		mutate(&bad)
		if _, err := translateTable(parent, &bad, "cluster.local"); err == nil {
			t.Errorf("%s: translated, want refused", name)
		}
	}
	if _, err := translateTable(parent, table, "cluster.local"); err != nil {
		t.Errorf("the mutations reached the original table: %v", err)
	}
}

// TestRoutesServiceAnnotations checks that a Service with traffic
// annotations and no route gets a table of its Default rule, and that a
// change of its annotations is sent at once.
func TestRoutesServiceAnnotations(t *testing.T) {
	svc := web()
	svc.Annotations = map[string]string{names.AnnotationRetryHTTP: "gateway-error", names.AnnotationMaxFailures: "4"}
	h := newHarness(t, harnessOptions{objects: []runtime.Object{svc}, gateway: gatewayfake.NewSimpleClientset()})
	s := routesStream(t, h.dial(t), "web.shop.svc.cluster.local:80", "front")
	var rt *destinationv1.RouteTable
	for rt.GetDefaultRule() == nil {
		var err error
		if rt, err = s.Recv(); err != nil {
			t.Fatalf("Recv: %v", err)
		}
	}
	if len(rt.HttpRules)+len(rt.GrpcRules) != 0 {
		t.Errorf("rules %v, want none", rt)
	}
	want := &destinationv1.Rule{
		Route: &destinationv1.Resource{Kind: "Service", Namespace: testNS, Name: "web"},
		Retry: &destinationv1.Retry{Http: []*destinationv1.StatusRange{{Min: 502, Max: 504}}, Limit: 1, MaxBodyBytes: 65536,
			Budget: &destinationv1.RetryBudget{Ratio: 0.2, MinPerSecond: 10, Ttl: durationpb.New(10 * time.Second)}},
	}
	if !proto.Equal(rt.DefaultRule, want) {
		t.Errorf("default rule = %v\nwant %v", rt.DefaultRule, want)
	}
	if fa := rt.GetFailureAccrual(); fa.GetMaxFailures() != 4 || fa.GetDisabled() {
		t.Errorf("failure accrual = %v, want 4 failures", fa)
	}

	first := rt.Version
	svc = svc.DeepCopy()
	svc.Annotations = map[string]string{names.AnnotationTimeoutRequest: "300ms"}
	start := time.Now()
	h.update(t, svc)
	if rt, err := s.Recv(); err != nil {
		t.Fatalf("Recv: %v", err)
	} else if rt.Version <= first || rt.GetDefaultRule().GetRetry() != nil || rt.GetFailureAccrual() != nil ||
		rt.GetDefaultRule().GetTimeouts().GetRequest().AsDuration() != 300*time.Millisecond {
		t.Errorf("table after the change = %v, want version above %d and the request timeout alone", rt, first)
	}
	t.Logf("the annotation change reached the client in %v", time.Since(start))
}
