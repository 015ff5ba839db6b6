package fault

import (
	"context"
	"math"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		f       Fault
		wantErr bool
	}{
		{name: "zero", f: Fault{}},
		{name: "half", f: Fault{FailRate: 0.5, Latency: time.Millisecond}},
		{name: "always", f: Fault{FailRate: 1}},
		{name: "negative rate", f: Fault{FailRate: -0.1}, wantErr: true},
		{name: "rate above one", f: Fault{FailRate: 1.5}, wantErr: true},
		{name: "NaN rate", f: Fault{FailRate: math.NaN()}, wantErr: true},
		{name: "negative latency", f: Fault{Latency: -time.Second}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.f.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, want error: %v", err, tc.wantErr)
			}
		})
	}
}

func TestApplyRates(t *testing.T) {
	tests := []struct {
		name     string
		rate     float64
		wantFail int // out of 1000
		slack    int
	}{
		{name: "never", rate: 0, wantFail: 0},
		{name: "always", rate: 1, wantFail: 1000},
		// Binomial(1000, 0.5) has a standard deviation of about 16; 150 is
		// over 9 of them, so this does not flake.
		{name: "half", rate: 0.5, wantFail: 500, slack: 150},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := Fault{FailRate: tc.rate}
			got := 0
			for range 1000 {
				fail, err := f.Apply(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if fail {
					got++
				}
			}
			if got < tc.wantFail-tc.slack || got > tc.wantFail+tc.slack {
				t.Errorf("%d of 1000 failed, want %d±%d", got, tc.wantFail, tc.slack)
			}
		})
	}
}

func TestApplyLatency(t *testing.T) {
	f := Fault{Latency: 50 * time.Millisecond}
	start := time.Now()
	if _, err := f.Apply(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < f.Latency {
		t.Errorf("Apply returned after %s, want at least %s", d, f.Latency)
	}
}

func TestApplyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	f := Fault{Latency: time.Hour, FailRate: 1}
	if fail, err := f.Apply(ctx); err == nil || fail {
		t.Errorf("Apply on a canceled context = %v, %v; want false and an error", fail, err)
	}
}
