// Package demo is the mesh's demo app: a small shop whose services speak
// every protocol the proxy handles, so tests and users can watch the mesh
// carry real traffic. One static binary, testdata/demo/cmd/demo, runs any
// of them:
//
//	loadgen ──HTTP/1.1──> web :8080 ──gRPC (h2c)──> catalog :9090
//	                         │
//	                         └──HTTP/2 (h2c)──> orders :8081 ──TCP line protocol──> payments :7070
//
// Each server also answers /ready and /live on :9900 and takes --fail-rate
// and --latency to inject faults; flags can be set as DEMO_* environment
// variables. k8s/demo.yaml deploys the shop in the meshed namespace "demo";
// k8s/job.yaml runs a one-shot load as a Job.
//
// Build and test (the ./... pattern skips directories named testdata, so
// name this tree explicitly):
//
//	CGO_ENABLED=0 go build -trimpath -o bin/demo ./testdata/demo/cmd/demo
//	go test -race ./testdata/demo/...
//	go test -run '^$' -fuzz FuzzPaymentLine -fuzztime 30s ./testdata/demo/payments
//
// The catalog's protobuf is api/demo/catalog/v1/catalog.proto; `make proto`
// regenerates its Go code.
package demo
