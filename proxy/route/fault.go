package route

import (
	"fmt"
	"math/rand/v2"
	"time"

	destinationv1 "github.com/mesh-dev/mesh/api/destination/v1"
)

// Million is the whole of a Fault's shares: AbortPerMillion and
// DelayPerMillion run from 0 (no request) to Million (every request).
const Million = 1_000_000

// Fault is an HTTPFault filter of policy.mesh.dev, which an ExtensionRef
// filter of an HTTPRoute or GRPCRoute rule names (docs/traffic.md 3.7).
// Each request of the rule draws for the delay and for the abort apart,
// so a request may be delayed and then aborted. It is immutable, and its
// Draw is safe for concurrent use.
type Fault struct {
	// AbortPerMillion of the requests are answered at once with
	// AbortStatus (200-599), never sent to a backend; a gRPC request gets
	// the gRPC status that HTTP status maps to.
	AbortPerMillion uint32
	AbortStatus     int
	// DelayPerMillion of the requests wait Delay before they go on. The
	// wait ends early when the client leaves, and counts in the request's
	// latency, as a slow server's would.
	DelayPerMillion uint32
	Delay           time.Duration
}

// Draw decides the fault of one request: how long to hold it first (0:
// not at all), then whether to answer it with status instead of sending
// it on. Each share is one math/rand/v2 draw, no lock, none at all for a
// share of 0 or Million. A nil Fault never delays or aborts.
//
// The HTTP paths wait out delay (or the client's leaving), then answer an
// abort locally, counted and tapped like the proxy's other local answers;
// a request that is not aborted goes on exactly as without the fault.
func (f *Fault) Draw() (delay time.Duration, abort bool, status int) {
	if f == nil {
		return 0, false, 0
	}
	if drawn(f.DelayPerMillion) {
		delay = f.Delay
	}
	if drawn(f.AbortPerMillion) {
		return delay, true, f.AbortStatus
	}
	return delay, false, 0
}

// drawn reports whether a request falls in a share of perMillion.
func drawn(perMillion uint32) bool {
	switch {
	case perMillion == 0:
		return false
	case perMillion >= Million:
		return true
	}
	return rand.Uint32N(Million) < perMillion
}

// compileFault validates a Fault filter. The controller sends only what
// an HTTPFault's schema allows (shares of 0-100%, a status of 200-599, a
// duration not negative), so anything else is ErrInvalid.
func compileFault(pf *destinationv1.Fault) (*Fault, error) {
	f := &Fault{}
	if a := pf.GetAbort(); a != nil {
		if a.GetPerMillion() > Million {
			return nil, fmt.Errorf("%w: abort per_million %d above %d", ErrInvalid, a.GetPerMillion(), Million)
		}
		if a.GetHttpStatus() < 200 || a.GetHttpStatus() > 599 {
			return nil, fmt.Errorf("%w: abort http_status %d, want 200 to 599", ErrInvalid, a.GetHttpStatus())
		}
		f.AbortPerMillion, f.AbortStatus = a.GetPerMillion(), int(a.GetHttpStatus())
	}
	if d := pf.GetDelay(); d != nil {
		if d.GetPerMillion() > Million {
			return nil, fmt.Errorf("%w: delay per_million %d above %d", ErrInvalid, d.GetPerMillion(), Million)
		}
		delay, err := timeout(d.GetDuration())
		if err != nil {
			return nil, fmt.Errorf("delay duration: %w", err)
		}
		f.DelayPerMillion, f.Delay = d.GetPerMillion(), delay
	}
	return f, nil
}
