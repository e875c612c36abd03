#!/usr/bin/env bash
# Regenerates distributed/distpb from distributed/distpb/coordinator.proto
# with the protoc plugins pinned in go.mod. With --check, generates into a
# temporary directory and exits non-zero if the committed files differ.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null; then
	echo "generate-distpb: protoc not found (apt-get install -y protobuf-compiler)" >&2
	exit 1
fi

bin=$(mktemp -d)
out=$(mktemp -d)
trap 'rm -rf "$bin" "$out"' EXIT
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc

PATH="$bin:$PATH" protoc -I distributed/distpb \
	--go_out="$out" --go_opt=paths=source_relative \
	--go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
	distributed/distpb/coordinator.proto

# Drop the protoc version line, which differs between installs.
for f in "$out"/*.go; do
	sed -i '/^\/\/ \tprotoc  *v/d; /^\/\/ - protoc  *v/d' "$f"
done

if [[ "${1:-}" == "--check" ]]; then
	status=0
	for f in "$out"/*.go; do
		name=$(basename "$f")
		if ! cmp -s "$f" "distributed/distpb/$name"; then
			echo "generate-distpb: distributed/distpb/$name is stale; run scripts/generate-distpb.sh" >&2
			status=1
		fi
	done
	exit $status
fi
cp "$out"/*.go distributed/distpb/
echo "generate-distpb: wrote distributed/distpb"
