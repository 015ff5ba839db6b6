package route

import (
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

func abortFault(perMillion, status uint32) *destinationv1.Filter {
	return &destinationv1.Filter{Kind: &destinationv1.Filter_Fault{Fault: &destinationv1.Fault{
		Abort: &destinationv1.Fault_Abort{PerMillion: perMillion, HttpStatus: status},
	}}}
}

func delayFault(perMillion uint32, d time.Duration) *destinationv1.Filter {
	return &destinationv1.Filter{Kind: &destinationv1.Filter_Fault{Fault: &destinationv1.Fault{
		Delay: &destinationv1.Fault_Delay{PerMillion: perMillion, Duration: durationpb.New(d)},
	}}}
}

// TestFaultDrawShares draws many times from faults of several shares and
// checks each share within 6 standard deviations of its expectation (a
// false failure about once in 10^9 runs), and that the two draws are
// independent: the share of requests both delayed and aborted is the
// product of the shares.
func TestFaultDrawShares(t *testing.T) {
	const n = 100_000
	tests := []struct {
		name         string
		fault        *Fault
		delay, abort float64 // expected shares
	}{
		{name: "nil", fault: nil},
		{name: "nothing", fault: &Fault{AbortStatus: 503, Delay: time.Second}},
		{name: "every request", fault: &Fault{AbortPerMillion: Million, AbortStatus: 503, DelayPerMillion: Million, Delay: time.Second}, delay: 1, abort: 1},
		{name: "half aborted", fault: &Fault{AbortPerMillion: 500_000, AbortStatus: 503}, abort: 0.5},
		{name: "a tenth delayed, a quarter aborted", fault: &Fault{AbortPerMillion: 250_000, AbortStatus: 500, DelayPerMillion: 100_000, Delay: time.Second},
			delay: 0.1, abort: 0.25},
		{name: "one in a thousand delayed", fault: &Fault{DelayPerMillion: 1000, Delay: time.Millisecond}, delay: 0.001},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var delayed, aborted, both int
			for range n {
				d, abort, status := tc.fault.Draw()
				switch {
				case d != 0 && d != tc.fault.Delay:
					t.Fatalf("Draw delayed %v, want 0 or %v", d, tc.fault.Delay)
				case abort && status != tc.fault.AbortStatus:
					t.Fatalf("Draw aborted with %d, want %d", status, tc.fault.AbortStatus)
				case !abort && status != 0:
					t.Fatalf("Draw gave status %d without an abort", status)
				}
				if d != 0 {
					delayed++
				}
				if abort {
					aborted++
				}
				if d != 0 && abort {
					both++
				}
			}
			within(t, "delayed", delayed, n, tc.delay)
			within(t, "aborted", aborted, n, tc.abort)
			within(t, "delayed and aborted", both, n, tc.delay*tc.abort)
		})
	}
}

// within checks that got of n draws is within 6 standard deviations of a
// binomial share p; a share of 0 or 1 must be exact.
func within(t *testing.T, what string, got, n int, p float64) {
	t.Helper()
	want := p * float64(n)
	sd := math.Sqrt(float64(n) * p * (1 - p))
	if math.Abs(float64(got)-want) > 6*sd {
		t.Errorf("%s %d of %d, want %.0f ± %.0f", what, got, n, want, 6*sd)
	}
}

// BenchmarkFaultDraw is the cost a fault adds to each request of its
// rule. Run it with
//
//	go test -run '^$' -bench FaultDraw ./proxy/route/
func BenchmarkFaultDraw(b *testing.B) {
	for _, bc := range []struct {
		name  string
		fault *Fault
	}{
		{"none", nil},
		{"always", &Fault{AbortPerMillion: Million, AbortStatus: 503, DelayPerMillion: Million, Delay: time.Second}},
		{"shares", &Fault{AbortPerMillion: 500_000, AbortStatus: 503, DelayPerMillion: 500_000, Delay: time.Second}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.fault.Draw()
			}
		})
	}
}
