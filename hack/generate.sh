#!/usr/bin/env bash
# Regenerates what controller-tools makes of the Kubernetes API types under
# api/policy: the deepcopy functions (zz_generated.deepcopy.go beside the
# types) and the CustomResourceDefinitions mesh install applies
# (install/manifests/crds). Generated files are committed.
#
#   hack/generate.sh          # in place (make generate)
#   hack/generate.sh DIR      # into DIR, at the same relative paths, for
#                             # the drift check (make test-generated)
#
# controller-gen is pinned and run with `go run pkg@version`, so it needs
# no install and does not touch go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."
CONTROLLER_GEN="sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0"
API=api/policy/v1alpha1
CRDS=install/manifests/crds

out=${1:-.}
mkdir -p "$out/$API" "$out/$CRDS"
# Every CRD comes from the types: a kind removed from them goes from here.
rm -f "$out/$CRDS"/*.yaml

go run "$CONTROLLER_GEN" \
	object paths="./$API/..." output:object:dir="$out/$API" \
	crd:crdVersions=v1 output:crd:dir="$out/$CRDS"
echo "generate: $(find "$out/$API" -name 'zz_generated.*.go' | wc -l) deepcopy file(s), $(find "$out/$CRDS" -name '*.yaml' | wc -l) CRD(s) under ${out}"
