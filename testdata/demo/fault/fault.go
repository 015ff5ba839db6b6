// Package fault injects the failures and latency the demo servers are told
// to show, so tests of the mesh can see error rates and slow backends.
package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/spf13/pflag"
)

// Fault is what a demo server does to each request before it answers. The
// zero value injects nothing. Safe for concurrent use; it is never mutated
// after flags are parsed.
type Fault struct {
	// FailRate is the fraction of requests, from 0 to 1, that fail: HTTP
	// servers answer 500, gRPC UNAVAILABLE and payments "ERR unavailable".
	FailRate float64
	// Latency is added before every answer, failed or not.
	Latency time.Duration
}

// AddFlags binds f to --fail-rate and --latency.
func (f *Fault) AddFlags(fs *pflag.FlagSet) {
	fs.Float64Var(&f.FailRate, "fail-rate", f.FailRate, "fraction of requests (0-1) answered with an error: 500, gRPC UNAVAILABLE or ERR")
	fs.DurationVar(&f.Latency, "latency", f.Latency, "latency added to every answer")
}

// Validate reports a rate outside [0, 1] or a negative latency.
func (f Fault) Validate() error {
	if !(f.FailRate >= 0 && f.FailRate <= 1) { // also rejects NaN
		return fmt.Errorf("fail-rate must be between 0 and 1, got %v", f.FailRate)
	}
	if f.Latency < 0 {
		return fmt.Errorf("latency must not be negative, got %s", f.Latency)
	}
	return nil
}

// Apply waits the configured latency and reports whether this request
// should fail. It returns ctx's error if ctx ends during the wait.
func (f Fault) Apply(ctx context.Context) (fail bool, err error) {
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	// rand.Float64 is in [0, 1), so a rate of 1 always fails and 0 never.
	return f.FailRate > 0 && rand.Float64() < f.FailRate, nil
}
