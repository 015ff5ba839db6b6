package viz

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	vizv1 "github.com/mesh-dev/mesh/api/viz/v1"
)

// TestRun runs the component as the controller does: it serves the API on
// its own listener, scrapes every interval once the caches have synced,
// and stops when ctx ends.
func TestRun(t *testing.T) {
	s := newShop(t)
	factory := informers.NewSharedInformerFactory(fake.NewClientset(s.objs...), 0)
	reg := prometheus.NewRegistry()
	listening := make(chan net.Addr, 1)
	v, err := New(Config{
		Addr: "127.0.0.1:0", Informers: factory, Dial: s.dial, Registerer: reg,
		// Short, but not so short that scrapes time out on a loaded
		// machine under the race detector.
		Interval: 250 * time.Millisecond, ScrapeTimeout: 250 * time.Millisecond,
		OnListen: func(a net.Addr) { listening <- a },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	// Shutdown waits for the informers, which stop when ctx ends: cancel
	// first, also when the test fails.
	defer factory.Shutdown()
	defer cancel()
	factory.Start(ctx.Done())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	base := "http://" + (<-listening).String()

	// Traffic after the first scrape shows up in the next ones.
	deadline := time.Now().Add(30 * time.Second)
	for testutil.ToFloat64(v.metrics.scrapes) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.webB.serve(webInbound, 25, 200, 18*time.Millisecond)
	var web vizv1.StatList
	for time.Now().Before(deadline) {
		code := getJSON(t, base, vizv1.PathStat, values("kind", "deploy", "namespace", "shop", "name", "web"), &web)
		if code == http.StatusOK && web.Rows[0].Requests == 25 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(web.Rows) != 1 || web.Rows[0].Requests != 25 || web.Rows[0].TotalRequests != 25 {
		t.Fatalf("web rows %+v: want 25 requests", web.Rows)
	}

	// legacy is not meshed: 3 of the 4 pods are scraped, every round.
	if failures := testutil.ToFloat64(v.metrics.failures); failures != 0 {
		t.Errorf("%v scrapes failed", failures)
	}
	if n, err := testutil.GatherAndCount(reg, "mesh_controller_viz_series"); err != nil || n != 1 {
		t.Errorf("mesh_controller_viz_series: %d, %v", n, err)
	}
	if got := testutil.ToFloat64(v.metrics.series); got != 1 {
		t.Errorf("series stored: %v, want web-b's inbound label set, the only one exported: 1", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestNewErrors(t *testing.T) {
	factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "no informers", cfg: Config{}, wantErr: "Informers is required"},
		{name: "timeout over interval", cfg: Config{Informers: factory, Interval: time.Second}, wantErr: "scrape timeout 2s is longer than the interval 1s"},
		{name: "short retention", cfg: Config{Informers: factory, Retention: time.Minute}, wantErr: "shorter than 15m"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New: %v, want %q", err, tc.wantErr)
			}
		})
	}
}
