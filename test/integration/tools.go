//go:build tools

// This file keeps the gRPC interop client and server in go.mod, so the
// suite can build them with `go build google.golang.org/grpc/interop/...`
// at exactly the version the module pins.
package integration

import (
	_ "google.golang.org/grpc/interop/client"
	_ "google.golang.org/grpc/interop/server"
)
