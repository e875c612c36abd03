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
    a = ap.parse_args()

    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    import keras
    import model as digits_model
    from converter import bundle, keras_source

    os.makedirs(a.out, exist_ok=True)
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


if __name__ == "__main__":
    main()
