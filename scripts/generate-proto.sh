#!/usr/bin/env bash
# Regenerates the committed protobuf code — ps/pspb (ps.proto),
# internal/control/distpb (coordinator.proto) and serving/tfserving/tfservingpb
# (TF Serving's protos under serving/tfserving/proto) — with the protoc
# plugins pinned in go.mod. With --check, generates into a temporary
# directory and exits non-zero if a committed file differs (or, for
# tfservingpb, if a committed file has no counterpart).
set -euo pipefail
cd "$(dirname "$0")/.."

protos=(ps/pspb/ps.proto internal/control/distpb/coordinator.proto)

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

# TF Serving's protos import TensorFlow's. Those are compiled against the
# descriptors graft's Go packages register (exported by tfdescriptors, with
# the Go package of each file), so the generated code links to graft's
# types and its descriptors resolve at init.
module=github.com/gotflow/gotflow
src=serving/tfserving/proto
dir=serving/tfserving/tfservingpb
go run ./serving/tfserving/internal/tfdescriptors -out "$bin/tf.pb" -m "$bin/tf-go-packages.txt"
mapfile -t tfsfiles < <(cd "$src" && find tensorflow_serving -name '*.proto' | LC_ALL=C sort)
opts=()
while IFS= read -r m; do
	opts+=("--go_opt=M$m" "--go-grpc_opt=M$m")
done <"$bin/tf-go-packages.txt"
for f in "${tfsfiles[@]}"; do
	opts+=("--go_opt=M$f=$module/$dir" "--go-grpc_opt=M$f=$module/$dir")
done
PATH="$bin:$PATH" protoc --descriptor_set_in="$bin/tf.pb" -I "$src" \
	--go_out="$out" --go_opt=module="$module" \
	--go-grpc_out="$out" --go-grpc_opt=module="$module" \
	"${opts[@]}" "${tfsfiles[@]}"
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
	for f in "$dir"/*.pb.go; do
		if [[ -e "$f" && ! -e "$out/$dir/$(basename "$f")" ]]; then
			echo "generate-proto: $f has no .proto any more; run scripts/generate-proto.sh" >&2
			status=1
		fi
	done
else
	mkdir -p "$dir"
	rm -f "$dir"/*.pb.go
	cp "$out/$dir"/*.go "$dir/"
	echo "generate-proto: wrote $dir"
fi

# KServe's Open Inference Protocol: a copy of KServe's
# docs/predict-api/v2/grpc_predict_v2.proto (which names no Go package)
# into serving/kserve/inferencepb.
kproto=serving/kserve/proto/grpc_predict_v2.proto
kdir=serving/kserve/inferencepb
kmap="Mgrpc_predict_v2.proto=github.com/gotflow/gotflow/$kdir;inferencepb"
mkdir -p "$out/$kdir"
PATH="$bin:$PATH" protoc -I "$(dirname "$kproto")" \
	--go_out="$out/$kdir" --go_opt=paths=source_relative --go_opt="$kmap" \
	--go-grpc_out="$out/$kdir" --go-grpc_opt=paths=source_relative --go-grpc_opt="$kmap" \
	"$kproto"
for f in "$out/$kdir"/*.go; do
	sed -i '/^\/\/ \tprotoc  *v/d; /^\/\/ - protoc  *v/d' "$f"
done
if [[ "${1:-}" == "--check" ]]; then
	for f in "$out/$kdir"/*.go; do
		if ! cmp -s "$f" "$kdir/$(basename "$f")"; then
			echo "generate-proto: $kdir/$(basename "$f") is stale; run scripts/generate-proto.sh" >&2
			status=1
		fi
	done
else
	cp "$out/$kdir"/*.go "$kdir/"
	echo "generate-proto: wrote $kdir"
fi
exit $status
