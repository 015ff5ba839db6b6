package cli

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestProgressPlain(t *testing.T) {
	var b bytes.Buffer
	clock := testNow
	p := newProgress(&b, func() time.Time { return clock })
	if p.tty {
		t.Fatal("a buffer is not a terminal")
	}
	err := p.run(context.Background(), "deployment/mesh-controller available", func(_ context.Context, status func(string)) (string, error) {
		status("0 of 1 pods available")
		status("0 of 1 pods available") // repeated: printed once
		clock = clock.Add(12300 * time.Millisecond)
		return "1 of 1 pods available", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantErr := errors.New("boom")
	if err := p.run(context.Background(), "service/mesh-injector endpoint ready", func(context.Context, func(string)) (string, error) {
		clock = clock.Add(2 * time.Minute)
		return "", wantErr
	}); !errors.Is(err, wantErr) {
		t.Fatalf("err = %v", err)
	}
	p.line(okMark, "%s %s", "namespace/mesh-system", resultUnchanged)
	want := `  deployment/mesh-controller available: 0 of 1 pods available
√ deployment/mesh-controller available: 1 of 1 pods available (12.3s)
× service/mesh-injector endpoint ready (2m0s)
√ namespace/mesh-system unchanged
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
