package route

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves the index's goroutines or
// the informers' running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
