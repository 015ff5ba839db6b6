package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identityv1 "github.com/mesh-dev/mesh/api/identity/v1"
	"github.com/mesh-dev/mesh/install/manifests"
	"github.com/mesh-dev/mesh/internal/names"
	"github.com/mesh-dev/mesh/testdata/demo/payments"
)

// The sweep: one HTTP request to each of sweepPorts closed ports of the
// meshed pod, sweepConcurrency at a time. The ports start above every
// port of the proxy and the demo app.
const (
	sweepFirstPort   = 10000
	sweepPorts       = 5000
	sweepConcurrency = 50
)

// sweepResult is what a port sweep got back.
type sweepResult struct {
	accepted int         // connections established
	statuses map[int]int // HTTP answers, by status
	noAnswer int         // established, then closed or reset before an answer
	firstErr error       // the first failed connection or answer
}

func (r sweepResult) String() string {
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(r.statuses)) {
		parts = append(parts, fmt.Sprintf("%d× %d", r.statuses[s], s))
	}
	return fmt.Sprintf("%d connections accepted; answers %s; %d without an answer (first error: %v)",
		r.accepted, strings.Join(parts, ", "), r.noAnswer, r.firstErr)
}

// sweep connects from dial's network namespace to n ports of ip from
// first on, sends one HTTP request on each and reads the answer.
func sweep(ctx context.Context, dial dialFunc, ip string, first, n int) sweepResult {
	r := sweepResult{statuses: map[int]int{}}
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(sweepConcurrency)
	for port := first; port < first+n; port++ {
		g.Go(func() error {
			accepted, code, err := probePort(ctx, dial, net.JoinHostPort(ip, fmt.Sprint(port)))
			mu.Lock()
			defer mu.Unlock()
			if accepted {
				r.accepted++
			}
			switch {
			case err != nil && r.firstErr == nil:
				r.firstErr = fmt.Errorf("port %d: %w", port, err)
				fallthrough
			case err != nil:
				if accepted {
					r.noAnswer++
				}
			default:
				r.statuses[code]++
			}
			return nil
		})
	}
	g.Wait()
	return r
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// probePort sends GET / to addr on a connection of its own and returns
// whether the connection was established and the answer's status.
func probePort(ctx context.Context, dial dialFunc, addr string) (accepted bool, code int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return false, 0, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: sweep\r\nConnection: close\r\n\r\n"); err != nil {
		return true, 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return true, 0, err
	}
	resp.Body.Close()
	return true, resp.StatusCode, nil
}

// The churn: churnCount addresses pass through the headless Service
// churn, churnRound at a time, and the meshed client calls each while it
// is an endpoint.
const (
	churnCount       = 2000
	churnRound       = 100
	churnConcurrency = 10
)

// churnPrefix holds the churned addresses. The node's pod CIDR
// (10.244.0.0/24) has 253 addresses, too few, and its IPAM hands them out;
// this range sits next to it, where another node's pods would be, inside
// the proxies' cluster networks (10.0.0.0/8), and nothing in the cluster
// uses or routes it. Only two pods of the test reach it: the target holds
// the addresses on its interface, and the client routes the range through
// the target's pod IP. (An on-link route would need an ARP entry per
// address, past the kernel's neighbour table limit, gc_thresh3 = 1024,
// shared by every network namespace: a quarter of the dials timed out.)
var churnPrefix = netip.MustParsePrefix("10.244.248.0/21")

// churnAddrs returns the first n host addresses of churnPrefix.
func churnAddrs(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for a := churnPrefix.Addr().Next(); len(out) < n && churnPrefix.Contains(a); a = a.Next() {
		out = append(out, a)
	}
	return out
}

// holdChurnAddrs puts addrs on the target's eth0 and routes churnPrefix
// from the client through the target, both inside the pods' network
// namespaces; both are undone when the test ends.
func holdChurnAddrs(t *testing.T, ctx context.Context, target, client *podClient, addrs []netip.Addr) {
	t.Helper()
	batch := func(verb string) string {
		var b strings.Builder
		for _, a := range addrs {
			fmt.Fprintf(&b, "address %s %s/32 dev eth0\n", verb, a)
		}
		return b.String()
	}
	targetNetns, clientNetns := podNetns(t, target.pod), podNetns(t, client.pod)
	route := []string{"route", "add", churnPrefix.String(), "via", target.pod.Status.PodIP, "dev", "eth0"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := inNetns(ctx, targetNetns, batch("del"), "ip", "-force", "-batch", "-"); err != nil {
			t.Logf("cleanup: remove the churned addresses from the target (its pod may be gone already): %v", err)
		}
		route[1] = "del"
		if err := inNetns(ctx, clientNetns, "", append([]string{"ip"}, route...)...); err != nil {
			t.Logf("cleanup: remove the client's route to %s (its pod may be gone already): %v", churnPrefix, err)
		}
	})
	if err := inNetns(ctx, targetNetns, batch("add"), "ip", "-batch", "-"); err != nil {
		t.Fatalf("add %d addresses to the target's eth0: %v", len(addrs), err)
	}
	if err := inNetns(ctx, clientNetns, "", append([]string{"ip"}, route...)...); err != nil {
		t.Fatalf("route %s through the target in the client: %v", churnPrefix, err)
	}
}

// churnResult is what the client got from the churned addresses.
type churnResult struct {
	requests, answered int
	failures           []string // the first few
	err                error    // writing the EndpointSlice
}

// churn writes addrs into the EndpointSlice of Service churn, churnRound
// at a time, each round replacing the last, and has c send one request to
// each address of the round, as a client resolving the headless Service
// would.
func churn(ctx context.Context, c *podClient, ns string, addrs []netip.Addr) churnResult {
	var (
		r     churnResult
		mu    sync.Mutex
		slice *discoveryv1.EndpointSlice
		err   error
	)
	api := e2e.client.DiscoveryV1().EndpointSlices(ns)
	for i := 0; i < len(addrs); i += churnRound {
		round := addrs[i:min(i+churnRound, len(addrs))]
		if slice == nil {
			slice, err = api.Create(ctx, churnSlice(ns, round), metav1.CreateOptions{})
		} else {
			slice.Endpoints = churnSlice(ns, round).Endpoints
			slice, err = api.Update(ctx, slice, metav1.UpdateOptions{})
		}
		if err != nil {
			r.err = fmt.Errorf("write EndpointSlice churn (round %d): %w", i/churnRound, err)
			return r
		}
		var g errgroup.Group
		g.SetLimit(churnConcurrency)
		for _, a := range round {
			g.Go(func() error {
				ans := c.get(ctx, netip.AddrPortFrom(a, 8080).String(), "churn."+ns+".svc.cluster.local:8080", "/")
				mu.Lock()
				defer mu.Unlock()
				r.requests++
				if ans.fromApp() {
					r.answered++
				} else if len(r.failures) < 5 {
					r.failures = append(r.failures, fmt.Sprintf("%s: %s", a, ans))
				}
				return nil
			})
		}
		g.Wait()
	}
	return r
}

// churnSlice is the EndpointSlice of the selectorless Service churn with
// addrs as its ready endpoints.
func churnSlice(ns string, addrs []netip.Addr) *discoveryv1.EndpointSlice {
	name, port, proto, ready := "http", int32(8080), corev1.ProtocolTCP, true
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "churn", Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: "churn",
			discoveryv1.LabelManagedBy:   "e2e.mesh.dev",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{a.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return s
}

// The flood: floodRate junk Certify requests a second for at least
// floodFor, at most floodInFlight waiting for an answer.
const (
	floodRate    = 200
	floodFor     = 60 * time.Second
	floodTimeout = 10 * time.Second
	// floodInFlight is what the pace needs if no request is answered
	// before its timeout, so a stalled server does not slow the flood.
	floodInFlight = floodRate * int(floodTimeout/time.Second) * 5 / 4
	freshPods     = 10
)

// floodResult counts the answers to a Certify flood.
type floodResult struct {
	sent     int
	skipped  int // due while floodInFlight requests were waiting
	elapsed  time.Duration
	codes    map[codes.Code]int
	messages map[codes.Code]string // one message per code
	// first and last answer of each code, since the flood began
	first, last map[codes.Code]time.Duration
}

func (r floodResult) String() string {
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(r.codes)) {
		parts = append(parts, fmt.Sprintf("%d %s from %s to %s (%q)", r.codes[c], c,
			r.first[c].Round(time.Second), r.last[c].Round(time.Second), r.messages[c]))
	}
	return fmt.Sprintf("%d Certify requests with junk tokens in %s, %d not sent (all %d in flight): %s",
		r.sent, r.elapsed.Round(time.Second), r.skipped, floodInFlight, strings.Join(parts, "; "))
}

// certifyFlood sends Certify requests for id with csrDER and a random
// token each, paced at floodRate a second, for floodFor and then until
// until is closed, so that every new pod starts under the flood.
func certifyFlood(ctx context.Context, ids identityv1.IdentityClient, id spiffeid.ID, csrDER []byte, until <-chan struct{}) floodResult {
	r := floodResult{codes: map[codes.Code]int{}, messages: map[codes.Code]string{},
		first: map[codes.Code]time.Duration{}, last: map[codes.Code]time.Duration{}}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		inFlight = make(chan struct{}, floodInFlight)
		start    = time.Now()
	)
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * time.Second / floodRate)
		if time.Since(start) >= floodFor && isClosed(until) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Until(due))
		select {
		case inFlight <- struct{}{}:
		default:
			r.skipped++
			continue
		}
		r.sent++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inFlight }()
			rctx, cancel := context.WithTimeout(ctx, floodTimeout)
			defer cancel()
			_, err := ids.Certify(rctx, &identityv1.CertifyRequest{
				Identity: id.String(), Token: junkToken(), CertificateSigningRequest: csrDER})
			st, at := status.Convert(err), time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			c := st.Code()
			r.codes[c]++
			if _, ok := r.messages[c]; !ok {
				r.messages[c], r.first[c] = st.Message(), at
			}
			r.last[c] = at
		}()
	}
	r.elapsed = time.Since(start)
	wg.Wait()
	return r
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// junkToken looks like a projected ServiceAccount token (three base64url
// parts, about 1 KiB) but is random, so each costs the identity service a
// fresh look: no two are alike, and none was denied before.
func junkToken() []byte {
	part := func(n int) string {
		b := make([]byte, n)
		rand.Read(b)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return []byte(part(36) + "." + part(600) + "." + part(256))
}

// dialIdentityFrom connects to the identity service's first endpoint with
// dial, as a proxy does: TLS checked against the trust anchors mesh install
// published and the controller's SPIFFE ID.
func dialIdentityFrom(t *testing.T, ctx context.Context, dial dialFunc) *grpc.ClientConn {
	t.Helper()
	cm, err := e2e.client.CoreV1().ConfigMaps(manifests.DefaultNamespace).Get(ctx, manifests.TrustRootsConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	roots, err := x509bundle.Parse(td, []byte(cm.Data[manifests.TrustRootsKey]))
	if err != nil {
		t.Fatalf("trust anchors of ConfigMap %s: %v", manifests.TrustRootsConfigMapName, err)
	}
	controller := spiffeid.RequireFromSegments(td, "ns", manifests.DefaultNamespace, "sa", names.ControllerServiceAccount)
	addr := identityEndpoint(t, ctx)
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(roots, tlsconfig.AuthorizeID(controller)))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// identityEndpoint is the address of a ready endpoint of the headless
// Service mesh-identity, as the proxies resolve it.
func identityEndpoint(t *testing.T, ctx context.Context) string {
	t.Helper()
	list, err := e2e.client.DiscoveryV1().EndpointSlices(manifests.DefaultNamespace).List(ctx,
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=mesh-identity"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		port := int32(8080)
		if len(s.Ports) > 0 && s.Ports[0].Port != nil {
			port = *s.Ports[0].Port
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && *ep.Conditions.Ready && len(ep.Addresses) > 0 {
				return net.JoinHostPort(ep.Addresses[0], fmt.Sprint(port))
			}
		}
	}
	t.Fatalf("Service %s/mesh-identity has no ready endpoint (%d EndpointSlices)", manifests.DefaultNamespace, len(list.Items))
	return ""
}

// The attack of test 6: idleConns silent connections to the HTTP port,
// held for attackFor, slowConns slowloris connections and opaqueConns
// idle ones to the opaque port; a connection still open after heldFor was
// not closed by the mesh.
const (
	idleConns   = 2000
	slowConns   = 50
	opaqueConns = 20
	slowGap     = 2 * time.Second
	heldFor     = 25 * time.Second
	attackFor   = 30 * time.Second
	// dialSlots bounds dials in flight: each holds an OS thread in the
	// pod's network namespace until it connects (cluster.DialInNetns).
	dialSlots = 64
)

// idleArmy holds connections that never send a byte, dialing a new one
// whenever the server side closes one.
type idleArmy struct {
	open, peak, closedByServer, dialFailed atomic.Int64
	lastErr                                atomic.Value // error of the last failed dial
	cancel                                 context.CancelFunc
	wg                                     sync.WaitGroup
}

func startIdle(ctx context.Context, dial dialFunc, addr string, n int) *idleArmy {
	ctx, cancel := context.WithCancel(ctx)
	a := &idleArmy{cancel: cancel}
	slots := make(chan struct{}, dialSlots)
	for range n {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for ctx.Err() == nil {
				a.hold(ctx, dial, addr, slots)
			}
		}()
	}
	return a
}

// hold dials one connection and waits until the server closes it or ctx
// ends.
func (a *idleArmy) hold(ctx context.Context, dial dialFunc, addr string, slots chan struct{}) {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := dial(dctx, "tcp", addr)
	cancel()
	<-slots
	if err != nil {
		a.dialFailed.Add(1)
		a.lastErr.Store(err)
		select {
		case <-time.After(500 * time.Millisecond): // the proxy may be down: do not spin
		case <-ctx.Done():
		}
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	n := a.open.Add(1)
	for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
	}
	// Returns once the server closes the connection or ctx ends (the
	// deadline above); ctx tells the two apart, the error does not matter.
	conn.Read(make([]byte, 1))
	a.open.Add(-1)
	if ctx.Err() == nil {
		a.closedByServer.Add(1)
	}
}

// stop closes every connection and returns the most open at once, how
// many the server side closed and how many dials failed.
func (a *idleArmy) stop() (peak, closedByServer, dialFailed int64) {
	a.cancel()
	a.wg.Wait()
	return a.peak.Load(), a.closedByServer.Load(), a.dialFailed.Load()
}

// heldConn is how one attacking connection ended.
type heldConn struct {
	err error // dialing, or the exchange before holding
	// lasted is from when holding began (slowloris: the connection
	// opened; opaque: the payment was answered) to the close; heldFor if
	// still open.
	lasted time.Duration
	open   bool   // still open after heldFor
	got    string // the first line the server sent, if any
}

// slowloris opens slowConns connections to addr, each sending an HTTP/1
// request line at once, so the proxy detects HTTP/1, then one header byte
// every slowGap, never ending the headers, until the server side closes it
// or heldFor passes.
func slowloris(ctx context.Context, dial dialFunc, addr string) []heldConn {
	return holdAll(ctx, slowConns, func(ctx context.Context) heldConn {
		conn, err := dial(ctx, "tcp", addr)
		if err != nil {
			return heldConn{err: err}
		}
		defer conn.Close()
		start := time.Now()
		closed := make(chan heldConn, 1)
		go func() { closed <- waitClose(conn, start) }()
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: slowloris\r\n"); err != nil {
			return heldConn{err: err}
		}
		trickle := strings.Repeat("X-Slowloris: never-ending\r\n", 10)
		for i := 0; ; i++ {
			select {
			case h := <-closed:
				return h
			case <-time.After(slowGap):
			}
			if time.Since(start) > heldFor {
				return heldConn{open: true, lasted: heldFor}
			}
			conn.Write([]byte{trickle[i%len(trickle)]}) // a write error shows as a close
		}
	})
}

// idleOpaque opens opaqueConns connections to the payments port at addr,
// pays once on each, so the stream has reached the application, then
// sends nothing until the server side closes it or heldFor passes.
func idleOpaque(ctx context.Context, dial dialFunc, addr string) []heldConn {
	return holdAll(ctx, opaqueConns, func(ctx context.Context) heldConn {
		conn, err := dial(ctx, "tcp", addr)
		if err != nil {
			return heldConn{err: err}
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, payments.Request{OrderID: "idle", Cents: 100}.Format())
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "OK ") {
			return heldConn{err: fmt.Errorf("payment before idling: answer %q, %v", line, err)}
		}
		conn.SetReadDeadline(time.Time{})
		start := time.Now()
		closed := make(chan heldConn, 1)
		go func() { closed <- waitClose(conn, start) }()
		select {
		case h := <-closed:
			return h
		case <-time.After(heldFor):
			return heldConn{open: true, lasted: heldFor}
		}
	})
}

// waitClose reads conn until the server side closes it, and returns how
// long after start that was and the first line read.
func waitClose(conn net.Conn, start time.Time) heldConn {
	var got []byte
	buf := make([]byte, 512)
	for {
		n, err := conn.Read(buf)
		if len(got) < 256 {
			got = append(got, buf[:n]...)
		}
		if err != nil {
			first, _, _ := strings.Cut(string(got), "\n")
			return heldConn{lasted: time.Since(start), got: strings.TrimSpace(first)}
		}
	}
}

// holdAll runs n connections of one kind at once and returns how each
// ended.
func holdAll(ctx context.Context, n int, one func(context.Context) heldConn) []heldConn {
	out := make([]heldConn, n)
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() { out[i] = one(ctx) })
	}
	wg.Wait()
	return out
}

// checkHeld fails t unless every connection of one kind was established
// and then closed by the server side within heldFor. answered says whether
// the proxy must have forwarded them to the application first.
func checkHeld(t *testing.T, what string, conns []heldConn, answered bool) {
	t.Helper()
	var open, failed int
	var shortest, longest time.Duration
	var sample string
	for _, c := range conns {
		switch {
		case c.err != nil:
			failed++
			t.Logf("%s: %v", what, c.err)
		case c.open:
			open++
		default:
			if shortest == 0 || c.lasted < shortest {
				shortest = c.lasted
			}
			longest = max(longest, c.lasted)
			if c.got != "" {
				sample = c.got
			}
		}
	}
	t.Logf("%d × %s: %d closed by the server side %s to %s after holding began (a line the server sent: %q), %d still open after %s, %d failed before",
		len(conns), what, len(conns)-open-failed, shortest.Round(time.Millisecond), longest.Round(time.Millisecond), sample, open, heldFor, failed)
	if failed > 0 && answered {
		t.Errorf("%d of %d × %s did not reach the application before idling", failed, len(conns), what)
	} else if failed > 0 {
		t.Errorf("%d of %d × %s could not be opened", failed, len(conns), what)
	}
	if open > 0 {
		t.Errorf("%d of %d × %s still open after %s, want every one closed by the proxy", open, len(conns), what, heldFor)
	}
}
