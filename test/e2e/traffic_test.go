package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// The namespaces of TestTraffic, one per check, so that the checks run in
// parallel and every route table holds only its own check's routes.
const (
	trafficSplitNS   = "e2e-traffic-split"
	trafficTimeoutNS = "e2e-traffic-timeout"
	trafficMatchNS   = "e2e-traffic-match"
	trafficInvalidNS = "e2e-traffic-invalid"
)

// TestTraffic is issue 14's tests 2, 4, 7 (its HTTPRoute half) and 9 (the
// status of invalid routes, and what their rules answer) on the real
// cluster: Gateway API HTTPRoutes whose parent is a Service (the GAMMA
// profile), written to the cluster as a user would, given their status by
// the mesh controller and applied by the client's proxy. The client is
// the test process's own sockets opened in a meshed pod's network
// namespace (see podClient), so its requests cross that pod's outbound
// proxy; the backends are demo echo pods, whose answer names the pod, and
// so the Deployment, that answered.
func TestTraffic(t *testing.T) {
	needEnv(t)
	t.Parallel() // alongside the other tests that leave the mesh as they found it (main_test.go)
	// The subtests run after this function returns: the context must end
	// with the test, not with this frame.
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	t.Cleanup(cancel)
	ensureInstalled(t, ctx)
	gw, err := gatewayclient.NewForConfig(e2e.rest)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("2 a 90/10 split lands within 3 points over 2,000 requests; 0/100 takes effect within 1s, failing none", func(t *testing.T) {
		t.Parallel()
		testSplit(t, ctx, gw)
	})
	t.Run("4 a 300ms request timeout against a 2s backend: 504 within 300-450ms", func(t *testing.T) {
		t.Parallel()
		testRouteTimeout(t, ctx, gw)
	})
	t.Run("7 a header match: x-canary 1 at v2, everything else at v1", func(t *testing.T) {
		t.Parallel()
		testHeaderMatch(t, ctx, gw)
	})
	t.Run("9 invalid routes: status within 5s under our controllerName; a missing backend answers 500", func(t *testing.T) {
		t.Parallel()
		testInvalidRoutes(t, ctx, gw)
	})
}

const (
	// splitRequests and the share bounds are issue 14's test 2: 10% ± 3
	// points. The proxy draws each request's backend independently, so
	// v2's count is binomial: its standard deviation over 2,000 requests
	// is 1.34 points, and 3 points is 2.24 of them (about 2.5% of runs
	// fall outside by chance alone).
	splitRequests = 2000
	splitMinShare = 0.07
	splitMaxShare = 0.13
	// splitEvery is the pace of the client that watches the weights move.
	splitEvery = 20 * time.Millisecond
	// splitBound is how soon after the patch web-v1 must stop answering.
	splitBound = time.Second
)

// splitPatch moves web-split from 90/10 to 0/100, after checking that the
// backends are where traffic-split.yaml puts them.
const splitPatch = `[
  {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "web-v1"},
  {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "web-v2"},
  {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 0},
  {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 100}
]`

// testSplit is issue 14's test 2.
func testSplit(t *testing.T, ctx context.Context, gw gatewayclient.Interface) {
	ns := trafficSplitNS
	e := setupTraffic(t, ctx, gw, ns, webBackend(ns, "web-v1"), webBackend(ns, "web-v2"))
	defer dumpClientProxy(t, e)
	applied := e.applyRoutes(t, ctx, "traffic-split.yaml")
	e.waitRouteStatus(t, ctx, "web-split", applied, 30*time.Second, accepted, resolved)
	e.waitRouted(t, ctx, "/", nil)

	start := time.Now()
	got := e.burst(ctx, splitRequests, 4, "/", nil)
	share := float64(got.count("web-v2")) / float64(splitRequests)
	t.Logf("90/10: %s in %s; web-v2's share %.2f%% (want %.0f-%.0f%%)",
		got, time.Since(start).Round(time.Millisecond), 100*share, 100*splitMinShare, 100*splitMaxShare)
	if n, bad := got.others("web-v1", "web-v2"); n > 0 {
		t.Errorf("90/10: %d of %d requests were not answered 200 by web-v1 or web-v2: %s", n, splitRequests, bad)
	}
	if share < splitMinShare || share > splitMaxShare {
		t.Errorf("90/10: web-v2 answered %.2f%% of %d requests, want %.0f-%.0f%%",
			100*share, splitRequests, 100*splitMinShare, 100*splitMaxShare)
	}

	// 0/100 while a client sends a request every splitEvery: 2s before
	// the patch, 3s after.
	p := e.startPaced(ctx, splitEvery)
	defer p.finish()
	time.Sleep(2 * time.Second)
	patching := time.Now()
	_, err := gw.GatewayV1().HTTPRoutes(ns).Patch(ctx, "web-split", types.JSONPatchType, []byte(splitPatch), metav1.PatchOptions{})
	patched := time.Now()
	if err != nil {
		t.Fatalf("patch web-split to 0/100: %v", err)
	}
	time.Sleep(time.Until(patched.Add(3 * time.Second)))
	answers := p.finish()
	checkSplitMove(t, answers, patching, patched)
}

// checkSplitMove checks what the paced client saw around the patch that
// moved the split to 0/100 (sent at patching, returned at patched): no
// failed request, and no web-v1 answer later than splitBound after the
// patch returned.
func checkSplitMove(t *testing.T, answers []timedAnswer, patching, patched time.Time) {
	t.Helper()
	var (
		failed                  []string
		before, during, after   tally // by when sent: before the patch; during it or within splitBound of its return; later
		lastV1                  time.Time
		sawV1Before, sawV2After bool
	)
	for _, a := range answers {
		o := outcome(a.answer)
		if o != "web-v1" && o != "web-v2" {
			failed = append(failed, fmt.Sprintf("sent %s after the patch returned: %s", a.sent.Sub(patched).Round(time.Millisecond), a.answer))
		}
		switch {
		case a.sent.Before(patching):
			before.add(a.answer)
		case a.sent.Before(patched.Add(splitBound)):
			during.add(a.answer)
		default:
			after.add(a.answer)
		}
		if o == "web-v1" {
			lastV1 = a.done
			sawV1Before = sawV1Before || a.sent.Before(patching)
		}
		if o == "web-v2" && a.sent.After(patched) {
			sawV2After = true
		}
	}
	t.Logf("the patch to 0/100 took %s; the paced client (every %s) saw before it %s; during it and %s after %s; later %s",
		patched.Sub(patching).Round(time.Millisecond), splitEvery, &before, splitBound, &during, &after)
	if !lastV1.IsZero() {
		t.Logf("the last web-v1 answer came %s after the patch returned (bound %s)", lastV1.Sub(patched).Round(time.Millisecond), splitBound)
	}
	if len(failed) > 0 {
		t.Errorf("%d of %d requests around the patch were not answered 200 by web-v1 or web-v2, want none; first: %s",
			len(failed), len(answers), strings.Join(failed[:min(5, len(failed))], "; "))
	}
	if !sawV1Before {
		t.Errorf("the paced client saw no web-v1 answer before the patch, so it cannot show the move: %s", &before)
	}
	if !sawV2After {
		t.Errorf("the paced client saw no web-v2 answer after the patch: %s", &after)
	}
	if lastV1.After(patched.Add(splitBound)) {
		t.Errorf("web-v1 still answered %s after the patch to 0/100 returned, want none after %s",
			lastV1.Sub(patched).Round(time.Millisecond), splitBound)
	}
	// The client must have watched the time after the bound too, or a
	// late web-v1 answer could not have been seen.
	if want := int(2 * time.Second / splitEvery / 4); after.n < want {
		t.Errorf("the paced client sent only %d requests in the 2s after the bound, want at least %d", after.n, want)
	}
}

// testRouteTimeout is issue 14's test 4 (HTTP): web-slow answers after 2s;
// the route's rule for /bounded has timeouts.request 300ms, its rule for
// everything else none.
func testRouteTimeout(t *testing.T, ctx context.Context, gw gatewayclient.Interface) {
	const (
		requests = 20
		lower    = 300 * time.Millisecond
		upper    = 450 * time.Millisecond
	)
	ns := trafficTimeoutNS
	e := setupTraffic(t, ctx, gw, ns, webBackend(ns, "web-slow", "--latency", "2s"))
	defer dumpClientProxy(t, e)
	applied := e.applyRoutes(t, ctx, "traffic-timeout.yaml")
	e.waitRouteStatus(t, ctx, "web-timeout", applied, 30*time.Second, accepted, resolved)
	e.waitRouted(t, ctx, "/", nil)

	var took []string
	bad := 0
	for i := range requests {
		a := e.send(ctx, "/bounded", nil)
		took = append(took, fmt.Sprintf("%d %s", a.status, a.elapsed.Round(time.Millisecond)))
		if a.err != nil || a.status != http.StatusGatewayTimeout || a.elapsed < lower || a.elapsed > upper {
			bad++
			t.Errorf("request %d for /bounded: %s, want 504 within %s-%s", i+1, a, lower, upper)
		}
	}
	t.Logf("%d requests for /bounded (timeouts.request 300ms, backend 2s), status and time at the client: %s",
		requests, strings.Join(took, ", "))
	t.Logf("%d of %d within 504 and %s-%s", requests-bad, requests, lower, upper)

	// The same backend through the rule without a timeout still answers,
	// after its 2s: nothing else cut the requests above.
	a := e.send(ctx, "/", nil)
	t.Logf("a request for / (no timeout): %s", a)
	if outcome(a) != "web-slow" || a.elapsed < 2*time.Second {
		t.Errorf("a request for / through the rule without a timeout: %s, want web-slow's 200 after 2s or more", a)
	}
}

// testHeaderMatch is issue 14's test 7, its HTTPRoute half.
func testHeaderMatch(t *testing.T, ctx context.Context, gw gatewayclient.Interface) {
	ns := trafficMatchNS
	e := setupTraffic(t, ctx, gw, ns, webBackend(ns, "web-v1"), webBackend(ns, "web-v2"))
	defer dumpClientProxy(t, e)
	applied := e.applyRoutes(t, ctx, "traffic-match.yaml")
	e.waitRouteStatus(t, ctx, "web-canary", applied, 30*time.Second, accepted, resolved)
	e.waitRouted(t, ctx, "/", nil)

	for _, tc := range []struct {
		name   string
		header http.Header
		n      int
		want   string
	}{
		{name: "x-canary: 1", header: http.Header{"X-Canary": {"1"}}, n: 50, want: "web-v2"},
		{name: "no x-canary", n: 50, want: "web-v1"},
		{name: "x-canary: 0", header: http.Header{"X-Canary": {"0"}}, n: 10, want: "web-v1"},
	} {
		got := e.burst(ctx, tc.n, 2, "/", tc.header)
		t.Logf("%s: %s", tc.name, got)
		if n, bad := got.others(tc.want); n > 0 {
			t.Errorf("%s: %d of %d requests not answered by %s: %s", tc.name, n, tc.n, tc.want, bad)
		}
	}
}

// testInvalidRoutes is issue 14's test 9 without the controller going
// away (which stops the controller every parallel test relies on): the
// status the controller writes on routes it cannot fully serve, as
// controller/route writes it (docs/traffic.md 2.3), and what their rules
// answer. All three routes share parent web, so their rules form one
// table.
func testInvalidRoutes(t *testing.T, ctx context.Context, gw gatewayclient.Interface) {
	const bound = 5 * time.Second
	ns := trafficInvalidNS
	e := setupTraffic(t, ctx, gw, ns, webBackend(ns, "web-v1"))
	defer dumpClientProxy(t, e)
	applied := e.applyRoutes(t, ctx, "traffic-invalid.yaml")
	// Accepted=True is part of what is checked: the rules of these two
	// routes answer 500 below only because they are served, and a route
	// that is not accepted is not served at all.
	e.waitRouteStatus(t, ctx, "web-missing-backend", applied, bound,
		accepted, routeCond{gatewayv1.RouteConditionResolvedRefs, metav1.ConditionFalse, gatewayv1.RouteReasonBackendNotFound})
	e.waitRouteStatus(t, ctx, "web-unknown-filter", applied, bound,
		accepted, routeCond{gatewayv1.RouteConditionResolvedRefs, metav1.ConditionFalse, gatewayv1.RouteReasonInvalidKind})
	e.waitRouteStatus(t, ctx, "web-mirror", applied, bound,
		routeCond{gatewayv1.RouteConditionAccepted, metav1.ConditionFalse, gatewayv1.RouteReasonUnsupportedValue})
	e.waitRouted(t, ctx, "/", nil)

	for _, tc := range []struct {
		name, path string
		n          int
		want       string
	}{
		{name: "the rule whose backend Service does not exist", path: "/missing", n: 20, want: "HTTP 500"},
		{name: "the rule with an unresolved ExtensionRef filter", path: "/filtered", n: 20, want: "HTTP 500"},
		// web's own pods would answer were the refused route served.
		{name: "the path of the refused route (served by the / rule)", path: "/refused", n: 10, want: "web-v1"},
		{name: "the / rule beside the missing backend", path: "/", n: 10, want: "web-v1"},
	} {
		got := e.burst(ctx, tc.n, 2, tc.path, nil)
		t.Logf("%s, %s: %s; the first %s said %q", tc.name, tc.path, got, tc.want, strings.TrimSpace(got.firstOf(tc.want).body))
		if n, bad := got.others(tc.want); n > 0 {
			t.Errorf("%s, %s: %d of %d requests not answered %s: %s", tc.name, tc.path, n, tc.n, tc.want, bad)
		}
	}
}

// dumpClientProxy logs the end of the client proxy's log when the test
// failed.
func dumpClientProxy(t *testing.T, e *trafficEnv) {
	if t.Failed() {
		dumpProxy(t, e.client.pod)
	}
}
