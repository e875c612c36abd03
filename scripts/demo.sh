#!/usr/bin/env bash
# make demo: the whole story on the committed digits data, no network:
# convert a Keras model into a bundle, train it with 2 worker processes and
# 1 parameter server, export it, batch-predict the held-out rows, check the
# exported SavedModel against Python TensorFlow, and serve it.
set -euo pipefail
cd "$(dirname "$0")/.."
gotflow=${1:-bin/gotflow}
py=${GOTFLOW_PYTHON:-.venv/bin/python}
out=build/demo
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
rm -rf "$out"
step() { printf '\n== %s\n' "$*"; }
quiet() { grep -v -e '^WARNING: All log messages' -e '^I0000' -e 'rebuild TensorFlow' -e 'To enable the following' || true; }

"$gotflow" version | sed -n 1,2p   # sed reads all of it: no SIGPIPE under pipefail

step "1. convert the Keras MLP of examples/digits/model.py into a bundle"
"$gotflow" convert keras examples/digits/model.py:mlp \
  --loss '{"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}}' \
  --metric accuracy -o "$out/bundle" 2>&1 | quiet | tail -n 1

step "2. train: 2 worker processes, 1 parameter server (hogwild, adam)"
"$gotflow" train --cluster processes --workers 2 --ps 1 --mode hogwild \
  --bundle "$out/bundle" --data examples/digits/digits.parquet --where split=train --label label=y \
  --optimizer adam --lr 3e-3 --epochs 30 --batch-size 32 --validation-split 0.1 --seed 7 \
  --model-dir "$out/run" --export "$out/model" 2>&1 | quiet | awk 'NR % 5 == 0 || /trained in/ || /^data:/'

step "3. batch-predict the held-out rows with the exported SavedModel"
"$gotflow" predict --model "$out/model/saved_model" --data examples/digits/digits.parquet \
  --output "$out/heldout.parquet" --where split=heldout --out-map output=logits --quiet 2>&1 | quiet
"$gotflow" evaluate --model "$out/model" --data examples/digits/digits.parquet --where split=heldout 2>&1 | quiet

step "4. accuracy, and the exported SavedModel in Python TensorFlow"
"$py" scripts/demo_check.py "$out/model/saved_model" "$out/heldout.parquet" logits label 2>&1 | quiet

step "5. serve it (gotflow serve, TF Serving's REST API) and ask it as a client would"
mkdir -p "$out/serve/digits"
ln -s "$PWD/$out/model/saved_model" "$out/serve/digits/1"
"$gotflow" serve --model_base_path "$out/serve/digits" --model_name digits --port 0 --rest_api_port 0 \
  >"$out/serve.out" 2>"$out/serve.err" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
deadline=$((SECONDS + 60))   # the server prints its addresses once the model is loaded
until grep -qs 'REST on' "$out/serve.out"; do
  if ! kill -0 "$server" 2>/dev/null || ((SECONDS > deadline)); then
    echo "gotflow serve did not come up within 60 s:" >&2; quiet <"$out/serve.err" >&2; exit 1
  fi
  sleep 0.1
done
addr=$(sed -n 's/.*REST on \([^ ,]*\).*/\1/p' "$out/serve.out")
# All held-out rows in one request: the same single batch predict ran, so
# the answers are bit for bit the same.
"$py" scripts/demo_serve.py "$addr" digits "$out/heldout.parquet" logits 360 2>&1 | quiet
kill -TERM "$server"
wait "$server"   # drains, then exits 0
trap - EXIT
echo "gotflow serve drained and stopped"
