package cni

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind, such as
// an installer loop that outlived its context.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
