"""Evaluation fixture for estimator's Evaluate test: the CNN bundle of
loader/testdata/bundles/cnn (batch-norm and dropout) on random data, and
what Keras' model.evaluate reports for it with the bundle's weights, where
dropout is off and batch-norm uses its moving statistics.

Writes eval/data.arrow (x: fixed_size_list<float32>[72], a 6x6x2 image per
row; y: int32), eval/val.arrow (its last fifth, the rows Fit holds out with
ValidationSplit 0.2) and eval/expected.json: the loss and accuracy of
model.evaluate with batches of 16 (the last one partial), which equal the
loss and accuracy of model(x, training=False) over all rows. Run from the
repository root:
    .venv/bin/python estimator/testdata/gen_eval.py
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "loader", "testdata"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import keras  # noqa: E402

import models  # noqa: E402
from converter import safetensors  # noqa: E402

OUT = os.path.join(HERE, "eval")
BUNDLE = os.path.join(ROOT, "loader", "testdata", "bundles", "cnn")
ROWS, BATCH = 50, 16


def bundle_model():
    """models.cnn() with the bundle's initial weights (trainable, then
    non-trainable variables, in the manifest's order)."""
    model = models.cnn()
    with open(os.path.join(BUNDLE, "manifest.json")) as f:
        names = [v["name"] for v in json.load(f)["variables"]]
    with open(os.path.join(BUNDLE, "weights.safetensors"), "rb") as f:
        init = safetensors.loads(f.read())
    for v, name in zip(model.trainable_variables + model.non_trainable_variables, names):
        assert tuple(v.shape) == init[name].shape, (name, v.shape, init[name].shape)
        v.assign(init[name])
    return model


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.RandomState(31)
    x = rng.randn(ROWS, 6, 6, 2).astype(np.float32)
    y = rng.randint(0, 3, ROWS).astype(np.int32)
    table = pa.table({
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), 72),
        "y": pa.array(y, pa.int32()),
    })
    with pa.OSFile(os.path.join(OUT, "data.arrow"), "wb") as f:
        with pa.ipc.new_file(f, table.schema) as w:
            w.write_table(table, max_chunksize=20)
    # The rows Fit holds out with ValidationSplit 0.2: the last fifth.
    with pa.OSFile(os.path.join(OUT, "val.arrow"), "wb") as f:
        with pa.ipc.new_file(f, table.schema) as w:
            w.write_table(table.slice(ROWS - ROWS // 5))

    model = bundle_model()
    lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss=lf, metrics=["accuracy"])
    ev = model.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
    pred = model(x, training=False).numpy()
    loss = float(lf(y, pred))
    acc = float(np.mean(np.argmax(pred, -1) == y))
    assert abs(ev["loss"] - loss) <= 1e-5 * abs(loss), (ev["loss"], loss)
    assert abs(ev["accuracy"] - acc) <= 1e-6, (ev["accuracy"], acc)
    exp = {
        "format": "gotflow.eval-expected/v1",
        "rows": ROWS, "batch_size": BATCH,
        "evaluate": {"loss": float(ev["loss"]), "accuracy": float(ev["accuracy"])},
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
        f.write("\n")
    print("wrote", OUT, exp["evaluate"])


if __name__ == "__main__":
    main()
