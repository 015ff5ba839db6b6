package proxy

import (
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestNewReleasesEverythingOnFailure: when New fails after it has set up
// the controller connections (destination and policy, identity, tap), it
// closes them, every listener it bound and the HTTP server of the inbound
// side, leaving no goroutine and no file descriptor behind while its ctx
// still runs. Before, the destination and identity connections (and the
// inbound side's HTTP server) outlived a failed New.
func TestNewReleasesEverythingOnFailure(t *testing.T) {
	pki := startPKI(t)
	controller := startDestination(t, &fakeDestination{})
	tests := []struct {
		name string
		// busy names the address that is taken.
		busy    func(*Config, string)
		wantErr string
	}{
		{name: "admin address in use", busy: func(c *Config, a string) { c.AdminAddr = a }, wantErr: "admin listener"},
		{name: "tap address in use", busy: func(c *Config, a string) { c.TapAddr = a }, wantErr: "tap"},
		{name: "inbound address in use", busy: func(c *Config, a string) { c.InboundAddr = a }, wantErr: "inbound listener"},
		{name: "outbound address in use", busy: func(c *Config, a string) { c.OutboundAddr = a }, wantErr: "outbound listener"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			cfg := DefaultConfig()
			cfg.InboundAddr, cfg.OutboundAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
			cfg.DestinationAddr, cfg.PodName = controller, "api-0"
			pki.withIdentity(t, "shop", "api")(&cfg)
			cfg.TapAddr, cfg.TapClientID = "127.0.0.1:0", pki.ca.ID("mesh-system", "mesh-controller").String()
			tc.busy(&cfg, taken.Addr().String())
			before, fds := goleak.IgnoreCurrent(), openFDs(t)

			p, err := New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil {
				p.release(t.Context())
				t.Fatal("New succeeded with an address in use")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New error = %v, want one mentioning %q", err, tc.wantErr)
			}
			// t.Context is still live: whatever New started must have
			// stopped on its own.
			if err := goleak.Find(before); err != nil {
				t.Errorf("New left goroutines behind: %v", err)
			}
			// The test's servers may open and close files meanwhile.
			for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
				got := openFDs(t)
				if got <= fds {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("New left %d file descriptors open", got-fds)
					break
				}
			}
		})
	}
}

// openFDs counts the process's open file descriptors (Linux only).
func openFDs(t testing.TB) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(fds)
}
