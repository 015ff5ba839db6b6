package integration

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestRedis drives redis-server with redis-cli and redis-benchmark through
// both proxies: on 6379, opaque by default, and on another port, where
// detection sees RESP and falls back to opaque TCP.
func TestRedis(t *testing.T) {
	netnstestRequire(t, "redis-server", "redis-cli", "redis-benchmark")
	lab, client, server := newLab(t)
	tests := []struct {
		name       string
		port       int
		wantReason string
	}{
		{name: "default opaque port 6379", port: 6379, wantReason: "opaque-port"},
		{name: "detected on another port", port: freePort(t, server), wantReason: "no-match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port := strconv.Itoa(tc.port)
			srv := lab.Start("server/redis-"+port, server.Command(context.Background(), "redis-server",
				"--port", port, "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"))
			waitListening(t, server, tc.port, srv)
			c := watch(t, client, server)
			cli := []string{"-h", server.IP.String(), "-p", port}
			client.Run(t, "redis-cli", append(cli, "SET", "greeting", "hello through the mesh")...)
			if got := strings.TrimSpace(client.Run(t, "redis-cli", append(cli, "GET", "greeting")...)); got != "hello through the mesh" {
				t.Errorf("GET greeting = %q", got)
			}
			// Many connections and pipelined commands at once.
			out := client.Run(t, "redis-benchmark", append(cli, "-q", "-n", "2000", "-c", "8", "-P", "4", "-t", "ping,set,get", "--csv")...)
			if strings.Count(out, "\n") < 3 {
				t.Errorf("redis-benchmark printed too little:\n%s", out)
			}
			c.connections(t, 10)
			c.detected(t, "opaque", tc.wantReason, 2)
		})
	}
}

// podDialer lets the NATS client dial from inside a pod.
type podDialer struct{ pod *meshPod }

func (d podDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.pod.DialContext(ctx, network, addr)
}

// TestServerSpeaksFirst connects a NATS client (nats.go) to nats-server,
// whose server sends INFO before the client says anything. On NATS's own
// port the proxies forward at once; on an unknown port the first connection
// waits out the detect timeout once per proxy and the destination is then
// remembered, so later connections do not wait. Linkerd stalls such
// connections for 10 s.
func TestServerSpeaksFirst(t *testing.T) {
	netnstestRequire(t, "nats-server")
	lab, client, server := newLab(t)
	tests := []struct {
		name string
		port int
		// wantFirst bounds the first connection. An unknown port costs one
		// detect timeout (500 ms) in each of the two proxies.
		wantFirst time.Duration
		reason    string
	}{
		{name: "default opaque port 4222", port: 4222, wantFirst: time.Second, reason: "opaque-port"},
		{name: "unknown port", port: freePort(t, server), wantFirst: 2 * time.Second, reason: "timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port := strconv.Itoa(tc.port)
			srv := lab.Start("server/nats-"+port, server.Command(context.Background(), "nats-server", "-a", "0.0.0.0", "-p", port))
			waitListening(t, server, tc.port, srv)
			c := watch(t, client, server)
			url := fmt.Sprintf("nats://%s:%d", server.IP, tc.port)
			connect := func() (*nats.Conn, time.Duration) {
				t.Helper()
				start := time.Now()
				nc, err := nats.Connect(url, nats.SetCustomDialer(podDialer{client}), nats.Timeout(5*time.Second), nats.NoReconnect())
				if err != nil {
					t.Fatalf("connecting to %s: %v", url, err)
				}
				return nc, time.Since(start)
			}
			nc, took := connect()
			defer nc.Close()
			t.Logf("first connection took %v", took)
			if took > tc.wantFirst {
				t.Errorf("first connection took %v, want under %v", took, tc.wantFirst)
			}
			// Later connections are forwarded at once, whatever the port.
			nc2, took2 := connect()
			defer nc2.Close()
			t.Logf("second connection took %v", took2)
			if took2 > time.Second {
				t.Errorf("second connection took %v, want under 1s", took2)
			}
			// Publish on one connection, receive on the other.
			sub, err := nc2.SubscribeSync("mesh.test")
			if err != nil {
				t.Fatal(err)
			}
			if err := nc2.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := nc.Publish("mesh.test", []byte("across the mesh")); err != nil {
				t.Fatal(err)
			}
			msg, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("no message: %v", err)
			}
			if string(msg.Data) != "across the mesh" {
				t.Errorf("message = %q", msg.Data)
			}
			nc.Close()
			nc2.Close()
			c.detected(t, "opaque", tc.reason, 1)
			if tc.reason == "timeout" {
				c.detected(t, "opaque", "remembered-opaque", 1)
			}
		})
	}
}
