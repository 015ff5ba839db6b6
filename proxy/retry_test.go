package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// refusingAddr returns a loopback address nothing listens on: a killed
// pod still in its Service's endpoints.
func refusingAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRefusingEndpointIsRetried: a Service with two endpoints, one of
// which refuses connections (its pod was killed), in plain text and over
// mesh TLS: every request succeeds, whatever its method and protocol, since
// one that could not connect is sent to the other endpoint; and the
// balancer takes the refusing one out of rotation.
func TestRefusingEndpointIsRetried(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		t.Run(meshMode(mtls), func(t *testing.T) {
			app := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				fmt.Fprintf(w, "%s %s", r.Method, body)
			}))
			dead := refusingAddr(t)
			service := "127.0.0.1:1" // never dialled: the proxy balances over the endpoints
			live, start := app, startDestination
			dest := &fakeDestination{identities: map[string]string{}}
			var opts []func(*Config)
			if mtls {
				pki := startPKI(t)
				server := startProxy(t, app, pki.withIdentity(t, "shop", "api"))
				waitReady(t, server)
				live, start = server.inbound, pki.startDestination
				api := pki.ca.ID("shop", "api").String()
				dest.identities[live], dest.identities[dead] = api, api
				opts = append(opts, pki.withIdentity(t, "shop", "web"))
			}
			dest.sets = map[string][]string{service: {live, dead}}
			controller := start(t, dest)
			client := startProxy(t, service, append(opts, func(c *Config) { c.DestinationAddr = controller })...)
			waitReady(t, client)
			_, out, admin := client.Addrs()

			for _, c := range []struct {
				name   string
				client *http.Client
			}{{"HTTP/1.1", h1Client(t)}, {"h2c", h2cClient(t)}} {
				var wg sync.WaitGroup
				for w := range 4 {
					wg.Go(func() {
						for i := range 25 {
							method, body := "GET", ""
							if i%2 == 1 {
								method, body = "POST", fmt.Sprintf("order %d-%d", w, i)
							}
							req, _ := http.NewRequest(method, "http://"+out.String()+"/", strings.NewReader(body))
							res, err := c.client.Do(req)
							if err != nil {
								t.Errorf("%s %s: %v", c.name, method, err)
								return
							}
							got, _ := io.ReadAll(res.Body)
							res.Body.Close()
							if want := method + " " + body; res.StatusCode != 200 || string(got) != want {
								t.Errorf("%s %s: %d %q, want 200 %q", c.name, method, res.StatusCode, got, want)
							}
						}
					})
				}
				wg.Wait()
			}
			// An ejection lasts a second or so, then a request probes the
			// endpoint again: on a slow machine the last one may have
			// ended with the loop. The next probe must eject it again.
			ejected := destinationEjected(t, admin.String(), dead)
			for i := 0; !ejected && i < 100; i++ {
				res, err := h1Client(t).Get("http://" + out.String() + "/")
				if err != nil || res.StatusCode != 200 {
					t.Fatalf("a request while probing the refusing endpoint: %v %v", res, err)
				}
				res.Body.Close()
				ejected = destinationEjected(t, admin.String(), dead)
			}
			if !ejected {
				t.Errorf("the refusing endpoint %s is not ejected", dead)
			}
		})
	}
}

// destinationEjected reads the proxy's /destinations and reports whether
// the endpoint at addr is out of rotation.
func destinationEjected(t testing.TB, admin, addr string) bool {
	t.Helper()
	res, err := http.Get("http://" + admin + "/destinations")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var dests []struct {
		Endpoints []struct {
			Addr    string
			Ejected bool
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&dests); err != nil {
		t.Fatal(err)
	}
	for _, d := range dests {
		for _, ep := range d.Endpoints {
			if ep.Addr == addr {
				return ep.Ejected
			}
		}
	}
	t.Fatalf("/destinations has no endpoint %s: %+v", addr, dests)
	return false
}
