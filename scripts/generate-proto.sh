#!/usr/bin/env bash
# Regenerates the committed protobuf code — ps/pspb (ps.proto) and
# distributed/distpb (coordinator.proto) — with the protoc plugins pinned in
# go.mod. With --check, generates into a temporary directory and exits
# non-zero if a committed file differs.
set -euo pipefail
cd "$(dirname "$0")/.."

protos=(ps/pspb/ps.proto distributed/distpb/coordinator.proto)

if ! command -v protoc >/dev/null; then
	echo "generate-proto: protoc not found (apt-get install -y protobuf-compiler)" >&2
	exit 1
fi

bin=$(mktemp -d)
out=$(mktemp -d)
trap 'rm -rf "$bin" "$out"' EXIT
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc

status=0
for proto in "${protos[@]}"; do
	dir=$(dirname "$proto")
	mkdir -p "$out/$dir"
	PATH="$bin:$PATH" protoc -I "$dir" \
		--go_out="$out/$dir" --go_opt=paths=source_relative \
		--go-grpc_out="$out/$dir" --go-grpc_opt=paths=source_relative \
		"$proto"
	# The protoc version line differs between installs; drop it so the check
	# compares only what the .proto determines.
	for f in "$out/$dir"/*.go; do
		sed -i '/^\/\/ \tprotoc  *v/d; /^\/\/ - protoc  *v/d' "$f"
	done
	if [[ "${1:-}" == "--check" ]]; then
		for f in "$out/$dir"/*.go; do
			name=$(basename "$f")
			if ! cmp -s "$f" "$dir/$name"; then
				echo "generate-proto: $dir/$name is stale; run scripts/generate-proto.sh" >&2
				status=1
			fi
		done
	else
		cp "$out/$dir"/*.go "$dir/"
		echo "generate-proto: wrote $dir"
	fi
done
exit $status
