#!/usr/bin/env bash
# Regenerates ps/pspb from ps/pspb/ps.proto with the protoc plugins pinned in
# go.mod. With --check, generates into a temporary directory and exits
# non-zero if the committed files differ.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null; then
	echo "generate-proto: protoc not found (apt-get install -y protobuf-compiler)" >&2
	exit 1
fi

bin=$(mktemp -d)
out=$(mktemp -d)
trap 'rm -rf "$bin" "$out"' EXIT
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc

PATH="$bin:$PATH" protoc -I ps/pspb \
	--go_out="$out" --go_opt=paths=source_relative \
	--go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
	ps/pspb/ps.proto

# The protoc version line differs between installs; drop it so the check
# compares only what the .proto determines.
for f in "$out"/*.go; do
	sed -i '/^\/\/ \tprotoc  *v/d; /^\/\/ - protoc  *v/d' "$f"
done

if [[ "${1:-}" == "--check" ]]; then
	status=0
	for f in "$out"/*.go; do
		name=$(basename "$f")
		if ! cmp -s "$f" "ps/pspb/$name"; then
			echo "generate-proto: ps/pspb/$name is stale; run scripts/generate-proto.sh" >&2
			status=1
		fi
	done
	exit $status
fi
cp "$out"/*.go ps/pspb/
echo "generate-proto: wrote ps/pspb"
