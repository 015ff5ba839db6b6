package balance

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPick measures one use of an endpoint (Pick, Observe, Done) from
// parallel goroutines, over sets of several sizes, with every endpoint
// healthy and with half of them ejected (the draws that hit an ejected
// endpoint are redrawn). Run it with
//
//	go test -run '^$' -bench Pick -cpu 1,2 ./proxy/balance/
func BenchmarkPick(b *testing.B) {
	for _, ejected := range []bool{false, true} {
		for _, n := range []int{1, 3, 10, 100, 1000} {
			b.Run(fmt.Sprintf("endpoints=%d/half-ejected=%v", n, ejected), func(b *testing.B) {
				bal := newBalancer(b, Config{}, manyEndpoints(n))
				if ejected {
					ejectHalf(bal)
				}
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						p, _ := bal.Pick()
						p.Observe(time.Millisecond, nil)
						p.Done()
					}
				})
			})
		}
	}
}

// ejectHalf ejects every other endpoint for longer than any benchmark runs.
func ejectHalf(b *PeakEWMA) {
	entries := b.snap.Load().entries
	for i := 0; i < len(entries); i += 2 {
		st := entries[i].st
		st.until.Store(b.now() + int64(time.Hour))
		st.health.Store(ejected)
	}
}
