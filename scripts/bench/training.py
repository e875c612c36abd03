"""Python side of `make bench`'s training benchmark (bench/training).

Prepares the digits data and bundle both sides train on, then trains the
same Keras model with model.fit on the same rows, batch size, epochs and
thread settings, and prints one JSON object: Keras' examples/s per epoch
(timed by a callback: rows over the median epoch time, first epoch excluded
as warm-up) and its held-out
accuracy after training.

    python scripts/bench/training.py --out DIR --epochs N --batch-size B --threads T
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "examples", "digits"))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

LOSS = '{"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}}'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--rows", type=int, default=60000, help="cnn: synthetic training rows (held-out: a sixth of that)")
    ap.add_argument("--prepare", action="store_true", help="write the data and bundle only; no training")
    a = ap.parse_args()

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    import keras
    import model as digits_model
    from converter import bundle, keras_source

    os.makedirs(a.out, exist_ok=True)
    if a.model == "cnn":
        return train_cnn(a, tf, keras, bundle, keras_source)
    table = pq.read_table(os.path.join(ROOT, "examples", "digits", "digits.parquet"))
    train = table.filter(pc.equal(table["split"], "train")).drop_columns(["split"])
    held = table.filter(pc.equal(table["split"], "heldout")).drop_columns(["split"])
    pq.write_table(train, os.path.join(a.out, "train.parquet"))
    pq.write_table(held, os.path.join(a.out, "heldout.parquet"))
    bundle.write(keras_source.convert(digits_model.mlp(), loss=LOSS, metrics=["accuracy"]),
                 os.path.join(a.out, "bundle"), overwrite=True)

    def arrays(t):
        x = np.asarray(t["pixels"].combine_chunks().flatten(), np.float32).reshape(-1, 64)
        return x, np.asarray(t["label"], np.int32)

    x, y = arrays(train)
    xh, yh = arrays(held)
    m = digits_model.mlp()
    m.compile(optimizer=keras.optimizers.Adam(a.lr),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    m.fit(x, y, batch_size=a.batch_size, epochs=a.epochs, shuffle=True, verbose=0, callbacks=[timer])
    steady = sorted(timer.times[1:] or timer.times)
    acc = float(np.mean(np.argmax(m(xh, training=False).numpy(), -1) == yh))
    json.dump({"examples_per_sec": len(x) / steady[len(steady) // 2], "epoch_seconds": timer.times,
               "heldout_accuracy": acc, "train_rows": len(x), "heldout_rows": len(xh),
               "tensorflow": tf.__version__, "keras": keras.__version__}, sys.stdout)
    print()


def cnn():
    """Two conv layers and a dense head on 28x28x1 images fed as 784 floats."""
    import keras
    keras.utils.set_random_seed(2024)
    return keras.Sequential([
        keras.Input((784,), name="pixels"),
        keras.layers.Reshape((28, 28, 1), name="image"),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(64, activation="relu", name="hidden"),
        keras.layers.Dense(10, name="logits"),
    ], name="cnn")


def synthetic_images(n, seed):
    """n 28x28 images of 10 classes: a class prototype (a few random
    strokes, fixed by seed 7) shifted by up to 2 pixels, scaled, plus noise."""
    import pyarrow as pa
    protos = np.zeros((10, 28, 28), np.float32)
    prng = np.random.default_rng(7)
    for c in range(10):
        for _ in range(4):
            r0, c0 = prng.integers(4, 20, 2)
            if prng.random() < 0.5:
                protos[c, r0, c0:c0 + 8] = 1
            else:
                protos[c, r0:r0 + 8, c0] = 1
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.int32)
    x = np.empty((n, 28, 28), np.float32)
    shifts = rng.integers(-2, 3, (n, 2))
    for i in range(n):
        x[i] = np.roll(protos[y[i]], tuple(shifts[i]), axis=(0, 1))
    x *= rng.uniform(0.5, 1.5, (n, 1, 1)).astype(np.float32)
    x += rng.normal(0, 0.3, x.shape).astype(np.float32)
    flat = pa.array(x.reshape(-1), pa.float32())
    return pa.table({"pixels": pa.FixedSizeListArray.from_arrays(flat, 784), "label": pa.array(y)}), x.reshape(n, 784), y


def train_cnn(a, tf, keras, bundle, keras_source):
    train, x, y = synthetic_images(a.rows, 1)
    held, xh, yh = synthetic_images(max(a.rows // 6, 1000), 2)
    pq.write_table(train, os.path.join(a.out, "train.parquet"), row_group_size=8192)
    pq.write_table(held, os.path.join(a.out, "heldout.parquet"))
    bundle.write(keras_source.convert(cnn(), loss=LOSS, metrics=["accuracy"]), os.path.join(a.out, "bundle"), overwrite=True)
    if a.prepare:
        json.dump({"train_rows": len(x), "heldout_rows": len(xh)}, sys.stdout)
        print()
        return
    m = cnn()
    m.compile(optimizer=keras.optimizers.Adam(a.lr),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    m.fit(x, y, batch_size=a.batch_size, epochs=a.epochs, shuffle=True, verbose=0, callbacks=[Timer()])
    steady = sorted(times[1:] or times)
    acc = float(np.mean(np.argmax(m.predict(xh, batch_size=1024, verbose=0), -1) == yh))
    json.dump({"examples_per_sec": len(x) / steady[len(steady) // 2], "epoch_seconds": times,
               "heldout_accuracy": acc, "train_rows": len(x), "heldout_rows": len(xh),
               "threads": a.threads, "tensorflow": tf.__version__, "keras": keras.__version__}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
