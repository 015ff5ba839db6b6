// Package demo is the mesh's demo app: a small shop whose services speak
// every protocol the proxy handles, so tests and users can watch the mesh
// carry real traffic. One static binary, testdata/demo/cmd/demo, runs any
// of them:
//
//	loadgen ──HTTP/1.1──> web :8080 ──gRPC (h2c)──> catalog :9090
//	                         │
//	                         └──HTTP/2 (h2c)──> orders :8081 ──TCP line protocol──> payments :7070
//
// Apart from the shop, `demo echo` is a plain backend for the tests of the
// mesh's load balancing: on :8080 it answers every request, HTTP/1.1 or h2c
// (prior knowledge) on the same port, with 200 and "echo from NAME", NAME
// being $POD_NAME or else the hostname; a request failed by --fail-rate gets
// --fail-status (default 500) and "injected fault from NAME". It reads a
// request's whole body before it answers, and with --exit-on-term it
// closes every connection and exits at once on SIGTERM, as an app that
// does not drain would (issue 14's scale-down test). The catalog names the
// pod that answered in the response header x-served-by. loadgen loads
// it with --target echo:8080 --path /: a page that lists no products gets
// plain GETs, 2xx counting as success.
//
// Each server takes --fail-rate and --latency to inject faults and answers
// /ready and /live on its admin port, :9900; flags can be set as DEMO_*
// environment variables. The admin port also serves the fault in force, so
// tests can change it while the server runs:
//
//	GET /fault   200 {"fail_rate":0.5,"latency":"50ms","fail_status":503}
//	PUT /fault   {"fail_rate":0.5,"latency":"50ms","fail_status":503}
//	             200 with the new fault; 400 with the reason, fault unchanged
//
// The PUT body is one JSON object (any Content-Type; form values are
// rejected). It sets the fields it names and keeps the others, so
// {"fail_rate":1} fails every request with the status already in force
// (echo's --fail-status) and {"fail_rate":0,"latency":"0s"} stops injecting;
// GET's answer names every field, so PUT back it restores that fault.
// Unknown fields are an error. fail_rate is 0 to 1, latency a Go duration
// string, fail_status 400 to 599 or 0 for 500; fail_status applies to the
// HTTP servers, echo, web and orders, while catalog fails with UNAVAILABLE
// and payments with ERR whatever it says. For example, in the pod:
//
//	curl -X PUT -d '{"fail_rate":1,"fail_status":503}' http://localhost:9900/fault
//
// k8s/demo.yaml deploys the shop in the meshed namespace "demo";
// k8s/job.yaml runs a one-shot load as a Job.
//
// Build and test (the ./... pattern skips directories named testdata, so
// name this tree explicitly):
//
//	CGO_ENABLED=0 go build -trimpath -o bin/demo ./testdata/demo/cmd/demo
//	go test -race ./testdata/demo/...
//	go test -run '^$' -fuzz FuzzPaymentLine -fuzztime 30s ./testdata/demo/payments
//	go test -run '^$' -fuzz FuzzDecodeFault -fuzztime 30s ./testdata/demo/admin
//
// The catalog's protobuf is api/demo/catalog/v1/catalog.proto; `make proto`
// regenerates its Go code.
package demo
