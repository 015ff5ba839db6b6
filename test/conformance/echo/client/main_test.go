package client_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that the client and the servers of the tests leave no
// goroutine behind: Run closes its connections, Serve waits for its
// listeners.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
