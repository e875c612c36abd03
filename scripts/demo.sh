#!/usr/bin/env bash
# make demo: the main job on committed data, no network needed.
set -euo pipefail
cd "$(dirname "$0")/.."
gotflow=${1:-bin/gotflow}
"$gotflow" version
echo
echo "== batch inference on a frozen MLP (scripts/fixtures/mlp_frozen)"
go run ./examples/quickstart
