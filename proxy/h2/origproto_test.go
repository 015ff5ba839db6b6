package h2

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mesh-dev/mesh/proxy/httpproxy"
	"github.com/mesh-dev/mesh/proxy/metrics"
)

// TestOrigProtoGoesOnAsHTTP1: a request an older client proxy carried
// from HTTP/1.1 over HTTP/2 (marked Mesh-Orig-Proto, from a proven peer)
// reaches an application that speaks only HTTP/1.1 as HTTP/1.1, the mark
// removed. (Without a proven peer the mark is dropped and the request stays
// HTTP/2: TestForwardsRequestsBothWays.)
func TestOrigProtoGoesOnAsHTTP1(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Mark", r.Header.Get(httpproxy.OrigProtoHeader))
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), body)
	}))
	t.Cleanup(app.Close)
	target := app.Listener.Addr().String()
	p := startTestProxy(t, target, func(c *Config, info *httpproxy.ConnInfo) {
		c.Direction = metrics.Inbound
		info.ClientID = "spiffe://cluster.local/ns/shop/sa/web"
	})
	req, _ := http.NewRequest("POST", "http://"+p.addr+"/orders?id=7", bytes.NewReader(bytes.Repeat([]byte("b"), 300<<10)))
	req.Header.Set(httpproxy.OrigProtoHeader, "HTTP/1.1")
	res, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if want := "POST /orders?id=7 " + string(bytes.Repeat([]byte("b"), 300<<10)); string(body) != want {
		t.Errorf("body: %d bytes, want %d", len(body), len(want))
	}
	if res.Header.Get("X-Proto") != "HTTP/1.1" || res.Header.Get("X-Mark") != "" {
		t.Errorf("the application saw %q with mark %q; want HTTP/1.1 and no mark", res.Header.Get("X-Proto"), res.Header.Get("X-Mark"))
	}
}
