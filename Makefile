# mesh: build, test, benchmark. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell cat VERSION)
LDFLAGS := -s -w -X github.com/mesh-dev/mesh/internal/version.Version=$(VERSION)
# Build tags of our binaries, as install/image.Tags for the images.
GOTAGS := grpcnotrace
BIN := bin
# Root-only suites fail instead of skipping unless this is set to 0.
MESH_REQUIRE_ROOT_TESTS ?= 1
export MESH_REQUIRE_ROOT_TESTS

# no-skips fails when a test log holds a skipped test while the suites are
# required to run in full (MESH_REQUIRE_ROOT_TESTS=1, as in CI): nothing
# may pass by not running.
define no-skips
	if [ "$(MESH_REQUIRE_ROOT_TESTS)" = 1 ] && grep -E -- '--- SKIP' $(1); then \
		echo "$(1): the tests above were skipped; with MESH_REQUIRE_ROOT_TESTS=1 every test must run" >&2; exit 1; fi
endef

.PHONY: help build deps test test-unit test-integration test-e2e fuzz bench bench-proxy lint proto generate test-generated dashboard test-dashboard clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## build the binaries into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(GOTAGS) -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

deps: ## install the Debian packages tests and benchmarks need (root)
	bash hack/deps.sh

test: lint test-unit test-generated test-dashboard test-integration test-e2e ## lint, then every test suite (root: network namespaces, the local Kubernetes)

test-unit: ## unit and fuzz-seed tests, race detector on; no root needed
	@mkdir -p build
	set -o pipefail; $(GO) test -race -count=1 -timeout 30m -v $$($(GO) list ./... ./testdata/demo/... | grep -v '/test/') 2>&1 | tee build/test-unit.log | grep -E '^(ok|FAIL|panic)|--- (FAIL|SKIP)|_test.go:[0-9]+: '
	@$(call no-skips,build/test-unit.log)
	@# The conformance echo app and runner options, a module of their own.
	set -o pipefail; (cd test/conformance && $(GO) test -race -count=1 -v ./...) 2>&1 | tee build/test-unit-conformance.log | grep -E '^(ok|FAIL|panic)|--- (FAIL|SKIP)|_test.go:[0-9]+: '
	@$(call no-skips,build/test-unit-conformance.log)

test-integration: ## network-namespace suite: real iptables, proxies, curl, h2load, gRPC interop, redis, nats (root)
	@if [ "$$(id -u)" -ne 0 ] && [ "$(MESH_REQUIRE_ROOT_TESTS)" = 1 ]; then \
		echo "test-integration needs root (network namespaces, iptables): run 'sudo make test', or MESH_REQUIRE_ROOT_TESTS=0 to skip it" >&2; exit 1; fi
	@mkdir -p build
	set -o pipefail; $(GO) test -count=1 -timeout 15m -v ./test/integration/... ./test/netnstest/... 2>&1 | tee build/test-integration.log | grep -E '^(ok|FAIL|---|panic)|^\s+--- |_test.go:'
	@$(call no-skips,build/test-integration.log)

test-e2e: images ## end-to-end on the local Kubernetes: install, check, demo traffic, Job, balancing, identity, mesh viz and its dashboard in Chromium, uninstall (root; brings the cluster up and down unless one runs)
	@if [ "$$(id -u)" -ne 0 ] && [ "$(MESH_REQUIRE_ROOT_TESTS)" = 1 ]; then \
		echo "test-e2e needs root (it runs a local Kubernetes): run 'sudo make test', or MESH_REQUIRE_ROOT_TESTS=0 to skip it" >&2; exit 1; fi
	@mkdir -p build
	cd test/e2e/dashboard && npm ci --no-audit --no-fund --loglevel=error
	@# Before the timed tests: a first build of Kubernetes takes ~11 minutes (640 s on 2 cores).
	$(GO) run ./hack/cluster prepare
	@# The cluster is shared with make soak, bench-mesh and bench-controller runs: one at a time.
	set -o pipefail; flock /tmp/mesh-e2e.lock $(GO) test -count=1 -timeout 55m -parallel 8 -v ./test/e2e/... 2>&1 | tee build/test-e2e.log | grep -E '^(ok|FAIL|---|panic|e2e|cluster)|^\s+--- |_test.go:'
	@$(call no-skips,build/test-e2e.log)

FUZZTIME ?= 30s
fuzz: ## run every native fuzz target for FUZZTIME each
	@for pkg in $$($(GO) list ./... ./testdata/demo/...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; done

bench: ## Go micro-benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

bench-proxy: build ## side-by-side HTTP benchmark: one hop (direct, mesh-proxy, nginx, haproxy), then the full mesh path against an nginx TLS pair; BENCH_PART=hop|meshpath (root)
	bash bench/proxy.sh

# BENCH_MTLS_FLAGS passes more go test flags, e.g. -count 10 or -benchtime 3s.
BENCH_MTLS_FLAGS ?= -count 5
.PHONY: bench-mtls
bench-mtls: ## mesh TLS between two in-process proxies vs plain text: handshakes/s per core, a request, a new connection
	$(GO) test -run '^$$' -bench '^BenchmarkMesh' -benchmem -cpu 1 $(BENCH_MTLS_FLAGS) ./proxy/

# BENCH_ROUTES_FLAGS passes more flags: --rounds, --duration, --warmup,
# --loads; see `go run ./bench/routes --help`.
BENCH_ROUTES_FLAGS ?=
.PHONY: bench-routes
bench-routes: build ## outbound routes' cost: CPU per request through mesh-proxy to a Service with 100 HTTPRoutes x 10 rules (by path, by header) vs none, alternating, and its ratio; BENCH_WRITE=1 updates docs/benchmarks.md (root)
	$(GO) run ./bench/routes --proxy $(BIN)/mesh-proxy $(if $(filter 1,$(BENCH_WRITE)),--write docs/benchmarks.md) $(BENCH_ROUTES_FLAGS)

# BENCH_CONTROLLER_FLAGS passes more flags: sizes (--services, --endpoints,
# --watchers, --changes), --namespace; see `go run ./bench/destination --help`.
BENCH_CONTROLLER_FLAGS ?=
.PHONY: bench-controller
bench-controller: build ## destination service at scale on the local cluster: 10k endpoints, 1k streams, propagation p50/p99, controller RSS; BENCH_WRITE=1 updates docs/benchmarks.md
	$(GO) run ./bench/destination --controller $(BIN)/mesh-controller $(if $(filter 1,$(BENCH_WRITE)),--write docs/benchmarks.md) $(BENCH_CONTROLLER_FLAGS)

# BENCH_VIZ_FLAGS passes more flags: --pods, --duration, --rps, --port,
# --prometheus; see `go run ./bench/viz --help`.
BENCH_VIZ_FLAGS ?=
.PHONY: bench-viz
bench-viz: ## mesh viz's scrapes of 200 proxies vs a Prometheus scraping the same, side by side for 5m: RSS, CPU, same totals; BENCH_WRITE=1 updates docs/benchmarks.md
	$(GO) run ./bench/viz $(if $(filter 1,$(BENCH_WRITE)),--write docs/benchmarks.md) $(BENCH_VIZ_FLAGS)

# BENCH_MESH_FLAGS passes more flags: --rates, --duration, --idle, --keep;
# see `go run ./bench/meshcost --help`. It needs the whole local cluster: on
# a shared machine run it under `flock /tmp/mesh-e2e.lock`.
BENCH_MESH_FLAGS ?=
.PHONY: bench-mesh
bench-mesh: images build ## what the mesh costs on the local cluster: a meshed vs an unmeshed client/server pair at 200 and 500 RPS (open loop): added p50/p99/p99.9, the two proxies' CPU per request, RSS idle and loaded; BENCH_WRITE=1 updates docs/benchmarks.md (root)
	$(GO) run ./bench/meshcost --mesh $(BIN)/mesh $(if $(filter 1,$(BENCH_WRITE)),--write docs/benchmarks.md) $(BENCH_MESH_FLAGS)

# SOAK_FLAGS passes more flags: --duration, --rps, --kill, --keep; see
# `go run ./bench/soak --help`. It needs the whole local cluster: on a
# shared machine run it under `flock /tmp/mesh-e2e.lock`.
SOAK_FLAGS ?=
.PHONY: soak
soak: images build ## reliability on the local cluster: 10 min at 1,000 RPS through the demo, then the controller and a server pod killed; failures, RSS and goroutine slopes; BENCH_WRITE=1 updates docs/benchmarks.md (root)
	$(GO) run ./bench/soak --mesh $(BIN)/mesh $(if $(filter 1,$(BENCH_WRITE)),--write docs/benchmarks.md) $(SOAK_FLAGS)

# staticcheck is pinned: a newer one brings new checks, which should land
# in a commit of their own, with their fixes.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint: ## gofmt, go vet, staticcheck; the cluster suite's files (-tags cluster) too
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags cluster ./... ./testdata/demo/...
	$(GO) run $(STATICCHECK) -tags cluster ./... ./testdata/demo/...
	@# test/conformance is a module of its own (the Gateway API suite's dependencies stay out of mesh's): ./... does not reach it.
	cd test/conformance && $(GO) vet ./... && $(GO) vet -tags conformance ./...
	cd test/conformance && $(GO) run $(STATICCHECK) -tags conformance ./...

dashboard: ## rebuild the viz dashboard's static assets (web/dashboard/dist, committed and embedded in mesh)
	cd web/dashboard && npm ci --no-audit --no-fund && npm run build

test-dashboard: ## the committed dashboard assets are what its sources build to (npm registry)
	@rm -rf build/dashboard-dist
	cd web/dashboard && npm ci --no-audit --no-fund --loglevel=error && npm run build -- --outDir ../../build/dashboard-dist --emptyOutDir
	@diff -r web/dashboard/dist build/dashboard-dist || { echo "web/dashboard/dist is stale: run make dashboard and commit it" >&2; exit 1; }

proto: ## regenerate the protobuf and gRPC code under api/
	bash hack/proto.sh

generate: ## regenerate the policy API's deepcopy code and its CRDs (install/manifests/crds) with controller-gen
	bash hack/generate.sh

test-generated: ## the committed deepcopy code and CRDs are what controller-gen makes of api/policy; the Gateway API CRDs are the go.mod version's
	@# Outside the module: Go files under build/ would join ./... and break go vet and test-unit.
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && bash hack/generate.sh "$$out" && \
		diff -u api/policy/v1alpha1/zz_generated.deepcopy.go "$$out/api/policy/v1alpha1/zz_generated.deepcopy.go" && \
		diff -ru install/manifests/crds "$$out/install/manifests/crds" && \
		diff -ru install/manifests/gatewayapi "$$out/install/manifests/gatewayapi" || \
		{ echo "the generated policy API files or the Gateway API CRDs are stale: run make generate and commit them" >&2; exit 1; }

# Images and the local cluster (install/image, install/cluster). The cluster
# targets need root; Kubernetes binaries are cached in /var/cache/mesh.
.PHONY: demo images cluster-up cluster-down cluster-status cluster-load-images test-cluster

demo: images build ## the quick start: local cluster, mesh install, the demo shop meshed and ready (root)
	bash hack/demo.sh

images: ## build static binaries and write one image tarball per image under build/images/: an OCI image index with linux/amd64 and linux/arm64 variants (IMAGE_ARCHES=amd64 for one); jaeger the host's only
	$(GO) run ./hack/images --out build/images --version $(VERSION) --ldflags '$(LDFLAGS)' $(if $(IMAGE_ARCHES),--arches $(IMAGE_ARCHES))

cluster-up: ## start the local single-node Kubernetes (root; first run builds Kubernetes, ~11 min (640 s) on 2 cores)
	$(GO) run ./hack/cluster up

cluster-down: ## stop the local cluster and remove everything it made (root)
	$(GO) run ./hack/cluster down

cluster-status: ## show which local-cluster components run
	$(GO) run ./hack/cluster status

cluster-load-images: ## import build/images/*.tar into the running local cluster (root)
	$(GO) run ./hack/cluster load-images

test-cluster: ## end-to-end check of the local cluster: node Ready, DNS, ClusterIP (root)
	$(GO) test -tags cluster -count=1 -timeout 30m -v ./install/cluster

clean:
	rm -rf $(BIN) build
