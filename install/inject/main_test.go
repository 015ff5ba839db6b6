package inject

import (
	"flag"
	"testing"

	"go.uber.org/goleak"
)

// update rewrites the golden files: go test ./install/inject -update
var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current output")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
