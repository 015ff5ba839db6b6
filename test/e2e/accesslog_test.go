package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/mesh-dev/mesh/internal/names"
)

const accessLogNS = "e2e-accesslog"

// TestAccessLog is issue 15's test 2: config.mesh.dev/access-log on a
// namespace (json) and on a pod (apache, which wins over its namespace's)
// makes each proxy write a line per HTTP request and per opaque TCP
// connection to its stderr, with the identities both ends proved. The
// client's requests carry a marker of this run in their path, so that a
// line is known to be theirs.
func TestAccessLog(t *testing.T) {
	needEnv(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ensureInstalled(t, ctx)
	applyHardening(t, ctx, "accesslog.yaml", accessLogNS)
	waitDeployments(t, ctx, accessLogNS, 3*time.Minute)
	server := meshedPod(t, ctx, accessLogNS, "server", true)
	clientPod := meshedPod(t, ctx, accessLogNS, "client", true)
	client := newPodClient(t, ctx, accessLogNS, "client")
	defer func() {
		if t.Failed() {
			dumpProxy(t, server)
			dumpProxy(t, clientPod)
		}
	}()

	marker := fmt.Sprintf("/access-log-%d", time.Now().UnixNano())
	httpAddr := serviceAddr(t, ctx, accessLogNS, "server")
	if a := client.get(ctx, httpAddr, "server:8080", marker); !a.fromApp() {
		t.Fatalf("GET %s from the client: %s; want the echo's 200", marker, a)
	}
	host, _, _ := net.SplitHostPort(httpAddr)
	payAddr := net.JoinHostPort(host, "7070")
	if line, _, err := client.pay(ctx, payAddr, "access-log"); err != nil {
		t.Fatalf("payment through %s: %v", payAddr, err)
	} else {
		t.Logf("payment answer: %q", strings.TrimSpace(line))
	}

	clientID := "/ns/" + accessLogNS + "/sa/default" // both pods run as the namespace's default ServiceAccount
	var httpLine, tcpLine map[string]any
	poll(t, ctx, time.Minute, "the server proxy's json access log lines", func(ctx context.Context) (bool, string, error) {
		httpLine, tcpLine = nil, nil
		for _, l := range proxyLogLines(ctx, server) {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil {
				continue // the proxy's own log, or a line not json
			}
			switch m["kind"] {
			case "http":
				if p, _ := m["path"].(string); p == marker {
					httpLine = m
				}
			case "tcp":
				if m["direction"] == "inbound" && strings.HasSuffix(fmt.Sprint(m["destination"]), ":7070") {
					tcpLine = m
				}
			}
		}
		return httpLine != nil && tcpLine != nil, fmt.Sprintf("http line %v, tcp line %v", httpLine != nil, tcpLine != nil), nil
	})
	for _, c := range []struct{ field, want string }{
		{"direction", "inbound"}, {"method", "GET"}, {"status", "200"},
	} {
		if got := fmt.Sprint(httpLine[c.field]); got != c.want {
			t.Errorf("server's http line: %s = %q, want %q (%v)", c.field, got, c.want, httpLine)
		}
	}
	if id := fmt.Sprint(httpLine["client_identity"]); !strings.HasPrefix(id, "spiffe://") || !strings.HasSuffix(id, clientID) {
		t.Errorf("server's http line: client_identity %q, want the client's SPIFFE ID (…%s): %v", id, clientID, httpLine)
	}
	if id := fmt.Sprint(tcpLine["client_identity"]); !strings.HasSuffix(id, clientID) {
		t.Errorf("server's tcp line: client_identity %q, want …%s: %v", id, clientID, tcpLine)
	}
	for _, f := range []string{"bytes_from_client", "bytes_to_client"} {
		if n, _ := tcpLine[f].(float64); n <= 0 {
			t.Errorf("server's tcp line: %s = %v, want the payment's bytes: %v", f, tcpLine[f], tcpLine)
		}
	}

	// The client's own annotation says apache: key="value" pairs after
	// the combined format's fields, and no json line.
	httpRE := regexp.MustCompile(`"GET ` + regexp.QuoteMeta(marker) + ` HTTP/1\.1" 200 .* direction=outbound .*server_identity="spiffe://[^"]*` + regexp.QuoteMeta(clientID) + `"`)
	tcpRE := regexp.MustCompile(`"TCP [^"]*:7070" - [1-9][0-9]* direction=outbound .*server_identity="spiffe://[^"]*` + regexp.QuoteMeta(clientID) + `"`)
	poll(t, ctx, time.Minute, "the client proxy's apache access log lines", func(ctx context.Context) (bool, string, error) {
		var h, c bool
		for _, l := range proxyLogLines(ctx, clientPod) {
			h = h || httpRE.MatchString(l)
			c = c || tcpRE.MatchString(l)
			if strings.HasPrefix(l, "{") && strings.Contains(l, `"kind":"http"`) {
				return false, "", fmt.Errorf("a json access line in the client's log, whose pod says apache: %s", l)
			}
		}
		return h && c, fmt.Sprintf("http line %v, tcp line %v", h, c), nil
	})
}

// proxyLogLines is the proxy container's log of pod, by line.
func proxyLogLines(ctx context.Context, pod *corev1.Pod) []string {
	r := command(ctx, nil, nil, e2e.kubectl, "logs", "-n", pod.Namespace, pod.Name, "-c", names.ProxyContainerName)
	return strings.Split(r.stdout, "\n")
}
