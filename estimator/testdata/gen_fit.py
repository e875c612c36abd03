"""Training parity fixtures for estimator's Fit tests.

Trains the Keras MLP of loader/testdata/bundles/mlp (same model, same initial
weights) with exactly the batches gotflow's Fit uses when shuffling is off,
and records the predictions model(x, training=False) after training
(and, for sgd_1worker, the loss and accuracy over all rows):

- sgd_1worker: one worker, SGD(0.1), batches of 16 in order, 2 epochs;
- sync_2workers: two workers in Sync mode: worker 0 trains on rows 0-47,
  worker 1 on rows 48-95, and each step applies the mean of their two
  gradients with SGD(0.1), 2 epochs;
- adam_1worker: one worker, Adam(0.01), batches of 16, 3 epochs;
- sgd_1worker_overlap: as sgd_1worker with OverlapPush (train_delayed).

Writes fit/data.arrow (x: fixed_size_list<float32>[6], y: int32) and
fit/expected.json. Run from the repository root:
    .venv/bin/python estimator/testdata/gen_fit.py
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
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import models  # noqa: E402
from converter import safetensors  # noqa: E402

OUT = os.path.join(HERE, "fit")
BUNDLE = os.path.join(ROOT, "loader", "testdata", "bundles", "mlp")
ROWS, BATCH = 96, 16


def fresh_model():
    model = models.mlp()
    with open(os.path.join(BUNDLE, "manifest.json")) as f:
        names = [v["name"] for v in json.load(f)["variables"]]
    with open(os.path.join(BUNDLE, "weights.safetensors"), "rb") as f:
        init = safetensors.loads(f.read())
    for v, name in zip(model.trainable_variables, names):
        want = init[name]
        assert v.shape == want.shape, (name, v.shape, want.shape)
        v.assign(want)
    return model


def grads_of(model, x, y):
    lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = lf(y, model(x, training=True))
        if model.losses:
            loss = loss + tf.add_n(model.losses)
    return tape.gradient(loss, model.trainable_variables)


def train(x, y, optimizer, epochs, workers, model=None):
    model = model or fresh_model()
    per = ROWS // workers
    for _ in range(epochs):
        for lo in range(0, per, BATCH):
            gs = [grads_of(model, x[w * per + lo:w * per + lo + BATCH], y[w * per + lo:w * per + lo + BATCH])
                  for w in range(workers)]
            mean = [tf.add_n(list(g)) / workers for g in zip(*gs)]
            optimizer.apply_gradients(zip(mean, model.trainable_variables))
    return model(x, training=False).numpy()


def train_delayed(x, y, lr, epochs):
    """One worker with OverlapPush and a pull every step: step k of an epoch
    computes on the weights after k-1 updates (the push of step k-1 is still
    in flight); the pipeline drains at the end of each epoch."""
    model = fresh_model()
    opt = keras.optimizers.SGD(lr)
    for _ in range(epochs):
        history = [model.get_weights()]
        for k, lo in enumerate(range(0, ROWS, BATCH)):
            current = model.get_weights()
            model.set_weights(history[max(k - 1, 0)])
            g = grads_of(model, x[lo:lo + BATCH], y[lo:lo + BATCH])
            model.set_weights(current)
            opt.apply_gradients(zip(g, model.trainable_variables))
            history.append(model.get_weights())
    return model(x, training=False).numpy()


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.RandomState(11)
    x = rng.randn(ROWS, 6).astype(np.float32)
    y = (np.argmax(x[:, :3], axis=1)).astype(np.int32)
    table = pa.table({
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), 6),
        "y": pa.array(y, pa.int32()),
    })
    with pa.OSFile(os.path.join(OUT, "data.arrow"), "wb") as f:
        with pa.ipc.new_file(f, table.schema) as w:
            w.write_table(table, max_chunksize=40)  # several record batches
    sgd_model = fresh_model()
    sgd_pred = train(x, y, keras.optimizers.SGD(0.1), 2, 1, sgd_model)
    lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    eval_loss = float(lf(y, sgd_model(x, training=False)) + tf.add_n(sgd_model.losses))
    eval_acc = float(np.mean(np.argmax(sgd_pred, -1) == y))
    exp = {
        "format": "gotflow.fit-expected/v1",
        "rows": ROWS, "batch_size": BATCH,
        "initial": fresh_model()(x, training=False).numpy().reshape(-1).tolist(),
        "sgd_1worker": sgd_pred.reshape(-1).tolist(),
        "sgd_1worker_eval": {"loss": eval_loss, "accuracy": eval_acc},
        "sync_2workers": train(x, y, keras.optimizers.SGD(0.1), 2, 2).reshape(-1).tolist(),
        "adam_1worker": train(x, y, keras.optimizers.Adam(0.01), 3, 1).reshape(-1).tolist(),
        "sgd_1worker_overlap": train_delayed(x, y, 0.1, 2).reshape(-1).tolist(),
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(exp, f)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
