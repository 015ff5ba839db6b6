package viz

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tapv1 "github.com/mesh-dev/mesh/api/tap/v1"
	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
	"github.com/mesh-dev/mesh/identity/identitytest"
)

// tapServer is a proxy's tap server as api/tap/v1 describes it: mutual
// TLS as the pod's identity, admitting only viz's, streaming
// one request and its response, then holding the stream open.
type tapServer struct {
	tapv1.UnimplementedTapServer

	mu      sync.Mutex
	clients []spiffeid.ID         // who watched, proven over TLS
	reqs    []*tapv1.WatchRequest // what they asked
	ended   chan struct{}         // closed when a watch ends
	once    sync.Once
}

func (s *tapServer) Watch(req *tapv1.WatchRequest, stream grpc.ServerStreamingServer[tapv1.Event]) error {
	defer s.once.Do(func() { close(s.ended) })
	p, _ := peer.FromContext(stream.Context())
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.clients = append(s.clients, id)
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	now := time.Now()
	event := func(typ tapv1.Event_Type) *tapv1.Event {
		return &tapv1.Event{
			Id: 7, Type: typ, Timestamp: timestamppb.New(now), Direction: "inbound",
			SrcAddr: "10.0.0.9:41000", DstAddr: "10.0.0.1:8080", ClientId: "spiffe://cluster.local/ns/shop/sa/client",
			Method: "GET", Scheme: "http", Authority: "web.shop:80", Path: "/books",
			TraceId: "4bf92f3577b34da6a3ce929d0e0e4736",
		}
	}
	resp := event(tapv1.Event_RESPONSE)
	resp.HttpStatus, resp.Success = 200, true
	resp.Timestamp = timestamppb.New(now.Add(12 * time.Millisecond))
	resp.Latency = durationpb.New(12500 * time.Microsecond)
	grpcStatus := uint32(0)
	resp.GrpcStatus = &grpcStatus
	for _, ev := range []*tapv1.Event{event(tapv1.Event_REQUEST), resp} {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	<-stream.Context().Done()
	return nil
}

// serveTap runs a tap server presenting an SVID for id that admits only
// client, and routes pod ip:4190 to it.
func serveTap(t *testing.T, c *cluster, ca *identitytest.CA, ip string, id, client spiffeid.ID) *tapServer {
	t.Helper()
	svid := ca.IssueSVID(t, id)
	tlsCfg := tlsconfig.MTLSServerConfig(svid, ca.Bundle(), tlsconfig.AuthorizeID(client))
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	ts := &tapServer{ended: make(chan struct{})}
	tapv1.RegisterTapServer(srv, ts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	c.route(net.JoinHostPort(ip, strconv.Itoa(DefaultTapPort)), ln.Addr().String())
	return ts
}

// startTap starts viz on c's objects as start does, and returns the
// URL of a real HTTP server of its TapHandler, as the tap API calls it
// once it has authorized the caller.
func (c *cluster) startTap(t testing.TB, mod func(*Config)) string {
	t.Helper()
	v, _ := c.start(t, mod)
	srv := httptest.NewServer(v.TapHandler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// clientTLS is TapTLS as viz's own certificate makes it: svid presented,
// the server checked against the bundle as exactly the pod's identity.
func clientTLS(svid x509svid.Source, bundle x509bundle.Source) func(spiffeid.ID) *tls.Config {
	return func(server spiffeid.ID) *tls.Config {
		return tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(server))
	}
}

// TestTap relays the tap of a deployment with two pods: one whose tap
// server is the pod's identity streams its events; one that presents
// another identity is refused in the handshake, which the relay reports
// as an error event naming the pod, and goes on.
func TestTap(t *testing.T) {
	ca := identitytest.NewCA(t)
	vizID := ca.ID("mesh-system", "mesh-viz")

	s := newShop(t)
	good := serveTap(t, s.cluster, ca, "10.0.0.1", ca.ID("shop", "web"), vizID)
	impostor := serveTap(t, s.cluster, ca, "10.0.0.2", ca.ID("shop", "backend"), vizID)
	base := s.startTap(t, func(c *Config) { c.TapTLS = clientTLS(ca.IssueSVID(t, vizID), ca.Bundle()) })

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// Any path: the tap API decides where tap lives, and passes the query.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
		base+"/apis/tap.mesh.dev/v1alpha1/watch/namespaces/shop/deployments/web/tap?"+
			values("namespace", "shop", "resource", "deploy/web", "method", "GET", "path", "/books", "max_rps", "5").Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("tap: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	byType := map[string][]vizv1.TapEvent{}
	lines := bufio.NewScanner(resp.Body)
	for n := 0; n < 3 && lines.Scan(); n++ {
		var ev vizv1.TapEvent
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", lines.Text(), err)
		}
		byType[ev.Type] = append(byType[ev.Type], ev)
	}
	if len(byType["request"]) != 1 || len(byType["response"]) != 1 || len(byType["error"]) != 1 {
		t.Fatalf("events %+v: want a request, a response and an error", byType)
	}
	got := byType["response"][0]
	if got.Pod != "web-5d8f7c-a" || got.Namespace != "shop" || got.ID != "web-5d8f7c-a:7" || got.ID != byType["request"][0].ID ||
		got.Status != 200 || got.LatencyMs == nil || *got.LatencyMs != 12.5 || got.GRPCStatus == nil || *got.GRPCStatus != 0 ||
		got.Success == nil || !*got.Success || got.Path != "/books" || got.ClientID != "spiffe://cluster.local/ns/shop/sa/client" {
		t.Errorf("response event %+v", got)
	}
	for _, ev := range []vizv1.TapEvent{byType["request"][0], got} {
		if ev.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("%s event's trace ID %q, want the proxy's", ev.Type, ev.TraceID)
		}
	}
	if e := byType["error"][0].Error; !strings.Contains(e, "pod shop/web-5d8f7c-b") {
		t.Errorf("error event %q does not name the pod", e)
	}

	good.mu.Lock()
	if len(good.clients) != 1 || good.clients[0] != vizID {
		t.Errorf("tap server saw clients %v, want viz %s", good.clients, vizID)
	}
	if r := good.reqs[0]; r.GetMethod() != "GET" || r.GetPathPrefix() != "/books" || r.GetMaxRps() != 5 {
		t.Errorf("tap server got filters %v", r)
	}
	good.mu.Unlock()
	impostor.mu.Lock()
	if len(impostor.clients) != 0 {
		t.Errorf("the relay talked to a server that is not the pod's identity")
	}
	impostor.mu.Unlock()

	// The client goes away: the relay ends the proxy's stream.
	cancel()
	select {
	case <-good.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy's tap stream is still open after the client left")
	}
}

// TestTapErrors covers the answers before a stream starts.
func TestTapErrors(t *testing.T) {
	s := newShop(t)
	noTLS := s.startTap(t, nil)
	var e vizv1.Error
	if code := getJSON(t, noTLS, vizv1.PathTap, values("namespace", "shop", "resource", "deploy/web"), &e); code != http.StatusServiceUnavailable {
		t.Errorf("tap without an identity: %d %q, want 503", code, e.Error)
	}
	base := s.startTap(t, func(c *Config) {
		c.TapTLS = func(spiffeid.ID) *tls.Config { return &tls.Config{} }
	})
	tests := []struct {
		name     string
		q        url.Values
		wantCode int
		wantMsg  string
	}{
		{name: "missing deployment", q: values("namespace", "shop", "resource", "deploy/nope"), wantCode: http.StatusNotFound, wantMsg: "deployment/nope not found in namespace shop"},
		{name: "unmeshed deployment", q: values("namespace", "shop", "resource", "deploy/legacy"), wantCode: http.StatusNotFound, wantMsg: "no running meshed pod"},
		{name: "missing namespace", q: values("namespace", "shop", "resource", "ns/nope"), wantCode: http.StatusNotFound, wantMsg: "namespace/nope not found"},
		{name: "no resource", q: values("namespace", "shop"), wantCode: http.StatusBadRequest, wantMsg: "resource is required"},
		{name: "a service", q: values("namespace", "shop", "resource", "svc/web"), wantCode: http.StatusBadRequest, wantMsg: "tap takes a deploy, pod or ns"},
		{name: "max_rps 0", q: values("namespace", "shop", "resource", "deploy/web", "max_rps", "0"), wantCode: http.StatusBadRequest, wantMsg: "max_rps"},
		{name: "unknown parameter", q: values("namespace", "shop", "resource", "deploy/web", "kind", "deploy"), wantCode: http.StatusBadRequest, wantMsg: `unknown parameter "kind"`},
		{name: "method in lower case", q: values("namespace", "shop", "resource", "deploy/web", "method", "get"), wantCode: http.StatusBadRequest, wantMsg: "in capitals"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got vizv1.Error
			code := getJSON(t, base, vizv1.PathTap, tc.q, &got)
			if code != tc.wantCode || !strings.Contains(got.Error, tc.wantMsg) {
				t.Errorf("tap %s: %d %q, want %d with %q", tc.q.Encode(), code, got.Error, tc.wantCode, tc.wantMsg)
			}
		})
	}

	resp, err := http.Post(base+vizv1.PathTap, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST to tap: %d, want 405", resp.StatusCode)
	}
}

// TestTapEventIdentities: the tapped proxy's own identity fills the side
// of an mTLS hop it does not report; a plain-text hop keeps both empty.
func TestTapEventIdentities(t *testing.T) {
	const self, peer = "spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/loadgen"
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1"}}
	for _, tc := range []struct {
		name                   string
		ev                     *tapv1.Event
		wantClient, wantServer string
	}{
		{"inbound mTLS", &tapv1.Event{Type: tapv1.Event_REQUEST, Direction: "inbound", ClientId: peer}, peer, self},
		{"outbound mTLS", &tapv1.Event{Type: tapv1.Event_REQUEST, Direction: "outbound", ServerId: peer}, self, peer},
		{"inbound plain text", &tapv1.Event{Type: tapv1.Event_REQUEST, Direction: "inbound"}, "", ""},
		{"outbound plain text", &tapv1.Event{Type: tapv1.Event_REQUEST, Direction: "outbound"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tapEvent(pod, self, tc.ev)
			if !ok || got.ClientID != tc.wantClient || got.ServerID != tc.wantServer {
				t.Errorf("tapEvent = %q -> %q (%v), want %q -> %q", got.ClientID, got.ServerID, ok, tc.wantClient, tc.wantServer)
			}
		})
	}
}
