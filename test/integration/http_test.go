package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// echoHandler answers with what it received, so a test can see that the
// request arrived as the client sent it.
func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s host=%s x-test=%s body=%q\n",
			r.Proto, r.Method, r.URL.RequestURI(), r.Host, r.Header.Get("X-Test"), body)
	})
}

func TestCurl(t *testing.T) {
	netnstestRequire(t, "curl")
	_, client, server := newLab(t)
	port := serveHTTP(t, server, echoHandler())
	url := fmt.Sprintf("http://%s:%d/path?q=1", server.IP, port)
	tests := []struct {
		name      string
		args      []string
		wantProto string
	}{
		{name: "HTTP/1.1", args: []string{"--http1.1"}, wantProto: "HTTP/1.1"},
		{name: "h2c prior knowledge", args: []string{"--http2-prior-knowledge"}, wantProto: "HTTP/2.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := watch(t, client, server)
			// One request per curl: curl 7.88 (Debian 12) cannot reuse an
			// h2c prior-knowledge connection even without a proxy ("Error
			// in the HTTP2 framing layer"); h2load and gRPC cover many
			// streams on one connection, TestCurlKeepAlive reuse on HTTP/1.1.
			get := append([]string{"-sS", "--fail-with-body", "-H", "X-Test: yes"}, tc.args...)
			out := client.Run(t, "curl", append(get, url)...)
			post := append([]string{"-sS", "--fail-with-body", "-d", "hello"}, tc.args...)
			out += client.Run(t, "curl", append(post, url)...)
			want := []string{
				fmt.Sprintf("%s GET /path?q=1 host=%s:%d x-test=yes body=\"\"", tc.wantProto, server.IP, port),
				fmt.Sprintf("%s POST /path?q=1 host=%s:%d x-test= body=\"hello\"", tc.wantProto, server.IP, port),
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Errorf("curl output lacks %q:\n%s", w, out)
				}
			}
			c.requests(t, 2)
			c.detected(t, map[string]string{"HTTP/1.1": "http/1", "HTTP/2.0": "h2"}[tc.wantProto], "", 1)
		})
	}
}

// TestCurlKeepAlive sends two requests on one HTTP/1.1 connection: the
// client proxy must keep the client's connection open between them.
func TestCurlKeepAlive(t *testing.T) {
	netnstestRequire(t, "curl")
	_, client, server := newLab(t)
	port := serveHTTP(t, server, echoHandler())
	url := fmt.Sprintf("http://%s:%d/", server.IP, port)
	c := watch(t, client, server)
	client.Run(t, "curl", "-sS", "--http1.1", "--fail-with-body", url, url)
	c.requests(t, 2)
	c.connections(t, 1)
	after := client.scrape(t)
	if got := after.Sum("mesh_proxy_tcp_open_total", "direction", "outbound") - c.before[0].Sum("mesh_proxy_tcp_open_total", "direction", "outbound"); got != 1 {
		t.Errorf("client proxy accepted %v connections for two keep-alive requests, want 1", got)
	}
}

// TestIPv6 sends HTTP over IPv6 through both proxies: `mesh-proxy init`
// installs the same rules with ip6tables, and the proxies recover the
// original IPv6 destination (SO_ORIGINAL_DST at SOL_IPV6).
func TestIPv6(t *testing.T) {
	netnstestRequire(t, "curl", "ip6tables")
	_, client, server := newLab(t)
	port := serveHTTP(t, server, echoHandler())
	c := watch(t, client, server)
	url := fmt.Sprintf("http://[%s]:%d/v6", server.IP6, port)
	out := client.Run(t, "curl", "-sS", "--fail-with-body", "-g", url)
	if want := fmt.Sprintf("HTTP/1.1 GET /v6 host=[%s]:%d", server.IP6, port); !strings.Contains(out, want) {
		t.Errorf("curl over IPv6 got %q, want it to contain %q", out, want)
	}
	c.requests(t, 1)
	after := client.scrape(t)
	if after.Sum("mesh_proxy_http_requests_total", "target_addr", fmt.Sprintf("[%s]:%d", server.IP6, port)) < 1 {
		t.Errorf("the client proxy did not count a request to the IPv6 target")
	}
}
