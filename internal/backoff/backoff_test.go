package backoff

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	nominal := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, n := range nominal {
		n *= time.Millisecond
		if got := b.Next(); got < n/2 || got > n {
			t.Errorf("attempt %d waits %v, want within [%v, %v]", i, got, n/2, n)
		}
	}
	if !b.Failing() {
		t.Error("Failing is false after failures")
	}
	b.Reset()
	if b.Failing() {
		t.Error("Failing is true after Reset")
	}
	if got := b.Next(); got < 50*time.Millisecond || got > 100*time.Millisecond {
		t.Errorf("after Reset the wait is %v, want within [50ms, 100ms]", got)
	}
	var zero Backoff
	if got := zero.Next(); got != 0 {
		t.Errorf("the zero Backoff waits %v, want 0", got)
	}
}
