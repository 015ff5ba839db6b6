package h2

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: a
// connection's reader, a dial or a stream's goroutine that never ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
