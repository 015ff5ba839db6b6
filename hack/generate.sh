#!/usr/bin/env bash
# Regenerates what controller-tools makes of the Kubernetes API types under
# api/policy: the deepcopy functions (zz_generated.deepcopy.go beside the
# types) and the CustomResourceDefinitions mesh install applies
# (install/manifests/crds); and copies the Gateway API CRDs mesh install
# applies from the sigs.k8s.io/gateway-api module go.mod requires
# (install/manifests/gatewayapi). Generated files are committed.
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

# The Gateway API's standard channel, byte for byte as the module ships it:
# its bundle-version annotation is what install, check and the conformance
# suite compare. Only the kinds a mesh serves (GAMMA, GEP-1294): HTTPRoute
# and GRPCRoute with a Service as parent, all the MESH-HTTP and MESH-GRPC
# conformance profiles use. Not ReferenceGrant: GEP-1294 lets a mesh
# route's backendRefs cross namespaces without one, as a route reaches no
# Service its client could not call directly. Not Gateway, GatewayClass,
# ListenerSet, BackendTLSPolicy nor the TCP/TLS/UDP routes: they belong to
# north-south gateways or to opaque routing mesh does not implement;
# installing them would advertise APIs nothing serves and claim CRDs a
# gateway's installer expects to own. Nor the safe-upgrades
# ValidatingAdmissionPolicy: it governs every write of the group
# cluster-wide, and install already never downgrades.
GATEWAY_API=install/manifests/gatewayapi
GATEWAY_API_KINDS="httproutes grpcroutes"
module=$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)
if [ -z "$module" ]; then
	echo "generate: sigs.k8s.io/gateway-api is not in go.mod" >&2
	exit 1
fi
mkdir -p "$out/$GATEWAY_API"
rm -f "$out/$GATEWAY_API"/*.yaml
for kind in $GATEWAY_API_KINDS; do
	install -m 0644 "$module/config/crd/standard/gateway.networking.k8s.io_$kind.yaml" "$out/$GATEWAY_API/"
done

echo "generate: $(find "$out/$API" -name 'zz_generated.*.go' | wc -l) deepcopy file(s), $(find "$out/$CRDS" -name '*.yaml' | wc -l) CRD(s), $(find "$out/$GATEWAY_API" -name '*.yaml' | wc -l) Gateway API CRD(s) of $(go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api) under ${out}"
