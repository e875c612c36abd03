#!/usr/bin/env bash
# Regenerates distributed/distpb from its .proto. Needs protoc
# (apt-get install protobuf-compiler); the Go plugins are module tools.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
PATH="$bin:$PATH" protoc -I distributed/distpb \
	--go_out=distributed/distpb --go_opt=paths=source_relative \
	--go-grpc_out=distributed/distpb --go-grpc_opt=paths=source_relative \
	distributed/distpb/coordinator.proto
