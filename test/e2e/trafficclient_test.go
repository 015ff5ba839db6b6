package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/mesh-dev/mesh/controller/route"
)

// trafficEnv is the namespace of one TestTraffic check: a meshed client,
// the Service web every route attaches to, and the backends the routes
// send to.
//
// web selects only the pods of its own Deployment, also named web, never
// a backend's: an answer from any other pod proves that the client's
// proxy applied a route, and an answer from web's pods that it did not.
// (Were web to select the backends too, a request the route missed would
// still reach one of them, and a 90/10 split would differ from no route
// only by statistics.)
type trafficEnv struct {
	ns     string
	gw     gatewayclient.Interface
	client *podClient
	web    string // ClusterIP:port of Service web
}

// webBackend is a Deployment and Service of demo echo named name, on
// port 8080, with the echo command's flags args.
func webBackend(ns, name string, args ...string) demoApp {
	return demoApp{ns: ns, name: name, args: append([]string{"echo"}, args...), port: 8080, portName: "http"}
}

// setupTraffic creates the meshed namespace ns with the client, web and
// backends, waits for them, and deletes the namespace when the test ends,
// passed or not.
func setupTraffic(t *testing.T, ctx context.Context, gw gatewayclient.Interface, ns string, backends ...demoApp) *trafficEnv {
	t.Helper()
	apps := append([]demoApp{
		{ns: ns, name: "client", args: []string{"echo", "--admin-addr", ""}},
		webBackend(ns, "web"),
	}, backends...)
	parts := []string{namespaceManifest(ns)}
	for _, a := range apps {
		parts = append(parts, a.manifest())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, ns)
	})
	mustRun(t, ctx, []byte(strings.Join(parts, "---\n")), e2e.kubectl, "apply", "-f", "-")
	start := time.Now()
	waitDeployments(t, ctx, ns, 3*time.Minute)
	t.Logf("%d deployments available in %s after %s", len(apps), ns, time.Since(start).Round(time.Second))
	// A client outside the mesh would bypass the routes it is to show.
	meshedPod(t, ctx, ns, "client", true)
	return &trafficEnv{ns: ns, gw: gw, client: newPodClient(t, ctx, ns, "client"), web: serviceAddr(t, ctx, ns, "web")}
}

// applyRoutes applies testdata/<file> in e's namespace and returns when
// kubectl returned.
func (e *trafficEnv) applyRoutes(t *testing.T, ctx context.Context, file string) time.Time {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join(e2e.root, "test", "e2e", "testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, map[string]string{"NS": e.ns}); err != nil {
		t.Fatal(err)
	}
	mustRun(t, ctx, []byte(b.String()), e2e.kubectl, "apply", "-f", "-")
	return time.Now()
}

// routeCond is a condition a route's status must hold.
type routeCond struct {
	typ    gatewayv1.RouteConditionType
	status metav1.ConditionStatus
	reason gatewayv1.RouteConditionReason
}

func (c routeCond) String() string { return fmt.Sprintf("%s=%s/%s", c.typ, c.status, c.reason) }

var (
	accepted = routeCond{gatewayv1.RouteConditionAccepted, metav1.ConditionTrue, gatewayv1.RouteReasonAccepted}
	resolved = routeCond{gatewayv1.RouteConditionResolvedRefs, metav1.ConditionTrue, gatewayv1.RouteReasonResolvedRefs}
)

// webParentStatus returns the conditions of the status entry the mesh
// controller (route.ControllerName) wrote on HTTPRoute name for its
// parent Service web, and "" or why they do not describe the route's
// current generation.
func (e *trafficEnv) webParentStatus(ctx context.Context, name string) ([]metav1.Condition, string, error) {
	r, err := e.gw.GatewayV1().HTTPRoutes(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, "", err
	}
	var others []string
	for _, p := range r.Status.Parents {
		ref := p.ParentRef
		if p.ControllerName != route.ControllerName {
			others = append(others, string(p.ControllerName))
			continue
		}
		if ref.Group == nil || *ref.Group != "" || ref.Kind == nil || *ref.Kind != "Service" || ref.Name != "web" {
			continue
		}
		for _, c := range p.Conditions {
			if c.ObservedGeneration < r.Generation {
				return p.Conditions, fmt.Sprintf("conditions of generation %d, the route is at %d", c.ObservedGeneration, r.Generation), nil
			}
		}
		return p.Conditions, "", nil
	}
	return nil, fmt.Sprintf("no status entry of %s for parent Service web (entries of others: %v)", route.ControllerName, others), nil
}

// waitRouteStatus polls HTTPRoute name until the mesh controller's status
// entry for its parent Service web holds every condition of want for the
// route's current generation, and fails the test unless that happens
// within bound of since. It logs what the status said and when.
func (e *trafficEnv) waitRouteStatus(t *testing.T, ctx context.Context, name string, since time.Time, bound time.Duration, want ...routeCond) {
	t.Helper()
	var conds []metav1.Condition
	defer func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			r := command(ctx, nil, nil, e2e.kubectl, "get", "httproute", "-n", e.ns, name, "-o", "yaml")
			t.Logf("kubectl get httproute %s -o yaml:\n%s%s", name, r.stdout, r.stderr)
			if conds == nil {
				t.Logf("no status of ours: the controller turns routes off when the cluster serves no Gateway API routes " +
					"as it starts (its log says \"routes are off\"); mesh install restarts it after installing the CRDs")
			}
		}
	}()
	what := fmt.Sprintf("HTTPRoute %s/%s: %v under %s", e.ns, name, want, route.ControllerName)
	poll(t, ctx, max(time.Until(since.Add(bound)), time.Millisecond), what, func(ctx context.Context) (bool, string, error) {
		got, stale, err := e.webParentStatus(ctx, name)
		if err != nil {
			return false, err.Error(), nil
		}
		conds = got
		if stale != "" {
			return false, stale, nil
		}
		for _, w := range want {
			c := findCondition(got, w.typ)
			if c == nil || c.Status != w.status || c.Reason != string(w.reason) {
				return false, "conditions " + formatConditions(got), nil
			}
		}
		return true, "", nil
	})
	t.Logf("HTTPRoute %s: %s, %s after the apply", name, formatConditions(conds), time.Since(since).Round(time.Millisecond))
}

func findCondition(conds []metav1.Condition, typ gatewayv1.RouteConditionType) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == string(typ) {
			return &conds[i]
		}
	}
	return nil
}

func formatConditions(conds []metav1.Condition) string {
	var parts []string
	for _, c := range conds {
		parts = append(parts, fmt.Sprintf("%s=%s/%s (%q)", c.Type, c.Status, c.Reason, c.Message))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// send sends GET path with header to Service web from e's client, on a
// connection of its own as podClient.get does, so that every request
// crosses the client's proxy afresh and no client-side retry on a reused
// connection can hide a failure.
func (e *trafficEnv) send(ctx context.Context, path string, header http.Header) answer {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tr := &http.Transport{DialContext: e.client.dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.web+path, nil)
	if err != nil {
		return answer{err: err}
	}
	req.Host = "web:8080"
	for k, v := range header {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return answer{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return answer{status: resp.StatusCode, body: string(body), err: err, elapsed: time.Since(start)}
}

// outcome names what answered: the Deployment of the demo echo pod whose
// 200 it is ("web-v1"), else "HTTP <status>", or "no answer".
func outcome(a answer) string {
	switch {
	case a.fromApp():
		pod := strings.TrimSpace(strings.TrimPrefix(a.body, "echo from "))
		// A Deployment's pod is <deployment>-<ReplicaSet hash>-<suffix>.
		parts := strings.Split(pod, "-")
		if len(parts) < 3 {
			return pod
		}
		return strings.Join(parts[:len(parts)-2], "-")
	case a.err != nil:
		return "no answer"
	default:
		return fmt.Sprintf("HTTP %d", a.status)
	}
}

// waitRouted sends a request every half second until one is answered by
// a pod other than web's own: the client's proxy then applies e's routes.
// A proxy learns of a Service's routes when it first resolves the Service,
// so the first requests may miss them.
func (e *trafficEnv) waitRouted(t *testing.T, ctx context.Context, path string, header http.Header) {
	t.Helper()
	start := time.Now()
	sent := 0
	poll(t, ctx, 30*time.Second, "a request to web "+path+" routed (answered by a pod other than web's own)", func(ctx context.Context) (bool, string, error) {
		a := e.send(ctx, path, header)
		sent++
		o := outcome(a)
		return o != "web" && a.fromApp(), fmt.Sprintf("request %d: %s", sent, a), nil
	})
	t.Logf("the route applies to requests for %s: request %d was the first routed, %s after the first was sent", path, sent, time.Since(start).Round(time.Millisecond))
}

// tally counts answers by outcome; safe for concurrent use.
type tally struct {
	mu    sync.Mutex
	n     int
	by    map[string]int
	first map[string]answer // the first answer of each outcome
}

func (t *tally) add(a answer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := outcome(a)
	if t.by == nil {
		t.by, t.first = map[string]int{}, map[string]answer{}
	}
	if t.by[o] == 0 {
		t.first[o] = a
	}
	t.by[o]++
	t.n++
}

// count is how many answers had outcome o.
func (t *tally) count(o string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.by[o]
}

// firstOf is the first answer of outcome o.
func (t *tally) firstOf(o string) answer {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.first[o]
}

// others returns, for the outcomes other than allowed, each with its count
// and first answer, or "" when there are none.
func (t *tally) others(allowed ...string) (n int, detail string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for _, o := range slices.Sorted(maps.Keys(t.by)) {
		if slices.Contains(allowed, o) {
			continue
		}
		n += t.by[o]
		parts = append(parts, fmt.Sprintf("%d %s (first: %s)", t.by[o], o, t.first[o]))
	}
	return n, strings.Join(parts, "; ")
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for o, n := range t.by {
		parts = append(parts, fmt.Sprintf("%s %d", o, n))
	}
	slices.Sort(parts)
	return fmt.Sprintf("%d requests: %s", t.n, strings.Join(parts, ", "))
}

// burst sends n requests for path with header, workers at a time, and
// counts their answers.
func (e *trafficEnv) burst(ctx context.Context, n, workers int, path string, header http.Header) *tally {
	var (
		got  tally
		wg   sync.WaitGroup
		jobs = make(chan struct{})
	)
	for range workers {
		wg.Go(func() {
			for range jobs {
				got.add(e.send(ctx, path, header))
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

// timedAnswer is an answer of a paced client, with when it was sent and
// when it came.
type timedAnswer struct {
	answer
	sent, done time.Time
}

// paced is a client sending GET / to web at a steady pace, one request
// after another, until finish.
type paced struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	answers  []timedAnswer // written by the client's goroutine until done is closed
}

// startPaced sends a request every `every` (or as soon as the one before
// is answered, when that takes longer) until finish.
func (e *trafficEnv) startPaced(ctx context.Context, every time.Duration) *paced {
	p := &paced{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			sent := time.Now()
			a := e.send(ctx, "/", nil)
			p.answers = append(p.answers, timedAnswer{answer: a, sent: sent, done: time.Now()})
			select {
			case <-p.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// finish stops the client and returns its answers in the order sent.
func (p *paced) finish() []timedAnswer {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	return p.answers
}
