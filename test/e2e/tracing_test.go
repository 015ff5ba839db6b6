package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
)

// The namespaces of TestTracing: the demo shop sampled at rate 1, and an
// echo pair whose proxies export to a collector that is not there.
const (
	tracingNS     = "e2e-tracing"
	tracingDeadNS = "e2e-tracing-dead"
)

// TestTracing is issue 15's test 1. The suite installs with --with-jaeger
// and --tracing-sample-rate 0 (ensureInstalled): every proxy exports to
// the real Jaeger that install deployed, and samples a request only when
// its parent did, or where a namespace says otherwise, as tracingNS does
// (rate 1). In tracingNS, the demo shop (whose web forwards the trace
// context it gets, testdata/demo/tracectx) answers a meshed client; the
// trace of each request must be in Jaeger's query API with a span per
// proxy on its way, each the child of the one before: the client's
// outbound span, web's inbound, web's outbound to catalog and to orders,
// catalog's and orders' inbound (orders calls payments over plain TCP,
// which carries no trace context, so the trace ends at orders). A request
// that arrives with a sampled traceparent keeps its trace ID; one that
// arrives with none starts a trace at the client's proxy. In
// tracingDeadNS the proxies export to a Service with no endpoints: every
// request still succeeds, and the spans are counted as dropped.
func TestTracing(t *testing.T) {
	needEnv(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)

	demo := string(demoManifest(t, "demo.yaml"))
	demo = strings.ReplaceAll(demo, "namespace: demo\n", "namespace: "+tracingNS+"\n")
	demo = strings.Replace(demo, "  name: demo\n", "  name: "+tracingNS+"\n", 1)
	demo = strings.Replace(demo, "    mesh.dev/inject: enabled\n",
		fmt.Sprintf("    mesh.dev/inject: enabled\n    %s: \"1\"\n", names.AnnotationTracingSampleRate), 1)
	demo = dropDeployment(t, demo, "loadgen") // its own traffic would fill Jaeger
	client := demoApp{ns: tracingNS, name: "client", args: []string{"echo", "--admin-addr", ""}}
	dead := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
  annotations:
    %[2]s: enabled
    %[3]s: nowhere.%[1]s.svc.cluster.local:4317
    %[4]s: "1"
---
# No selector and no endpoints: a connection to it is refused.
apiVersion: v1
kind: Service
metadata: {name: nowhere, namespace: %[1]s}
spec:
  ports: [{name: otlp, port: 4317}]
`, tracingDeadNS, names.AnnotationInject, names.AnnotationTracingCollector, names.AnnotationTracingSampleRate)
	deadServer := demoApp{ns: tracingDeadNS, name: "echo", args: []string{"echo"}, port: 8080, portName: "http"}
	deadClient := demoApp{ns: tracingDeadNS, name: "client", args: []string{"echo", "--admin-addr", ""}}
	manifest := strings.Join([]string{demo, client.manifest(), dead, deadServer.manifest(), deadClient.manifest()}, "---\n")
	mustRun(t, ctx, []byte(manifest), e2e.kubectl, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		deleteNamespace(t, ctx, tracingNS)
		deleteNamespace(t, ctx, tracingDeadNS)
	})
	waitDeployments(t, ctx, tracingNS, 4*time.Minute)
	waitDeployments(t, ctx, tracingDeadNS, 4*time.Minute)

	jaeger := runningPods(t, ctx, manifests.DefaultNamespace, "app.kubernetes.io/name=mesh-jaeger")[0]
	query, _, err := forwardPodPort(ctx, &jaeger, 16686)
	if err != nil {
		t.Fatalf("port-forward to %s/%s:16686: %v", jaeger.Namespace, jaeger.Name, err)
	}
	c := newPodClient(t, ctx, tracingNS, "client")
	web := serviceAddr(t, ctx, tracingNS, "web")
	services := map[string]string{} // Jaeger's service name (the proxy's pod.namespace) -> the app
	for _, app := range []string{"web", "catalog", "orders"} {
		p := runningPods(t, ctx, tracingNS, "app.kubernetes.io/name="+app)[0]
		services[p.Name+"."+tracingNS] = app
	}
	services[c.pod.Name+"."+tracingNS] = "client"

	t.Run("a sampled traceparent keeps its trace, a span per hop", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			want         []hop // every span the trace must hold, each with its parent
		}{{
			method: "GET", path: "/",
			want: []hop{{"client", "client", ""}, {"web", "server", "client"}, {"web", "client", "web"}, {"catalog", "server", "web"}},
		}, {
			method: "POST", path: "/buy?product=mug",
			want: []hop{
				{"client", "client", ""}, {"web", "server", "client"},
				{"web", "client", "web"}, {"catalog", "server", "web"},
				{"web", "client", "web"}, {"orders", "server", "web"},
			},
		}} {
			traceID, parent := traceHex(16), traceHex(8)
			a := sendTraced(ctx, c, tc.method, web, tc.path, "00-"+traceID+"-"+parent+"-01")
			if a.err != nil || a.status != http.StatusOK {
				t.Fatalf("%s %s with a sampled traceparent: %s", tc.method, tc.path, a)
			}
			var tr jaegerTrace
			poll(t, ctx, time.Minute, fmt.Sprintf("trace %s of %s %s in Jaeger with %d spans", traceID, tc.method, tc.path, len(tc.want)),
				func(ctx context.Context) (bool, string, error) {
					var err error
					tr, err = getTrace(ctx, query, traceID)
					if err != nil {
						return false, err.Error(), nil
					}
					return len(tr.Spans) >= len(tc.want), fmt.Sprintf("%d spans", len(tr.Spans)), nil
				})
			checkHops(t, tr, services, parent, tc.want)
		}
	})

	t.Run("a request without a trace starts one at the client's proxy", func(t *testing.T) {
		before := time.Now()
		if a := sendTraced(ctx, c, "GET", web, "/", ""); a.err != nil || a.status != http.StatusOK {
			t.Fatalf("GET / without a traceparent: %s", a)
		}
		clientService := c.pod.Name + "." + tracingNS
		poll(t, ctx, time.Minute, "a trace rooted at the client's proxy, with web's and catalog's spans", func(ctx context.Context) (bool, string, error) {
			traces, err := findTraces(ctx, query, clientService, before)
			if err != nil {
				return false, err.Error(), nil
			}
			for _, tr := range traces {
				got := tr.hops(services)
				if len(got) >= 4 && got[0] == (hop{"client", "client", ""}) {
					return true, "", nil
				}
			}
			return false, fmt.Sprintf("%d traces of %s since the request, none rooted there with 4 spans", len(traces), clientService), nil
		})
	})

	t.Run("an unreachable collector fails no request", func(t *testing.T) {
		dc := newPodClient(t, ctx, tracingDeadNS, "client")
		server := runningPods(t, ctx, tracingDeadNS, "app=echo")[0]
		addr := serviceAddr(t, ctx, tracingDeadNS, "echo")
		for i := range 50 {
			if a := sendTraced(ctx, dc, "GET", addr, fmt.Sprintf("/dead-%d", i), ""); !a.fromApp() {
				t.Fatalf("request %d with the collector unreachable: %s; want the echo's 200", i, a)
			}
		}
		poll(t, ctx, time.Minute, "the server proxy counting its spans as dropped", func(ctx context.Context) (bool, string, error) {
			fams, err := scrape(ctx, &server)
			if err != nil {
				return false, err.Error(), nil
			}
			dropped, exported := fams.Sum("mesh_proxy_trace_spans_dropped_total"), fams.Sum("mesh_proxy_trace_spans_exported_total")
			if exported > 0 {
				return false, "", fmt.Errorf("the proxy counts %v spans exported to a collector that does not exist", exported)
			}
			return dropped >= 50, fmt.Sprintf("%v dropped", dropped), nil
		})
	})
}

// hop is a span as the test expects it: the app whose proxy made it, its
// kind (client: outbound, server: inbound) and its parent's app ("" for a
// parent outside Jaeger: the test's own, or none).
type hop struct{ app, kind, parentApp string }

// checkHops checks that tr holds want, in any order, each span's parent
// the span of the app want names; the first span's parent is the test's
// span (parentID), which Jaeger does not hold.
func checkHops(t *testing.T, tr jaegerTrace, services map[string]string, parentID string, want []hop) {
	t.Helper()
	got := tr.hops(services)
	for _, s := range tr.Spans {
		if len(s.References) == 0 {
			t.Errorf("span %s (%s) has no parent; the trace's root is the test's span %s", s.SpanID, s.OperationName, parentID)
		}
		for _, r := range s.References {
			if r.TraceID != tr.TraceID {
				t.Errorf("span %s refers to trace %s, not its own %s", s.SpanID, r.TraceID, tr.TraceID)
			}
		}
	}
	rest := append([]hop(nil), got...)
	for _, w := range want {
		i := indexOf(rest, w)
		if i < 0 {
			t.Errorf("trace %s has no span %+v; it has %+v", tr.TraceID, w, got)
			continue
		}
		rest = append(rest[:i], rest[i+1:]...)
	}
	if len(rest) > 0 {
		t.Errorf("trace %s has spans the request did not make: %+v", tr.TraceID, rest)
	}
	for _, s := range tr.Spans {
		if p := s.parent(); p != "" && tr.span(p) == nil && p != parentID {
			t.Errorf("span %s's parent %s is neither in the trace nor the test's %s", s.SpanID, p, parentID)
		}
	}
}

func indexOf(hs []hop, h hop) int {
	for i, x := range hs {
		if x == h {
			return i
		}
	}
	return -1
}

// The parts of Jaeger's query API (GET /api/traces) the test reads.
type jaegerTrace struct {
	TraceID   string       `json:"traceID"`
	Spans     []jaegerSpan `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	ProcessID     string `json:"processID"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

func (s jaegerSpan) tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

func (tr jaegerTrace) span(id string) *jaegerSpan {
	for i := range tr.Spans {
		if tr.Spans[i].SpanID == id {
			return &tr.Spans[i]
		}
	}
	return nil
}

// hops describes tr's spans, the root (a span whose parent is not in the
// trace) first, by the apps services names.
func (tr jaegerTrace) hops(services map[string]string) []hop {
	app := func(s *jaegerSpan) string {
		name := tr.Processes[s.ProcessID].ServiceName
		if a, ok := services[name]; ok {
			return a
		}
		return name
	}
	var out []hop
	for i := range tr.Spans {
		s := &tr.Spans[i]
		h := hop{app: app(s), kind: s.tag("span.kind")}
		if p := tr.span(s.parent()); p != nil {
			h.parentApp = app(p)
			out = append(out, h)
		} else {
			out = append([]hop{h}, out...)
		}
	}
	return out
}

// getTrace asks Jaeger at addr for one trace.
func getTrace(ctx context.Context, addr, traceID string) (jaegerTrace, error) {
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := jaegerGet(ctx, "http://"+addr+"/api/traces/"+traceID, &body); err != nil {
		return jaegerTrace{}, err
	}
	if len(body.Data) != 1 {
		return jaegerTrace{}, fmt.Errorf("trace %s: %d traces in the answer", traceID, len(body.Data))
	}
	return body.Data[0], nil
}

// findTraces asks Jaeger at addr for the traces with spans of service
// since start.
func findTraces(ctx context.Context, addr, service string, start time.Time) ([]jaegerTrace, error) {
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	u := fmt.Sprintf("http://%s/api/traces?service=%s&start=%d&limit=100", addr, service, start.Add(-time.Second).UnixMicro())
	err := jaegerGet(ctx, u, &body)
	return body.Data, err
}

func jaegerGet(ctx context.Context, url string, into any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, b)
	}
	return json.Unmarshal(b, into)
}

// sendTraced sends method path to addr from c's pod with traceparent, if
// not "".
func sendTraced(ctx context.Context, c *podClient, method, addr, path, traceparent string) answer {
	h := http.Header{}
	if traceparent != "" {
		h.Set("traceparent", traceparent)
	}
	return c.do(ctx, method, addr, "", path, h)
}

// traceHex is n random bytes in lower-case hex: a trace or span ID.
func traceHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// dropDeployment removes the Deployment named name from a multi-document
// manifest.
func dropDeployment(t *testing.T, manifest, name string) string {
	t.Helper()
	docs := regexp.MustCompile(`(?m)^---\n`).Split(manifest, -1)
	var kept []string
	dropped := false
	for _, d := range docs {
		if strings.Contains(d, "kind: Deployment\n") && strings.Contains(d, "\n  name: "+name+"\n") {
			dropped = true
			continue
		}
		kept = append(kept, d)
	}
	if !dropped {
		t.Fatalf("no Deployment %s in the manifest", name)
	}
	return strings.Join(kept, "---\n")
}
