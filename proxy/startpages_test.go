package proxy

import (
	"context"
	"errors"
	"testing"
	"time"

	at "github.com/mesh-dev/mesh/proxy/authz/authztest"
	"github.com/mesh-dev/mesh/proxy/policy/policytest"
)

// TestReleaseStartupPages drops the test binary's own start-up pages: most
// of what was resident goes, and the process goes on running (this test
// returning is that part).
func TestReleaseStartupPages(t *testing.T) {
	exe, err := executableMappings()
	if err != nil {
		t.Fatal(err)
	}
	var readOnly, writable int
	for _, m := range exe {
		if m.readOnly {
			readOnly++
		} else {
			writable++
		}
	}
	// Code, read-only data; data.
	if readOnly < 2 || writable < 1 {
		t.Errorf("executable mappings: %d read-only, %d writable; want at least 2 and 1: %+v", readOnly, writable, exe)
	}

	before, after, err := releaseStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("executable resident: %d KiB before, %d KiB after", before>>10, after>>10)
	if before < 1<<20 {
		t.Errorf("only %d bytes of the executable resident before; the test binary's init alone touches more", before)
	}
	if after > before/2 {
		t.Errorf("%d of %d bytes still resident after the release; want most gone", after, before)
	}
	// The pages come back on use: a proxy works after the release.
	p := startProxy(t, backend(t, named("after the release", 0)))
	if code, body := get(t, h1Client(t), "http://"+p.inbound+"/"); body != "after the release" {
		t.Errorf("through a proxy after the release: %d %q", code, body)
	}
}

func TestAwaitReady(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		p := startProxy(t, "127.0.0.1:1")
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := p.awaitReady(ctx, 10*time.Millisecond); err != nil {
			t.Errorf("awaitReady = %v, want nil", err)
		}
	})
	t.Run("no policy yet", func(t *testing.T) {
		fake, policyAddr, _ := policytest.Start(t)
		p := startProxy(t, "127.0.0.1:1", withPolicy(policyAddr, 10*time.Second))
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		if err := p.awaitReady(ctx, 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("awaitReady without a policy = %v, want the context's deadline", err)
		}
		// Once the policy arrives, it returns.
		fake.Set(at.Default("deny"))
		ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := p.awaitReady(ctx, 10*time.Millisecond); err != nil {
			t.Errorf("awaitReady with a policy = %v, want nil", err)
		}
	})
}
