package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	catalogv1 "github.com/mesh-dev/mesh/api/demo/catalog/v1"
	policyv1alpha1 "github.com/mesh-dev/mesh/api/policy/v1alpha1"
	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/controller/route"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
	"github.com/mesh-dev/mesh/testdata/demo/catalog"
)

// The namespaces of TestTraffic2 and TestTrafficControllerDown, one per
// check, as in TestTraffic.
const (
	traffic2RetryNS        = "e2e-traffic2-retry"
	traffic2FaultNS        = "e2e-traffic2-fault"
	traffic2RateLimitNS    = "e2e-traffic2-ratelimit"
	traffic2GRPCNS         = "e2e-traffic2-grpc"
	traffic2NotDeliveredNS = "e2e-traffic2-notdelivered"
	traffic2ControllerNS   = "e2e-traffic2-ctldown"
)

// TestTraffic2 is issue 14's tests 5 (faults) and 7 (its GRPCRoute half)
// on the real cluster with the clients of TestTraffic: the test process's
// own sockets in a meshed pod's network namespace, so every request
// crosses that pod's proxy. Each check has a namespace of its own and
// leaves the mesh as it found it, so they run in parallel.
func TestTraffic2(t *testing.T) {
	needEnv(t)
	t.Parallel() // alongside the other tests that leave the mesh as they found it (main_test.go)
	// The subtests run after this function returns: the context must end
	// with the test, not with this frame.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	t.Cleanup(cancel)
	ensureInstalled(t, ctx)
	gw, err := gatewayclient.NewForConfig(e2e.rest)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("5 HTTPFault: a 50% abort gives 50±5% 503s; a 200ms delay on 100% shows in mesh viz stat's p50", func(t *testing.T) {
		t.Parallel()
		testFaults(t, ctx, gw)
	})
	t.Run("7b a GRPCRoute sends one method to v2, the other to v1", func(t *testing.T) {
		t.Parallel()
		testGRPCMethodRoute(t, ctx, gw)
	})
}

// TestTrafficUnderLoad is issue 14's tests 3 (retries), 6 (rate limits)
// and 8 (scaling down an app that exits at once on SIGTERM), one after
// another and alone (main_test.go): each counts failures or rates that a
// loaded 2-core node distorts. Beside the parallel tests, the servers'
// apps (CPU request 0, the kernel's smallest share) stalled for seconds:
// dials to them timed out, a pod failed its readiness probe, and requests
// held in flight by the stall were cut when an app exited, none of which
// is what these tests measure.
func TestTrafficUnderLoad(t *testing.T) {
	needEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	gw, err := gatewayclient.NewForConfig(e2e.rest)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("3 retry.mesh.dev/http 5xx: a backend failing 20% is seen at 99.5% success within the budget; a 1 MB POST is sent once", func(t *testing.T) {
		testRetries(t, ctx, gw)
	})
	t.Run("6 HTTPLocalRateLimitPolicy: 100 RPS in total, then per identity, holds within 10%, the rest 429 with Retry-After", func(t *testing.T) {
		testRateLimits(t, ctx)
	})
	t.Run("8 scaling 4 to 1 under 100 RPS of POSTs, the app exiting at once on SIGTERM: no failed request", func(t *testing.T) {
		testNotDelivered(t, ctx)
	})
}

const (
	// retryRequests at retryRPS is issue 14's test 3. The route retries
	// up to retryLimit times: with the default limit of 1 a backend
	// failing 20% of requests fails 0.2² = 4% of them, whatever the
	// mesh does, while 3 retries leave 0.2⁴ = 0.16%, under the 0.5%
	// allowed. They cost 0.2 + 0.04 + 0.008 = 0.248 retries a request,
	// more than the budget's 20%; its 10 a second make up the rest below
	// about 200 RPS, so at 100 RPS the budget never runs dry and the
	// bound below still holds: backend requests ≈ 1.248 × 2,000 = 2,496
	// ≤ 1.2 × 2,000 + 10 × 20 s = 2,600.
	retryRequests   = 2000
	retryRPS        = 100
	retryLimit      = 3 // retry.mesh.dev/limit in traffic2-retry.yaml
	retryMinSuccess = 0.995
	// The budget (docs/traffic.md 3.4): retries may add budgetRatio of
	// the requests plus budgetPerSecond a second; budgetSlack covers what
	// the window's edges and the requests before it may add.
	budgetRatio     = 0.2
	budgetPerSecond = 10
	budgetSlack     = 20
	// uploadSize is the POST that must not be retried: past the 64 KiB
	// a proxy keeps to replay a request.
	uploadSize = 1 << 20
)

// testRetries is issue 14's test 3: web-flaky (two pods) fails 20% of
// requests with 503; web-broken fails all of them. The route web-retry
// retries 5xx up to retryLimit times.
func testRetries(t *testing.T, ctx context.Context, gw gatewayclient.Interface) {
	ns := traffic2RetryNS
	e := setupTraffic(t, ctx, gw, ns,
		webBackend(ns, "web-flaky", "--fail-rate", "0.2", "--fail-status", "503"),
		webBackend(ns, "web-broken", "--fail-rate", "1", "--fail-status", "503"))
	defer dumpClientProxy(t, e)
	// Two pods, so that a retry has another endpoint to go to.
	scaleDeployment(t, ctx, ns, "web-flaky", 2)
	applied := e.applyRoutes(t, ctx, "traffic2-retry.yaml")
	e.waitRouteStatus(t, ctx, "web-retry", applied, 30*time.Second, accepted, resolved)
	e.waitRouted(t, ctx, "/", nil)
	web := e.target()

	flaky := podsOf(t, ctx, ns, "web-flaky")
	before := sumInbound(t, ctx, flaky)
	load := startOpenLoad(ctx, retryRPS, retryRequests*time.Second/retryRPS, func(ctx context.Context) reply {
		return web.do(ctx, http.MethodGet, "/", nil)
	})
	replies := load.wait()
	took := load.took()
	seen := sumInbound(t, ctx, flaky) - before
	var got tally
	for _, r := range replies {
		got.add(r.answer)
	}
	success := float64(got.count("web-flaky")) / float64(len(replies))
	bound := budgetRatio*float64(len(replies)) + budgetPerSecond*took.Seconds() + budgetSlack + float64(len(replies))
	t.Logf("%d GETs at %d RPS over %s: %s; success %.2f%% (want >= %.1f%%)",
		len(replies), retryRPS, took.Round(time.Millisecond), &got, 100*success, 100*retryMinSuccess)
	t.Logf("web-flaky's proxies counted %.0f requests, %.3f a client request (%d retries allowed, the budget %.0f%% + %d/s: at most %.0f)",
		seen, seen/float64(len(replies)), retryLimit, 100*budgetRatio, budgetPerSecond, bound)
	logSeries(t, ctx, e.client.pod, "mesh_proxy_http_retries_total", "mesh_proxy_http_retry_skipped_total")
	if len(replies) != retryRequests {
		t.Errorf("the client sent %d requests, want %d", len(replies), retryRequests)
	}
	if n, bad := got.others("web-flaky"); success < retryMinSuccess {
		t.Errorf("%.2f%% of GETs succeeded, want at least %.1f%%; the others: %s", 100*success, 100*retryMinSuccess, bad)
	} else if n > 0 {
		t.Logf("failed: %s", bad)
	}
	switch {
	case seen < float64(len(replies)):
		t.Errorf("web-flaky's proxies counted %.0f requests, fewer than the %d the client sent: the count misses some", seen, len(replies))
	case seen > bound:
		t.Errorf("web-flaky's proxies counted %.0f requests for %d sent over %s, over the budget's %.0f", seen, len(replies), took.Round(time.Millisecond), bound)
	}

	// A 1 MB POST to web-broken: answered 503 by the app, it is still not
	// sent again, the body being past what the proxy keeps to replay.
	broken := podsOf(t, ctx, ns, "web-broken")
	before = sumInbound(t, ctx, broken)
	r := web.do(ctx, http.MethodPost, "/upload", bytes.Repeat([]byte("m"), uploadSize))
	posted := sumInbound(t, ctx, broken) - before
	t.Logf("a %d-byte POST to /upload (web-broken fails every request): %s; web-broken's proxy counted %.0f requests for it",
		uploadSize, r.answer, posted)
	logSeries(t, ctx, e.client.pod, "mesh_proxy_http_retry_skipped_total")
	if r.err != nil || r.status != http.StatusServiceUnavailable || !strings.HasPrefix(r.body, "injected fault from web-broken-") {
		t.Errorf("the 1 MB POST got %s, want web-broken's own 503 (\"injected fault from web-broken-...\")", r.answer)
	}
	if posted != 1 {
		t.Errorf("web-broken's proxy counted %.0f requests for one 1 MB POST, want 1: it was sent once", posted)
	}
}

const (
	// faultRequests and the share bounds are issue 14's test 5: 50 ± 5
	// points, with a standard deviation of 1.1 points over 2,000
	// requests (4.5 of them to a bound).
	faultRequests = 2000
	faultMinShare = 0.45
	faultMaxShare = 0.55
	// faultDelay is the HTTPFault delay-all; a histogram p50 of requests
	// all in the 150-250ms bucket interpolates to its middle, 200ms, so
	// the floor takes off what floating point may.
	faultDelay   = 200 * time.Millisecond
	faultP50Min  = 199.5
	faultP50Max  = 300 // a delay applied twice would be 400
	faultRPS     = 10  // the steady client during the delay
	faultWindow  = 30 * time.Second
	faultMinSeen = 100 // requests in mesh viz stat's window before its p50 is read
)

// testFaults is issue 14's test 5: the route web-fault aborts half of the
// requests for /abort (to web-v1) with 503, and delays every request for
// /delay (to web-v2) by 200ms.
func testFaults(t *testing.T, ctx context.Context, gw gatewayclient.Interface) {
	ns := traffic2FaultNS
	e := setupTraffic(t, ctx, gw, ns, webBackend(ns, "web-v1"), webBackend(ns, "web-v2"))
	defer dumpClientProxy(t, e)
	applied := e.applyRoutes(t, ctx, "traffic2-fault.yaml")
	e.waitRouteStatus(t, ctx, "web-fault", applied, 30*time.Second, accepted, resolved)
	e.waitRouted(t, ctx, "/delay", nil)

	got := e.burst(ctx, faultRequests, 4, "/abort", nil)
	share := float64(got.count("HTTP 503")) / faultRequests
	t.Logf("abort 50%%: %s; 503 share %.2f%% (want %.0f-%.0f%%); the first 503 said %q",
		got, 100*share, 100*faultMinShare, 100*faultMaxShare, strings.TrimSpace(got.firstOf("HTTP 503").body))
	if n, bad := got.others("web-v1", "HTTP 503"); n > 0 {
		t.Errorf("abort 50%%: %d of %d requests neither web-v1's 200 nor a 503: %s", n, faultRequests, bad)
	}
	if share < faultMinShare || share > faultMaxShare {
		t.Errorf("abort 50%%: %.2f%% of %d requests got 503, want %.0f-%.0f%%", 100*share, faultRequests, 100*faultMinShare, 100*faultMaxShare)
	}
	logSeries(t, ctx, e.client.pod, "mesh_proxy_http_faults_total")

	// A steady client of /delay: what mesh viz stat shows of its
	// requests to web-v2 while it keeps sending, and what it saw itself.
	web := e.target()
	load := startOpenLoad(ctx, faultRPS, 3*time.Minute, func(ctx context.Context) reply {
		return web.do(ctx, http.MethodGet, "/delay", nil)
	})
	defer load.stop()
	time.Sleep(faultWindow + 5*time.Second) // a full window, and a scrape after it
	var row vizv1.StatRow
	args := []string{"viz", "stat", "deploy", "client", "-n", ns, "--to", "deploy/web-v2",
		"-t", faultWindow.String(), "-o", "json"}
	poll(t, ctx, time.Minute, "mesh "+strings.Join(args, " ")+": a p50 over enough requests", func(ctx context.Context) (bool, string, error) {
		r := command(ctx, nil, nil, e2e.mesh, args...)
		if r.err != nil {
			return false, fmt.Sprintf("%v: %s", r.err, r.stderr), nil
		}
		var list vizv1.StatList
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
			return false, fmt.Sprintf("%v: %q", err, r.stdout), nil
		}
		if len(list.Rows) != 1 {
			return false, fmt.Sprintf("%d rows, want client's: %s", len(list.Rows), r.stdout), nil
		}
		row = list.Rows[0]
		return row.Requests >= faultMinSeen && row.LatencyP50 != nil, fmt.Sprintf("%d requests, p50 %s", row.Requests, ms(row.LatencyP50)), nil
	})
	replies := load.stop()
	var client tally
	var times []time.Duration
	for _, r := range replies {
		client.add(r.answer)
		times = append(times, r.elapsed)
	}
	slices.Sort(times)
	t.Logf("delay 200ms: mesh viz stat deploy client --to deploy/web-v2 over %s: %d requests, success %s, p50 %s p95 %s p99 %s; "+
		"the client's own view of %s: p50 %s, fastest %s",
		faultWindow, row.Requests, pct(row.SuccessRate), ms(row.LatencyP50), ms(row.LatencyP95), ms(row.LatencyP99),
		&client, quantileOf(times, 0.5), quantileOf(times, 0))
	if n, bad := client.others("web-v2"); n > 0 {
		t.Errorf("delay 200ms: %d of %d requests for /delay not answered 200 by web-v2: %s", n, len(replies), bad)
	}
	if len(times) > 0 && times[0] < faultDelay {
		t.Errorf("delay 200ms: the fastest answer for /delay took %s, want every one at least %s", times[0], faultDelay)
	}
	if p50 := row.LatencyP50; p50 == nil || *p50 < faultP50Min || *p50 > faultP50Max {
		t.Errorf("delay 200ms: mesh viz stat's p50 of client's requests to web-v2 is %s, want %.0f-%dms", ms(p50), faultDelay.Seconds()*1000, faultP50Max)
	}
}

const (
	// rateLimit is the policy's requestsPerSecond; rateOffered what each
	// client sends for rateWarm plus rateWindow. Issue 14's test 6 wants
	// the accepted rate within 10% of the limit. The limiter admits a
	// burst of one second's worth after an idle second (docs/policy.md,
	// GCRA), which would add 10% to a 10s window from a standing start:
	// rateWarm spends it before the window opens.
	rateLimit   = 100
	rateOffered = 200
	rateWarm    = 2 * time.Second
	rateWindow  = 10 * time.Second
	rateMin     = 90
	rateMax     = 110
)

// testRateLimits is issue 14's test 6: the Server limited-http (app
// limited's port 8080) under HTTPLocalRateLimitPolicy limited-rl, first
// total 100 RPS with client-a alone at 200 RPS, then identity 100 RPS
// with client-a and client-b (two ServiceAccounts) at 200 RPS each.
func testRateLimits(t *testing.T, ctx context.Context) {
	ns := traffic2RateLimitNS
	clientA := demoApp{ns: ns, name: "client-a", sa: "client-a", args: []string{"echo", "--admin-addr", ""}}
	clientB := demoApp{ns: ns, name: "client-b", sa: "client-b", args: []string{"echo", "--admin-addr", ""}}
	setupApps(t, ctx, ns, serviceAccount(ns, "client-a"), serviceAccount(ns, "client-b"),
		clientA.manifest(), clientB.manifest(), webBackend(ns, "limited").manifest())
	server := meshedPod(t, ctx, ns, "limited", true)
	defer func() {
		if t.Failed() {
			dumpProxy(t, server)
		}
	}()
	addr := serviceAddr(t, ctx, ns, "limited")
	a := target{client: meshedClient(t, ctx, ns, "client-a"), addr: addr, host: "limited:8080"}
	b := target{client: meshedClient(t, ctx, ns, "client-b"), addr: addr, host: "limited:8080"}

	applyFile(t, ctx, ns, "traffic2-ratelimit.yaml")
	waitRateLimitAccepted(t, ctx, ns, "limited-rl")
	waitLimited(t, ctx, a)
	checkRate(t, "total 100 RPS, client-a alone", runRate(ctx, a))
	logSeries(t, ctx, server, "mesh_proxy_http_rate_limited_total")

	updates := proxyCounter(t, ctx, server, "mesh_proxy_inbound_policy_updates_total")
	mustRun(t, ctx, nil, e2e.kubectl, "patch", "httplocalratelimitpolicy", "limited-rl", "-n", ns, "--type", "merge",
		"-p", fmt.Sprintf(`{"spec":{"total":null,"identity":{"requestsPerSecond":%d}}}`, rateLimit))
	patched := time.Now()
	poll(t, ctx, 30*time.Second, "limited's proxy gets the policy with the identity limit", func(ctx context.Context) (bool, string, error) {
		m, err := scrape(ctx, server)
		if err != nil {
			return false, err.Error(), nil
		}
		n := m.Sum("mesh_proxy_inbound_policy_updates_total")
		return n > updates, fmt.Sprintf("mesh_proxy_inbound_policy_updates_total %.0f, %.0f before the patch", n, updates), nil
	})
	t.Logf("limited's proxy had the identity limit %s after the patch", time.Since(patched).Round(time.Millisecond))
	var gotA, gotB []reply
	var wg sync.WaitGroup
	wg.Go(func() { gotA = runRate(ctx, a) })
	wg.Go(func() { gotB = runRate(ctx, b) })
	wg.Wait()
	checkRate(t, "identity 100 RPS, client-a beside client-b", gotA)
	checkRate(t, "identity 100 RPS, client-b beside client-a", gotB)
	logSeries(t, ctx, server, "mesh_proxy_http_rate_limited_total")
}

// waitRateLimitAccepted polls HTTPLocalRateLimitPolicy name until the
// controller says it applies (Accepted=True) to its current generation.
func waitRateLimitAccepted(t *testing.T, ctx context.Context, ns, name string) {
	t.Helper()
	start := time.Now()
	poll(t, ctx, 30*time.Second, fmt.Sprintf("HTTPLocalRateLimitPolicy %s/%s Accepted=True", ns, name), func(ctx context.Context) (bool, string, error) {
		r := command(ctx, nil, nil, e2e.kubectl, "get", "httplocalratelimitpolicy", name, "-n", ns, "-o", "json")
		if r.err != nil {
			return false, fmt.Sprintf("%v: %s", r.err, r.stderr), nil
		}
		var p policyv1alpha1.HTTPLocalRateLimitPolicy
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
			return false, err.Error(), nil
		}
		for _, c := range p.Status.Conditions {
			if c.Type == policyv1alpha1.RateLimitConditionAccepted && c.ObservedGeneration >= p.Generation {
				return c.Status == metav1.ConditionTrue, fmt.Sprintf("%s=%s/%s (%q)", c.Type, c.Status, c.Reason, c.Message), nil
			}
		}
		return false, "conditions " + formatConditions(p.Status.Conditions), nil
	})
	t.Logf("HTTPLocalRateLimitPolicy %s accepted %s after the apply", name, time.Since(start).Round(time.Millisecond))
}

// waitLimited sends quick bursts from tg until one gets a 429: the
// server's proxy then holds the limit.
func waitLimited(t *testing.T, ctx context.Context, tg target) {
	t.Helper()
	start := time.Now()
	poll(t, ctx, 30*time.Second, "a 429 from limited's proxy", func(ctx context.Context) (bool, string, error) {
		got := tg.burst(ctx, 3*rateLimit/2, 8, "/")
		return got.count("HTTP 429") > 0, got.String(), nil
	})
	t.Logf("limited's proxy answered 429 %s after the policy was accepted", time.Since(start).Round(time.Millisecond))
}

// runRate sends GET / from tg at rateOffered for rateWarm plus rateWindow.
func runRate(ctx context.Context, tg target) []reply {
	return startOpenLoad(ctx, rateOffered, rateWarm+rateWindow, func(ctx context.Context) reply {
		return tg.do(ctx, http.MethodGet, "/", nil)
	}).wait()
}

// checkRate checks the requests of runRate sent in its window: accepted
// (answered by limited) at rateMin to rateMax a second, the rest 429 with
// a Retry-After of whole seconds, at least 1.
func checkRate(t *testing.T, what string, replies []reply) {
	t.Helper()
	if len(replies) == 0 {
		t.Errorf("%s: no request sent", what)
		return
	}
	from := replies[0].sent.Add(rateWarm)
	var (
		got                 tally
		badRetry            []string
		first, last         time.Time
		accepted, outWindow int
	)
	for _, r := range replies {
		if r.sent.Before(from) || !r.sent.Before(from.Add(rateWindow)) {
			outWindow++
			continue
		}
		if first.IsZero() {
			first = r.sent
		}
		last = r.sent
		got.add(r.answer)
		switch {
		case r.fromApp():
			accepted++
		case r.err == nil && r.status == http.StatusTooManyRequests:
			if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
				badRetry = append(badRetry, fmt.Sprintf("Retry-After %q", r.header.Get("Retry-After")))
			}
		}
	}
	sentRate := float64(got.n) / rateWindow.Seconds()
	rate := float64(accepted) / rateWindow.Seconds()
	t.Logf("%s: in the %s window after %s of warm-up, %s (sent %.0f/s, over %s); accepted %.1f/s (want %d-%d); %d requests outside the window",
		what, rateWindow, rateWarm, &got, sentRate, last.Sub(first).Round(time.Millisecond), rate, rateMin, rateMax, outWindow)
	if sentRate < 0.9*rateOffered {
		t.Errorf("%s: the client sent %.0f requests a second in the window, want about %d: the load did not keep up, so the limit cannot be judged", what, sentRate, rateOffered)
	}
	if rate < rateMin || rate > rateMax {
		t.Errorf("%s: %.1f requests a second accepted, want %d-%d", what, rate, rateMin, rateMax)
	}
	if n, bad := got.others("limited", "HTTP 429"); n > 0 {
		t.Errorf("%s: %d requests neither accepted nor 429: %s", what, n, bad)
	}
	if len(badRetry) > 0 {
		t.Errorf("%s: %d of %d 429s without a Retry-After of whole seconds >= 1; first: %s", what, len(badRetry), got.count("HTTP 429"), badRetry[0])
	}
}

// testGRPCMethodRoute is issue 14's test 7, its GRPCRoute half: the route
// catalog-method sends the Catalog's GetProduct to catalog-v2 and every
// other call to catalog-v1. Like web in TestTraffic, the parent Service
// catalog has pods of its own, which answer only calls no route applies
// to. Each answer names its pod in the catalog's x-served-by header.
func testGRPCMethodRoute(t *testing.T, ctx context.Context, gw gatewayclient.Interface) {
	ns := traffic2GRPCNS
	grpcApp := func(name string) string {
		return demoApp{ns: ns, name: name, args: []string{"catalog"}, port: 9090, portName: "grpc"}.manifest()
	}
	client := demoApp{ns: ns, name: "client", args: []string{"echo", "--admin-addr", ""}}
	setupApps(t, ctx, ns, client.manifest(), grpcApp("catalog"), grpcApp("catalog-v1"), grpcApp("catalog-v2"))
	c := meshedClient(t, ctx, ns, "client")
	defer func() {
		if t.Failed() {
			dumpProxy(t, c.pod)
		}
	}()
	conn, err := grpc.NewClient("passthrough:///"+serviceAddr(t, ctx, ns, "catalog"),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return c.dial(ctx, "tcp", addr) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("catalog:9090"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := catalogv1.NewCatalogClient(conn)

	applied := applyFile(t, ctx, ns, "traffic2-grpc.yaml")
	waitGRPCRouteStatus(t, ctx, gw, ns, "catalog-method", "catalog", applied, 30*time.Second, accepted, resolved)
	start, sent := time.Now(), 0
	poll(t, ctx, 30*time.Second, "a GetProduct call routed (answered by catalog-v2)", func(ctx context.Context) (bool, string, error) {
		pod, err := servedBy(ctx, cl, "GetProduct")
		sent++
		return err == nil && workloadOf(pod) == "catalog-v2", fmt.Sprintf("call %d: %q, %v", sent, pod, err), nil
	})
	t.Logf("the route applies: call %d was the first routed, %s after the first", sent, time.Since(start).Round(time.Millisecond))

	for _, tc := range []struct{ method, want string }{
		{method: "GetProduct", want: "catalog-v2"},
		{method: "ListProducts", want: "catalog-v1"},
	} {
		const calls = 50
		by := map[string]int{}
		var first []string
		for range calls {
			pod, err := servedBy(ctx, cl, tc.method)
			o := workloadOf(pod)
			if err != nil {
				o = "error"
			}
			by[o]++
			if o != tc.want && len(first) < 3 {
				first = append(first, fmt.Sprintf("%q %v", pod, err))
			}
		}
		t.Logf("%s: %d calls, answered by %v", tc.method, calls, by)
		if by[tc.want] != calls {
			t.Errorf("%s: %d of %d calls answered by %s, want all: %v; first others: %s", tc.method, by[tc.want], calls, tc.want, by, strings.Join(first, "; "))
		}
	}
}

// servedBy calls method of the catalog and returns the pod its answer
// names.
func servedBy(ctx context.Context, cl catalogv1.CatalogClient, method string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var md metadata.MD
	var err error
	switch method {
	case "GetProduct":
		_, err = cl.GetProduct(ctx, &catalogv1.GetProductRequest{Id: "mug"}, grpc.Header(&md))
	case "ListProducts":
		_, err = cl.ListProducts(ctx, &catalogv1.ListProductsRequest{}, grpc.Header(&md))
	default:
		return "", fmt.Errorf("no method %s in the catalog", method)
	}
	if err != nil {
		return "", err
	}
	if v := md.Get(catalog.ServedByKey); len(v) == 1 {
		return v[0], nil
	}
	return "", fmt.Errorf("%s answered with %s %q, want one pod name", method, catalog.ServedByKey, md.Get(catalog.ServedByKey))
}

// workloadOf is the Deployment of a pod: <deployment>-<ReplicaSet
// hash>-<suffix>.
func workloadOf(pod string) string {
	parts := strings.Split(pod, "-")
	if len(parts) < 3 {
		return pod
	}
	return strings.Join(parts[:len(parts)-2], "-")
}

const (
	// notDeliveredRPS for notDeliveredFor, scaling at notDeliveredScaleAt,
	// is issue 14's test 8 (docs/traffic.md 4.2 has 60s and 10s; the
	// pods are gone well within 20s).
	notDeliveredRPS     = 100
	notDeliveredFor     = 20 * time.Second
	notDeliveredScaleAt = 5 * time.Second
)

// testNotDelivered is issue 14's test 8: four pods of an echo that exits
// at once on SIGTERM (--exit-on-term, no preStop), scaled to one while a
// client POSTs to them at 100 RPS. The three pods' apps are gone while
// their proxies may still get requests; every such request must be sent
// again to another pod, and none may fail.
func testNotDelivered(t *testing.T, ctx context.Context) {
	ns := traffic2NotDeliveredNS
	client := demoApp{ns: ns, name: "client", args: []string{"echo", "--admin-addr", ""}}
	setupApps(t, ctx, ns, client.manifest(), withReplicas(t, webBackend(ns, "abrupt", "--exit-on-term").manifest(), 4))
	c := meshedClient(t, ctx, ns, "client")
	defer func() {
		if t.Failed() {
			dumpProxy(t, c.pod)
		}
	}()
	tg := target{client: c, addr: serviceAddr(t, ctx, ns, "abrupt"), host: "abrupt:8080"}
	// The client's proxy knows all four before the load starts.
	seen := map[string]bool{}
	poll(t, ctx, 30*time.Second, "all four abrupt pods answer", func(ctx context.Context) (bool, string, error) {
		r := tg.do(ctx, http.MethodGet, "/", nil)
		if r.fromApp() {
			seen[strings.TrimSpace(strings.TrimPrefix(r.body, "echo from "))] = true
		}
		return len(seen) == 4, fmt.Sprintf("%d pods answered; last %s", len(seen), r.answer), nil
	})

	before := proxyCounter(t, ctx, c.pod, "mesh_proxy_http_retries_total", "reason", "not_delivered")
	body := []byte(`{"order":"e2e-not-delivered","cents":1999}`)
	load := startOpenLoad(ctx, notDeliveredRPS, notDeliveredFor, func(ctx context.Context) reply {
		return tg.do(ctx, http.MethodPost, "/orders", body)
	})
	defer load.stop()
	time.Sleep(notDeliveredScaleAt)
	scaled := time.Now()
	mustRun(t, ctx, nil, e2e.kubectl, "scale", "-n", ns, "deployment/abrupt", "--replicas=1")
	replies := load.wait()
	retried := proxyCounter(t, ctx, c.pod, "mesh_proxy_http_retries_total", "reason", "not_delivered") - before

	var got tally
	pods := map[string][2]int{} // answers by pod: sent before and after the scale
	var failures []string
	for _, r := range replies {
		got.add(r.answer)
		if !r.fromApp() {
			failures = append(failures, fmt.Sprintf("sent %s after the scale: %s", r.sent.Sub(scaled).Round(time.Millisecond), r.answer))
			continue
		}
		pod := strings.TrimSpace(strings.TrimPrefix(r.body, "echo from "))
		p := pods[pod]
		if r.sent.Before(scaled) {
			p[0]++
		} else {
			p[1]++
		}
		pods[pod] = p
	}
	t.Logf("%d POSTs at %d RPS over %s, scaled 4 to 1 after %s: %s", len(replies), notDeliveredRPS, load.took().Round(time.Millisecond), notDeliveredScaleAt, &got)
	for _, p := range slices.Sorted(maps.Keys(pods)) {
		t.Logf("  %s answered %d sent before the scale, %d after", p, pods[p][0], pods[p][1])
	}
	t.Logf("the client's proxy sent %.0f requests again as not delivered (mesh_proxy_http_retries_total{reason=\"not_delivered\"})", retried)
	if len(failures) > 0 {
		t.Errorf("%d of %d POSTs failed, want none; first: %s", len(failures), len(replies), strings.Join(failures[:min(5, len(failures))], "; "))
	}
	if want := int(notDeliveredFor.Seconds()) * notDeliveredRPS * 9 / 10; len(replies) < want {
		t.Errorf("the client sent %d POSTs, want at least %d", len(replies), want)
	}
	if retried <= 0 {
		t.Errorf("mesh_proxy_http_retries_total{reason=\"not_delivered\"} rose by %.0f on the client's proxy, want > 0: "+
			"no request met a pod whose app was gone, so the test did not exercise the retry", retried)
	}
}

// TestTrafficControllerDown is issue 14's test 9, its second half:
// proxies keep serving the last good routes while the controller is down.
// It stops the controller every other test relies on, so it does not run
// in parallel (main_test.go). A 90/10 split and a route with a 300ms
// request timeout to a 2s backend, working, then the controller scaled to
// zero: 30s after its pods are gone the split still lands within 3 points
// over 500 requests (a standard deviation of 1.34 points: 2.2 of them to a
// bound) and the timeout still answers 504 within 300-450ms. The
// controller comes back when the test ends, passed or failed.
func TestTrafficControllerDown(t *testing.T) {
	needEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	gw, err := gatewayclient.NewForConfig(e2e.rest)
	if err != nil {
		t.Fatal(err)
	}
	ns := traffic2ControllerNS
	e := setupTraffic(t, ctx, gw, ns, webBackend(ns, "web-v1"), webBackend(ns, "web-v2"),
		webBackend(ns, "web-slow", "--latency", "2s"))
	defer dumpClientProxy(t, e)
	applied := e.applyRoutes(t, ctx, "traffic2-ctldown.yaml")
	e.waitRouteStatus(t, ctx, "web-split", applied, 30*time.Second, accepted, resolved)
	e.waitRouteStatus(t, ctx, "web-bounded", applied, 30*time.Second, accepted, resolved)
	e.waitRouted(t, ctx, "/", nil)

	// Working with the controller up: both backends answer, none fails,
	// and the timeout cuts.
	got := e.burst(ctx, 200, 4, "/", nil)
	t.Logf("controller up: %s", got)
	if n, bad := got.others("web-v1", "web-v2"); n > 0 || got.count("web-v1") == 0 || got.count("web-v2") == 0 {
		t.Fatalf("controller up: %s, want web-v1 and web-v2 answering every request; others: %s", got, bad)
	}
	checkTimeouts(t, ctx, e, "controller up", 3)

	restore := stopController(t, ctx)
	const down = 30 * time.Second
	t.Logf("controller down; waiting %s", down)
	time.Sleep(down)
	got = e.burst(ctx, 500, 4, "/", nil)
	share := float64(got.count("web-v2")) / 500
	t.Logf("controller down %s: %s; web-v2's share %.2f%% (want %.0f-%.0f%%)", down, got, 100*share, 100*splitMinShare, 100*splitMaxShare)
	if n, bad := got.others("web-v1", "web-v2"); n > 0 {
		t.Errorf("controller down: %d of 500 requests not answered 200 by web-v1 or web-v2: %s", n, bad)
	}
	if share < splitMinShare || share > splitMaxShare {
		t.Errorf("controller down: web-v2 answered %.2f%% of 500 requests, want %.0f-%.0f%%: the proxy lost the split", 100*share, 100*splitMinShare, 100*splitMaxShare)
	}
	checkTimeouts(t, ctx, e, "controller down", 10)
	restore()
}

// checkTimeouts sends n requests for /bounded (web-bounded's 300ms
// request timeout before web-slow's 2s) and wants each answered 504 within
// 300-450ms.
func checkTimeouts(t *testing.T, ctx context.Context, e *trafficEnv, what string, n int) {
	t.Helper()
	const lower, upper = 300 * time.Millisecond, 450 * time.Millisecond
	var took []string
	for i := range n {
		a := e.send(ctx, "/bounded", nil)
		took = append(took, fmt.Sprintf("%d %s", a.status, a.elapsed.Round(time.Millisecond)))
		if a.err != nil || a.status != http.StatusGatewayTimeout || a.elapsed < lower || a.elapsed > upper {
			t.Errorf("%s: request %d for /bounded: %s, want 504 within %s-%s", what, i+1, a, lower, upper)
		}
	}
	t.Logf("%s: %d requests for /bounded (timeouts.request 300ms, backend 2s): %s", what, n, strings.Join(took, ", "))
}

// stopController scales mesh-controller to zero and waits until its pods
// are gone. The returned function scales it back to the replicas it had
// and waits until they are ready; it runs at the latest when the test
// ends, passed or failed, and only once.
func stopController(t *testing.T, ctx context.Context) func() {
	t.Helper()
	ns, deploy := manifests.DefaultNamespace, manifests.ControllerName
	d, err := e2e.client.AppsV1().Deployments(ns).Get(ctx, deploy, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replicas := int32(1)
	if d.Spec.Replicas != nil && *d.Spec.Replicas > 0 {
		replicas = *d.Spec.Replicas
	}
	var once sync.Once
	restore := func() {
		once.Do(func() {
			// Its own context: the controller comes back even when the
			// test's has run out.
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			start := time.Now()
			for _, args := range [][]string{
				{"scale", "-n", ns, "deployment/" + deploy, fmt.Sprintf("--replicas=%d", replicas)},
				{"rollout", "status", "-n", ns, "deployment/" + deploy, "--timeout=3m"},
			} {
				if r := command(ctx, nil, nil, e2e.kubectl, args...); r.err != nil {
					t.Errorf("bring the controller back: kubectl %s: %v\n%s%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
					return
				}
			}
			t.Logf("the controller is back: %d replicas ready %s after the scale", replicas, time.Since(start).Round(time.Second))
		})
	}
	t.Cleanup(restore)
	mustRun(t, ctx, nil, e2e.kubectl, "scale", "-n", ns, "deployment/"+deploy, "--replicas=0")
	poll(t, ctx, 2*time.Minute, "controller pods gone", func(ctx context.Context) (bool, string, error) {
		pods, err := e2e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + deploy})
		if err != nil {
			return false, err.Error(), nil
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d left", len(pods.Items)), nil
	})
	return restore
}

// target is a Service as the app of a meshed client pod calls it: its
// ClusterIP:port, and the Host of its requests.
type target struct {
	client     *podClient
	addr, host string
}

// target is Service web as e's client calls it.
func (e *trafficEnv) target() target {
	return target{client: e.client, addr: e.web, host: "web:8080"}
}

// reply is an answer with its response headers and when its request was
// sent.
type reply struct {
	answer
	header http.Header
	sent   time.Time
}

// do sends one request with body (nil for none) on a connection of its
// own, as trafficEnv.send does, so that no client-side retry on a reused
// connection can hide a failure.
func (tg target) do(ctx context.Context, method, path string, body []byte) reply {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr := &http.Transport{DialContext: tg.client.dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r := reply{sent: time.Now()}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+tg.addr+path, rd)
	if err != nil {
		r.err = err
		return r
	}
	req.Host = tg.host
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		r.err, r.elapsed = err, time.Since(r.sent)
		return r
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	r.status, r.header, r.body, r.err, r.elapsed = resp.StatusCode, resp.Header, string(b), err, time.Since(r.sent)
	return r
}

// burst sends n GETs for path, workers at a time, and counts their answers.
func (tg target) burst(ctx context.Context, n, workers int, path string) *tally {
	var got tally
	var wg sync.WaitGroup
	jobs := make(chan struct{})
	for range workers {
		wg.Go(func() {
			for range jobs {
				got.add(tg.do(ctx, http.MethodGet, path, nil).answer)
			}
		})
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return &got
}

// openLoadInFlight bounds the requests of an openLoad in flight at once;
// past it the schedule slips, which the send times show.
const openLoadInFlight = 512

// openLoad sends requests at a fixed rate, open loop: request i leaves at
// start + i/rps whether or not those before it were answered, as
// independent clients would send them, so a slow answer delays no other
// request.
type openLoad struct {
	start   time.Time
	end     time.Time // when the last answer came; written before done closes
	stopc   chan struct{}
	once    sync.Once
	done    chan struct{}
	replies []reply // one per request sent, in the order sent; read after done
}

// startOpenLoad sends rps requests a second with send for d, or until
// stop.
func startOpenLoad(ctx context.Context, rps int, d time.Duration, send func(context.Context) reply) *openLoad {
	n := int(d * time.Duration(rps) / time.Second)
	l := &openLoad{start: time.Now(), stopc: make(chan struct{}), done: make(chan struct{}), replies: make([]reply, n)}
	go func() {
		defer close(l.done)
		var wg sync.WaitGroup
		inFlight := make(chan struct{}, openLoadInFlight)
		sent := 0
	schedule:
		for i := range n {
			next := time.NewTimer(time.Until(l.start.Add(time.Duration(i) * time.Second / time.Duration(rps))))
			select {
			case <-next.C:
			case <-l.stopc:
				next.Stop()
				break schedule
			case <-ctx.Done():
				next.Stop()
				break schedule
			}
			select {
			case inFlight <- struct{}{}:
			case <-ctx.Done():
				break schedule
			}
			sent++
			wg.Go(func() {
				defer func() { <-inFlight }()
				l.replies[i] = send(ctx)
			})
		}
		wg.Wait()
		l.replies = l.replies[:sent]
		l.end = time.Now()
	}()
	return l
}

// wait returns the replies once every request was sent and answered.
func (l *openLoad) wait() []reply {
	<-l.done
	return l.replies
}

// stop sends no more requests and returns the replies once those sent
// are answered. It may be called more than once.
func (l *openLoad) stop() []reply {
	l.once.Do(func() { close(l.stopc) })
	return l.wait()
}

// took is how long the load ran, from its start to its last answer; call
// it after wait or stop.
func (l *openLoad) took() time.Duration { return l.end.Sub(l.start) }

// setupApps creates the meshed namespace ns with manifests (each one or
// more documents), waits for every Deployment, and deletes the namespace
// when the test ends, passed or not.
func setupApps(t *testing.T, ctx context.Context, ns string, manifests ...string) {
	t.Helper()
	parts := []string{namespaceManifest(ns)}
	for _, m := range manifests {
		parts = append(parts, strings.TrimSuffix(m, "---\n"))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, ns)
	})
	mustRun(t, ctx, []byte(strings.Join(parts, "---\n")), e2e.kubectl, "apply", "-f", "-")
	start := time.Now()
	waitDeployments(t, ctx, ns, 3*time.Minute)
	t.Logf("deployments available in %s after %s", ns, time.Since(start).Round(time.Second))
}

// meshedClient is a podClient in the pod of app, which must be meshed: a
// client outside the mesh would bypass what it is to show.
func meshedClient(t *testing.T, ctx context.Context, ns, app string) *podClient {
	t.Helper()
	meshedPod(t, ctx, ns, app, true)
	return newPodClient(t, ctx, ns, app)
}

// applyFile applies testdata/<file> with .NS set to ns and returns when
// kubectl returned.
func applyFile(t *testing.T, ctx context.Context, ns, file string) time.Time {
	t.Helper()
	return (&trafficEnv{ns: ns}).applyRoutes(t, ctx, file)
}

// withReplicas is a demoApp manifest with n replicas instead of one.
func withReplicas(t *testing.T, manifest string, n int) string {
	t.Helper()
	const one = "\n  replicas: 1\n"
	if strings.Count(manifest, one) != 1 {
		t.Fatalf("no single %q in the manifest:\n%s", one, manifest)
	}
	return strings.Replace(manifest, one, fmt.Sprintf("\n  replicas: %d\n", n), 1)
}

// scaleDeployment scales Deployment name of ns to n and waits until every
// Deployment of ns is available.
func scaleDeployment(t *testing.T, ctx context.Context, ns, name string, n int) {
	t.Helper()
	mustRun(t, ctx, nil, e2e.kubectl, "scale", "-n", ns, "deployment/"+name, fmt.Sprintf("--replicas=%d", n))
	waitDeployments(t, ctx, ns, 3*time.Minute)
}

// podsOf returns the running pods of app.
func podsOf(t *testing.T, ctx context.Context, ns, app string) []*corev1.Pod {
	t.Helper()
	var pods []*corev1.Pod
	for _, p := range runningPods(t, ctx, ns, "app="+app) {
		pods = append(pods, &p)
	}
	return pods
}

// sumInbound adds up the requests the proxies of pods let in to their app
// on 8080 (inboundRequests): those that reached it.
func sumInbound(t *testing.T, ctx context.Context, pods []*corev1.Pod) float64 {
	t.Helper()
	var n float64
	for _, p := range pods {
		c, err := inboundRequests(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		n += c
	}
	return n
}

// proxyCounter is the sum of the series of name on pod's proxy whose
// labels include the pairs of labels.
func proxyCounter(t *testing.T, ctx context.Context, pod *corev1.Pod, name string, labels ...string) float64 {
	t.Helper()
	m, err := scrape(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	return m.Sum(name, labels...)
}

// logSeries logs every series of the families names on pod's proxy, or
// that it has none, for what a test saw.
func logSeries(t *testing.T, ctx context.Context, pod *corev1.Pod, names ...string) {
	t.Helper()
	m, err := scrape(ctx, pod)
	if err != nil {
		t.Logf("scrape %s: %v", pod.Name, err)
		return
	}
	for _, name := range names {
		t.Logf("%s's proxy: %s", pod.Name, formatSeries(m, name))
	}
}

// formatSeries is every series of family name, with its labels and value.
func formatSeries(m metricstest.Families, name string) string {
	fam, ok := m[name]
	if !ok || len(fam.GetMetric()) == 0 {
		return name + ": no series"
	}
	var lines []string
	for _, s := range fam.GetMetric() {
		var labels []string
		for _, l := range s.GetLabel() {
			if l.GetValue() != "" {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
		}
		lines = append(lines, fmt.Sprintf("%s{%s} %v", name, strings.Join(labels, ","), s.GetCounter().GetValue()+s.GetGauge().GetValue()))
	}
	slices.Sort(lines)
	return strings.Join(lines, "; ")
}

// quantileOf is the q-quantile of sorted durations, nearest rank.
func quantileOf(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))].Round(time.Millisecond)
}

// waitGRPCRouteStatus is trafficEnv.waitRouteStatus for GRPCRoute name of
// ns, whose parent is Service parent.
func waitGRPCRouteStatus(t *testing.T, ctx context.Context, gw gatewayclient.Interface, ns, name, parent string,
	since time.Time, bound time.Duration, want ...routeCond) {
	t.Helper()
	var conds []metav1.Condition
	what := fmt.Sprintf("GRPCRoute %s/%s: %v for parent Service %s", ns, name, want, parent)
	poll(t, ctx, max(time.Until(since.Add(bound)), time.Millisecond), what, func(ctx context.Context) (bool, string, error) {
		r, err := gw.GatewayV1().GRPCRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		var stale string
		conds, stale = ourParentConditions(r.Generation, r.Status.RouteStatus, parent)
		if stale != "" {
			return false, stale, nil
		}
		for _, w := range want {
			c := findCondition(conds, w.typ)
			if c == nil || c.Status != w.status || c.Reason != string(w.reason) {
				return false, "conditions " + formatConditions(conds), nil
			}
		}
		return true, "", nil
	})
	t.Logf("GRPCRoute %s: %s, %s after the apply", name, formatConditions(conds), time.Since(since).Round(time.Millisecond))
}

// ourParentConditions returns the conditions of the status entry the mesh
// controller (route.ControllerName) wrote in st for the parent Service
// parent, and "" or why they do not describe the route's generation gen.
func ourParentConditions(gen int64, st gatewayv1.RouteStatus, parent string) ([]metav1.Condition, string) {
	var others []string
	for _, p := range st.Parents {
		ref := p.ParentRef
		if p.ControllerName != route.ControllerName {
			others = append(others, string(p.ControllerName))
			continue
		}
		if ref.Group == nil || *ref.Group != "" || ref.Kind == nil || *ref.Kind != "Service" || string(ref.Name) != parent {
			continue
		}
		for _, c := range p.Conditions {
			if c.ObservedGeneration < gen {
				return p.Conditions, fmt.Sprintf("conditions of generation %d, the route is at %d", c.ObservedGeneration, gen)
			}
		}
		return p.Conditions, ""
	}
	return nil, fmt.Sprintf("no status entry of %s for parent Service %s (entries of others: %v)", route.ControllerName, parent, others)
}
