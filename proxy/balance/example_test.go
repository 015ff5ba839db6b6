package balance_test

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mesh-dev/mesh/proxy/balance"
)

func ExamplePeakEWMA() {
	b, err := balance.New(balance.Config{
		OnDrained: func(ep balance.Endpoint) { fmt.Println("drained", ep.Addr, "- close its pool") },
	})
	if err != nil {
		panic(err)
	}
	web := balance.Endpoint{Addr: netip.MustParseAddrPort("10.0.0.1:8080"), Weight: 1, Metadata: "web-0"}
	if err := b.Update([]balance.Endpoint{web}); err != nil {
		panic(err)
	}

	// One request: pick, send, report, done.
	p, ok := b.Pick()
	if !ok {
		fmt.Println("no endpoints: answer 503")
		return
	}
	fmt.Println("send to", p.Endpoint().Addr, p.Endpoint().Metadata)
	p.Observe(12*time.Millisecond, errors.New("HTTP 503")) // a 5xx counts as a failure

	// The endpoint leaves the set while the request is in flight; it drains
	// when the request is done.
	if err := b.Update(nil); err != nil {
		panic(err)
	}
	p.Done()

	// Output:
	// send to 10.0.0.1:8080 web-0
	// drained 10.0.0.1:8080 - close its pool
}
