#!/usr/bin/env bash
# `make demo`: the quick start in one command. Brings up the local cluster
# (or reuses it), imports the images `make images` built, installs the mesh
# with bin/mesh, deploys the demo shop into its annotated namespace, waits
# until every pod is ready and says where to look next. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${VERSION:-$(cat VERSION)}
step() { printf '\n==> %s\n' "$*"; }

step "local Kubernetes (a first run builds it: about 11 minutes on 2 cores, progress below)"
# Built once rather than `go run` three times; a first run compiles the
# Kubernetes client libraries it uses, which takes a while on its own.
echo "compiling hack/cluster into build/cluster (a first run: up to a minute)"
mkdir -p build
go build -o build/cluster ./hack/cluster
build/cluster up
build/cluster load-images
eval "$(build/cluster env)"

step "mesh install"
bin/mesh install
bin/mesh check

step "demo shop in namespace demo (annotated mesh.dev/inject=enabled)"
# The manifests name the image by the repo's VERSION; follow an override.
sed -E "s#(ghcr\.io/mesh-dev/mesh-demo):[^[:space:]\"]+#\1:${version}#" testdata/demo/k8s/demo.yaml | kubectl apply -f -
for d in web catalog orders payments loadgen; do
	kubectl -n demo rollout status "deployment/$d" --timeout=5m
done
kubectl -n demo get pods

cat <<MSG

The demo runs: loadgen sends traffic to web, which calls catalog (gRPC) and
orders (HTTP/2), which calls payments (plain TCP). Every pod is 2/2: the app
and its mesh-proxy.

    export KUBECONFIG=$KUBECONFIG
    export PATH=$(dirname "$(command -v kubectl)"):\$PATH

    kubectl -n demo get pods -o wide
    kubectl -n demo logs deploy/loadgen                       # successes per 10 s
    kubectl get --raw "/api/v1/namespaces/demo/pods/\$(kubectl -n demo get pod -l app.kubernetes.io/name=web -o name | cut -d/ -f2):4191/proxy/metrics" | grep mesh_proxy_http_requests_total
    kubectl apply -f testdata/demo/k8s/job.yaml && kubectl -n demo wait --for=condition=complete job/loadgen-once
    bin/mesh check                                            # control plane and data-plane proxies
    bin/mesh viz stat deploy -n demo                          # success, RPS, latency, after a minute of traffic
    bin/mesh viz edges -n demo                                # who talks to whom, with SPIFFE IDs
    bin/mesh viz tap deploy/web -n demo                       # live requests (Ctrl-C ends it)
    bin/mesh viz dashboard                                    # the same in a browser, on 127.0.0.1:50750

Tear down: bin/mesh uninstall; make cluster-down
MSG
