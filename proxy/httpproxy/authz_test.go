package httpproxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
	"github.com/mesh-dev/mesh/proxy/metrics/metricstest"
)

// denyPrefix refuses the requests whose path starts with "/deny".
type denyPrefix struct{}

func (denyPrefix) AuthorizeRequest(r *http.Request) error {
	if strings.HasPrefix(r.URL.Path, "/deny") {
		return errors.New("server \"api\" allows no traffic from café")
	}
	return nil
}

// TestUnauthorized: a request the connection's Authorizer denies never
// reaches the target; HTTP clients get 403 with the reason, gRPC clients a
// trailers-only PERMISSION_DENIED whose message is percent-encoded; both
// are counted like any response.
func TestUnauthorized(t *testing.T) {
	tg := newTarget(t)
	m := metrics.New()
	p := httpproxy.New(httpproxy.Config{Direction: metrics.Inbound, Metrics: m, Log: slog.New(&panicLog{})})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	ln := loopback(t)
	client, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	p.ServeHTTP1(server, httpproxy.ConnInfo{Target: tg.addr, Authz: denyPrefix{}})
	defer client.Close()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	raw := "GET /deny/x HTTP/1.1\r\nHost: api\r\n\r\n" +
		"POST /deny.Svc/M HTTP/1.1\r\nHost: api\r\nContent-Type: application/grpc+proto\r\nContent-Length: 0\r\n\r\n" +
		"GET /ok HTTP/1.1\r\nHost: api\r\n\r\n"
	io.WriteString(client, raw)
	reqs, _ := parseRequests([]byte(raw))
	var got bytes.Buffer
	br := bufio.NewReader(io.TeeReader(client, &got))
	type answer struct {
		Status                  int
		GRPCStatus, GRPCMessage string
		Error                   string
		Body                    string
	}
	var answers []answer
	for _, req := range reqs {
		res, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("after %q: %v", got.String(), err)
		}
		body, _ := io.ReadAll(res.Body)
		answers = append(answers, answer{res.StatusCode, res.Header.Get("Grpc-Status"), res.Header.Get("Grpc-Message"),
			res.Header.Get("Mesh-Proxy-Error"), strings.TrimSpace(string(body))})
	}
	want := []answer{
		{Status: 403, Error: "unauthorized", Body: `mesh-proxy: unauthorized: server "api" allows no traffic from café`},
		{Status: 200, GRPCStatus: "7", Error: "unauthorized", GRPCMessage: `mesh-proxy: unauthorized: server "api" allows no traffic from caf%C3%A9`},
		{Status: 200, Body: "ok"},
	}
	if diff := cmp.Diff(want, answers); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]seen{{"GET", "/ok", ""}}, tg.requests()); diff != "" {
		t.Errorf("the target got (-want +got):\n%s", diff)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	fams, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{labels: []string{"status_class", "4xx", "classification", "success"}, want: 1},
		{labels: []string{"status_class", "2xx", "classification", "failure"}, want: 1}, // grpc-status 7
		{labels: []string{"status_class", "2xx", "classification", "success"}, want: 1},
	} {
		if got := fams.Sum("mesh_proxy_http_responses_total", tc.labels...); got != tc.want {
			t.Errorf("responses %v = %v, want %v", tc.labels, got, tc.want)
		}
	}
}
