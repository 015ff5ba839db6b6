// Package fault injects the failures and latency the demo servers are told
// to show, so tests of the mesh can see error rates and slow backends. A
// Switch holds the fault in force, so the admin server can change it while
// the servers run.
package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
)

// Fault is what a demo server does to each request before it answers. The
// zero value injects nothing. It is a value: to change the fault of running
// servers, store a new one in their Switch.
type Fault struct {
	// FailRate is the fraction of requests, from 0 to 1, that fail: HTTP
	// servers answer FailStatus, gRPC UNAVAILABLE and payments
	// "ERR unavailable".
	FailRate float64
	// Latency is added before every answer, failed or not.
	Latency time.Duration
	// FailStatus is the HTTP status of a failed request, from 400 to 599;
	// zero means 500. The servers that do not speak HTTP (catalog,
	// payments) ignore it.
	FailStatus int
}

// AddFlags binds f to --fail-rate and --latency. Only the servers that let
// the status be chosen on the command line bind --fail-status themselves.
func (f *Fault) AddFlags(fs *pflag.FlagSet) {
	fs.Float64Var(&f.FailRate, "fail-rate", f.FailRate, "fraction of requests (0-1) answered with an error: 500, gRPC UNAVAILABLE or ERR")
	fs.DurationVar(&f.Latency, "latency", f.Latency, "latency added to every answer")
}

// Validate reports a rate outside [0, 1], a negative latency or a fail
// status that is neither zero nor an HTTP error status.
func (f Fault) Validate() error {
	if !(f.FailRate >= 0 && f.FailRate <= 1) { // also rejects NaN
		return fmt.Errorf("fail-rate must be between 0 and 1, got %v", f.FailRate)
	}
	if f.Latency < 0 {
		return fmt.Errorf("latency must not be negative, got %s", f.Latency)
	}
	if f.FailStatus != 0 && (f.FailStatus < 400 || f.FailStatus > 599) {
		return fmt.Errorf("fail-status must be an HTTP error status, 400 to 599, got %d", f.FailStatus)
	}
	return nil
}

// Status returns the HTTP status of a failed request: FailStatus, or 500
// if it is zero.
func (f Fault) Status() int {
	if f.FailStatus == 0 {
		return http.StatusInternalServerError
	}
	return f.FailStatus
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

// Switch holds the fault in force. Servers Load it on every request and
// the admin server Stores a new one; both are safe for concurrent use and
// never block. The zero value holds the zero Fault.
type Switch struct {
	f atomic.Pointer[Fault]
}

// NewSwitch returns a Switch holding f, which is not validated: callers
// check the flags with Validate first.
func NewSwitch(f Fault) *Switch {
	s := new(Switch)
	s.f.Store(&f)
	return s
}

// Load returns the fault in force.
func (s *Switch) Load() Fault {
	if f := s.f.Load(); f != nil {
		return *f
	}
	return Fault{}
}

// Store validates f and makes it the fault in force for the requests that
// Load it from now on; requests already past Load keep the old one. An
// invalid f is returned as an error and changes nothing.
func (s *Switch) Store(f Fault) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.f.Store(&f)
	return nil
}

// Update replaces the fault in force with change(it), atomically: if
// another Store or Update comes in between, change is called again on the
// newer fault, so change must have no side effects. If change fails or
// returns an invalid fault, Update returns that error and changes nothing.
// It returns the fault now in force.
func (s *Switch) Update(change func(Fault) (Fault, error)) (Fault, error) {
	for {
		old := s.f.Load()
		cur := Fault{}
		if old != nil {
			cur = *old
		}
		next, err := change(cur)
		if err == nil {
			err = next.Validate()
		}
		if err != nil {
			return cur, err
		}
		if s.f.CompareAndSwap(old, &next) {
			return next, nil
		}
	}
}
