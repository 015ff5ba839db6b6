package fault

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
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
		{name: "service unavailable", f: Fault{FailRate: 1, FailStatus: 503}},
		{name: "lowest error status", f: Fault{FailStatus: 400}},
		{name: "success as failure", f: Fault{FailStatus: 200}, wantErr: true},
		{name: "status above 599", f: Fault{FailStatus: 600}, wantErr: true},
		{name: "negative status", f: Fault{FailStatus: -1}, wantErr: true},
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

func TestStatus(t *testing.T) {
	tests := []struct {
		name string
		f    Fault
		want int
	}{
		{name: "zero means 500", f: Fault{}, want: 500},
		{name: "chosen", f: Fault{FailStatus: 503}, want: 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.Status(); got != tc.want {
				t.Errorf("Status() = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestSwitch(t *testing.T) {
	var zero Switch
	if got := zero.Load(); got != (Fault{}) {
		t.Errorf("zero Switch holds %+v, want the zero Fault", got)
	}
	first := Fault{FailRate: 0.5, Latency: time.Millisecond, FailStatus: 503}
	s := NewSwitch(first)
	if got := s.Load(); got != first {
		t.Errorf("NewSwitch(%+v).Load() = %+v", first, got)
	}
	tests := []struct {
		name    string
		f       Fault
		wantErr string // empty if Store succeeds
		want    Fault  // what the switch holds after Store
	}{
		{name: "always fail", f: Fault{FailRate: 1}, want: Fault{FailRate: 1}},
		{name: "bad rate leaves it", f: Fault{FailRate: 2}, wantErr: "fail-rate must be between 0 and 1",
			want: Fault{FailRate: 1}},
		{name: "bad status leaves it", f: Fault{FailStatus: 302}, wantErr: "fail-status must be an HTTP error status",
			want: Fault{FailRate: 1}},
		{name: "back to none", f: Fault{}, want: Fault{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Store(tc.f)
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Store(%+v) = %v, want an error with %q", tc.f, err, tc.wantErr)
			}
			if got := s.Load(); got != tc.want {
				t.Errorf("after Store(%+v) the switch holds %+v, want %+v", tc.f, got, tc.want)
			}
		})
	}
}

func TestSwitchUpdate(t *testing.T) {
	s := NewSwitch(Fault{FailRate: 1, FailStatus: 503})
	tests := []struct {
		name    string
		change  func(Fault) (Fault, error)
		wantErr string
		want    Fault // in force afterwards, and returned
	}{
		{name: "add latency", change: func(f Fault) (Fault, error) { f.Latency = time.Millisecond; return f, nil },
			want: Fault{FailRate: 1, Latency: time.Millisecond, FailStatus: 503}},
		{name: "change fails", change: func(f Fault) (Fault, error) { return Fault{}, errors.New("bad body") },
			wantErr: "bad body", want: Fault{FailRate: 1, Latency: time.Millisecond, FailStatus: 503}},
		{name: "invalid result", change: func(f Fault) (Fault, error) { f.FailRate = 3; return f, nil },
			wantErr: "fail-rate must be between 0 and 1", want: Fault{FailRate: 1, Latency: time.Millisecond, FailStatus: 503}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Update(tc.change)
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Update = %v, want an error with %q", err, tc.wantErr)
			}
			if got != tc.want || s.Load() != tc.want {
				t.Errorf("Update returned %+v and left %+v, want %+v", got, s.Load(), tc.want)
			}
		})
	}
}

// TestUpdateConcurrent has writers race to add to the latency: none of
// their updates may be lost.
func TestUpdateConcurrent(t *testing.T) {
	var s Switch // the zero value works too
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 250 {
				s.Update(func(f Fault) (Fault, error) { f.Latency += time.Microsecond; return f, nil })
			}
		})
	}
	wg.Wait()
	if got := s.Load().Latency; got != 1000*time.Microsecond {
		t.Errorf("latency after 1000 concurrent updates of +1µs = %s, want 1ms", got)
	}
}

// TestSwitchConcurrent lets the race detector watch readers and a writer.
func TestSwitchConcurrent(t *testing.T) {
	s := NewSwitch(Fault{})
	valid := map[Fault]bool{{}: true, {FailRate: 1, FailStatus: 503}: true}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				if f := s.Load(); !valid[f] {
					t.Errorf("Load() = %+v, a fault never stored", f)
					return
				}
			}
		})
	}
	for i := range 1000 {
		if err := s.Store(Fault{FailRate: float64(i % 2), FailStatus: 503 * (i % 2)}); err != nil {
			t.Error(err)
			break
		}
	}
	wg.Wait()
}
