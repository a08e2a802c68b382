#!/usr/bin/env bash
# Regenerates proto/*.pb.go from proto/*.proto.
# Needs protoc (Debian: protobuf-compiler) and the Go plugins, installed here
# at the versions the committed code was generated with.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler" >&2; exit 1; }
go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
protoc --go_out=. --go_opt=paths=source_relative \
  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
  proto/*.proto
echo "generated: $(ls proto/*.go | tr '\n' ' ')"
