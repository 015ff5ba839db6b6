#!/usr/bin/env bash
# Regenerates the Go code for every .proto under api/ with protoc (Debian's
# protobuf-compiler) and the pinned Go plugins. Generated files are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.2
mapfile -t protos < <(find api -name '*.proto' 2>/dev/null | sort)
if [ ${#protos[@]} -eq 0 ]; then
	echo "proto: no .proto files under api/; nothing to generate"
	exit 0
fi
command -v protoc >/dev/null || { echo "proto: protoc missing: apt-get install protobuf-compiler" >&2; exit 1; }
gobin=$(go env GOPATH)/bin
go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"
PATH="$gobin:$PATH" protoc -I api \
	--go_out=api --go_opt=paths=source_relative \
	--go-grpc_out=api --go-grpc_opt=paths=source_relative \
	"${protos[@]}"
echo "proto: generated ${#protos[@]} file(s)"
