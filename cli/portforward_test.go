package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"

	"github.com/mesh-dev/mesh/internal/names"
)

// spdyOnlyAPI serves a pod's portforward subresource as an API server
// before Kubernetes 1.31, or one behind a proxy that does not pass
// WebSocket upgrades, does: a WebSocket upgrade is refused, and plain SPDY
// is served, to a real HTTP server that plays the pod's port.
type spdyOnlyAPI struct {
	url string
	// webSocketTried counts the WebSocket upgrades refused, spdyServed
	// the SPDY connections upgraded.
	webSocketTried, spdyServed atomic.Int32
}

func newSPDYOnlyAPI(t testing.TB, pod string) *spdyOnlyAPI {
	t.Helper()
	a := &spdyOnlyAPI{}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/namespaces/{ns}/pods/{name}/portforward", func(w http.ResponseWriter, r *http.Request) {
		a.portForward(w, r, pod)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		if a.spdyServed.Load() > 0 {
			waitSPDYClosed(t)
		}
	})
	a.url = srv.URL
	return a
}

func (a *spdyOnlyAPI) portForward(w http.ResponseWriter, r *http.Request, pod string) {
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		a.webSocketTried.Add(1)
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "stand-in: this API server upgrades to SPDY only")
		return
	}
	if _, err := httpstream.Handshake(r, w, []string{portforward.PortForwardProtocolV1Name}); err != nil {
		return // Handshake answered
	}
	var mu sync.Mutex
	errorStreams := map[string]httpstream.Stream{} // by requestID, guarded by mu
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, replySent <-chan struct{}) error {
		id := s.Headers().Get(corev1.PortForwardRequestIDHeader)
		mu.Lock()
		defer mu.Unlock()
		if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
			errorStreams[id] = s
			return nil
		}
		errStream := errorStreams[id]
		delete(errorStreams, id)
		go forwardStream(s, errStream, replySent, pod, s.Headers().Get(corev1.PortHeader))
		return nil
	})
	if conn == nil {
		return // UpgradeResponse answered
	}
	a.spdyServed.Add(1)
	<-conn.CloseChan()
}

// TestPortForwardFallsBackToSPDY: against an API server that refuses the
// WebSocket upgrade, the port-forward is made over SPDY, as kubectl makes
// it, and a request through it reaches the pod.
func TestPortForwardFallsBackToSPDY(t *testing.T) {
	pod := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "the pod's answer")
	}))
	t.Cleanup(pod.Close)
	api := newSPDYOnlyAPI(t, pod.Listener.Addr().String())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	f, err := portForward(ctx, &rest.Config{Host: api.url}, "shop", "web-0", names.AdminPort)
	if err != nil {
		t.Fatalf("portForward: %v (WebSocket upgrades refused: %d, SPDY connections: %d)", err, api.webSocketTried.Load(), api.spdyServed.Load())
	}
	defer f.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET through the port-forward: %v (last forwarding error: %v)", err, f.LastError())
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "the pod's answer" {
		t.Errorf("GET through the port-forward: %q, %v; want the pod's answer", body, err)
	}
	if n := api.webSocketTried.Load(); n != 1 {
		t.Errorf("WebSocket upgrades tried: %d, want 1 (WebSocket first, as kubectl)", n)
	}
	if n := api.spdyServed.Load(); n != 1 {
		t.Errorf("SPDY connections: %d, want 1", n)
	}
}
