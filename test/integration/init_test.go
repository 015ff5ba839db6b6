package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mesh-dev/mesh/test/netnstest"
)

// natRules returns the pod's nat table as iptables-save prints it.
func natRules(t testing.TB, pod *netnstest.Pod) string {
	t.Helper()
	return pod.Run(t, "iptables-save", "-t", "nat")
}

// TestInit checks what `mesh-proxy init` leaves in a pod's nat table: one
// copy of everything however often it runs, nothing after --cleanup, and
// errors that say what to do.
func TestInit(t *testing.T) {
	lab := netnstest.New(t)
	netnstestRequire(t, "iptables", "iptables-save", "setpriv")
	pod := lab.Pod("init")

	t.Run("installs once however often it runs", func(t *testing.T) {
		pod.Run(t, bins.proxy, "init")
		pod.Run(t, bins.proxy, "init")
		rules := natRules(t, pod)
		for _, want := range []string{
			"-A PREROUTING -p tcp -j MESH_PROXY_INBOUND",
			"-A OUTPUT -p tcp -j MESH_PROXY_OUTPUT",
			"-A MESH_PROXY_INBOUND -p tcp -j REDIRECT --to-ports 4143",
			"-A MESH_PROXY_OUTPUT -m owner --uid-owner 2102 -j RETURN",
			"-A MESH_PROXY_OUTPUT -o lo -j RETURN",
			"-A MESH_PROXY_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
		} {
			if n := strings.Count(rules, want+"\n"); n != 1 {
				t.Errorf("rule %q appears %d times, want once:\n%s", want, n, rules)
			}
		}
		// Tap (4190) and admin (4191) are adjacent: one range.
		for _, port := range []string{"4143", "4140", "4190:4191"} {
			if !strings.Contains(rules, "--dport "+port+" -j RETURN") {
				t.Errorf("the proxy's own port %s is redirected:\n%s", port, rules)
			}
		}
	})

	t.Run("flags and environment override the defaults", func(t *testing.T) {
		cmd := pod.Command(context.Background(), bins.proxy, "init", "--skip-inbound-ports=22,9000-9010",
			"--skip-outbound-subnets=192.0.2.0/24")
		cmd.Env = append(cmd.Environ(), "MESH_PROXY_PROXY_UID=3000")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("init: %v\n%s", err, out)
		}
		rules := natRules(t, pod)
		for _, want := range []string{
			"--dport 22 -j RETURN", "--dport 9000:9010 -j RETURN",
			"-d 192.0.2.0/24 -j RETURN", "--uid-owner 3000 -j RETURN",
		} {
			if !strings.Contains(rules, want) {
				t.Errorf("rules lack %q:\n%s", want, rules)
			}
		}
		if strings.Contains(rules, "--uid-owner 2102") {
			t.Errorf("re-running init with another UID left the old rule:\n%s", rules)
		}
	})

	t.Run("cleanup removes everything, twice", func(t *testing.T) {
		pod.Run(t, bins.proxy, "init", "--cleanup")
		pod.Run(t, bins.proxy, "init", "--cleanup")
		if rules := natRules(t, pod); strings.Contains(rules, "MESH_PROXY") {
			t.Errorf("rules left after cleanup:\n%s", rules)
		}
	})

	t.Run("without NET_ADMIN it says which capability is missing", func(t *testing.T) {
		out, err := pod.CommandAs(context.Background(), proxyUID, bins.proxy, "init").CombinedOutput()
		if err == nil {
			t.Fatalf("init as UID %d succeeded:\n%s", proxyUID, out)
		}
		if !strings.Contains(string(out), "NET_ADMIN") {
			t.Errorf("init without privileges printed %q, want a hint naming NET_ADMIN", out)
		}
	})

	t.Run("without iptables it says what to install", func(t *testing.T) {
		cmd := pod.Command(context.Background(), bins.proxy, "init")
		cmd.Env = []string{"PATH=/nonexistent"}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("init without iptables succeeded:\n%s", out)
		}
		if !strings.Contains(string(out), "apt-get install iptables") {
			t.Errorf("init without iptables printed %q, want a hint to install it", out)
		}
	})
}

// TestSkipPorts checks that skipped ports really bypass the proxies: the
// server pod skips inbound 8081 and 8082, the client skips outbound 8082,
// and no proxy runs, so a redirected connection is refused: only a port
// skipped on both sides answers.
func TestSkipPorts(t *testing.T) {
	netnstestRequire(t, "curl")
	lab := netnstest.New(t)
	client, server := lab.Pod("client"), lab.Pod("server")
	client.Run(t, bins.proxy, "init", "--skip-outbound-ports=8082")
	server.Run(t, bins.proxy, "init", "--skip-inbound-ports=8081,8082")
	for _, port := range []string{"8080", "8081", "8082"} {
		ln, err := server.Listen(":" + port)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "direct") })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	curl := func(port string) (string, error) {
		return client.Try(t, "curl", "-sS", "--max-time", "5", fmt.Sprintf("http://%s:%s/", server.IP, port))
	}
	if _, err := curl("8080"); err == nil {
		t.Error("port 8080 answered with no proxy running: interception is not in place")
	}
	if _, err := curl("8081"); err == nil {
		t.Error("port 8081 (skipped inbound only) answered: the client's outbound redirect is missing")
	}
	if out, err := curl("8082"); err != nil || out != "direct" {
		t.Errorf("port 8082, skipped on both sides = %q, %v; want a direct answer", out, err)
	}
}

// TestGracefulShutdown sends SIGTERM to the client's proxy while a slow
// request is in flight: the request completes, new connections are not
// accepted, and the proxy exits cleanly.
func TestGracefulShutdown(t *testing.T) {
	netnstestRequire(t, "curl")
	_, client, server := newLab(t)
	port := serveHTTP(t, server, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		fmt.Fprint(w, "finished")
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow := client.Command(ctx, "curl", "-sS", "--fail-with-body", fmt.Sprintf("http://%s:%d/", server.IP, port))
	var out strings.Builder
	slow.Stdout = &out
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}
	// Let the request reach the server before the signal.
	time.Sleep(300 * time.Millisecond)
	client.proxy.Signal(syscall.SIGTERM)
	if err := slow.Wait(); err != nil || out.String() != "finished" {
		t.Errorf("in-flight request during shutdown: %q, %v; want it to finish", out.String(), err)
	}
	done := make(chan error, 1)
	go func() { done <- client.proxy.Stop(10 * time.Second) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("proxy exited with %v after SIGTERM, want a clean exit", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("proxy did not exit after SIGTERM")
	}
}
