#!/usr/bin/env python3
"""Builds the `gotflow predict` example: a small Keras classifier trained on
the iris data set (bundled with scikit-learn, no download), exported as a
SavedModel, the data as Parquet, and the predictions Python TF makes for it.

    .venv/bin/python examples/predict/make_model.py

writes, next to this file:
    model/          SavedModel (serving_default: four float32 [?,1] inputs
                    sepal_length, sepal_width, petal_length, petal_width ->
                    output_0 float32 [?,3], the class probabilities)
    iris.parquet    150 rows: the four measurements (float32) and species
    expected.json   {"probs": [[p0, p1, p2], ...]} Python TF's output per row
"""

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main():
    keras.utils.set_random_seed(7)
    iris = load_iris()
    x = iris.data.astype(np.float32)
    y = iris.target.astype(np.int32)
    species = [str(iris.target_names[i]) for i in y]

    inputs = [keras.Input(shape=(1,), name=n) for n in FEATURES]
    h = keras.layers.Concatenate()(inputs)
    h = keras.layers.Normalization(mean=x.mean(0), variance=x.var(0))(h)
    h = keras.layers.Dense(16, activation="relu")(h)
    out = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inputs, out)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    feed = {n: x[:, i:i + 1] for i, n in enumerate(FEATURES)}
    model.fit(feed, y, epochs=60, batch_size=16, verbose=0, shuffle=True)
    _, acc = model.evaluate(feed, y, verbose=0)

    mdir = os.path.join(HERE, "model")
    if os.path.isdir(mdir):
        shutil.rmtree(mdir)
    model.export(mdir, format="tf_saved_model", verbose=False)

    table = pa.table({**{n: pa.array(x[:, i], pa.float32()) for i, n in enumerate(FEATURES)},
                      "species": pa.array(species, pa.string())})
    pq.write_table(table, os.path.join(HERE, "iris.parquet"))

    fn = tf.saved_model.load(mdir).signatures["serving_default"]
    probs = fn(**{n: tf.constant(v) for n, v in feed.items()})["output_0"].numpy()
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump({"format": "gotflow.example-expected/v1", "accuracy": float(acc),
                   "probs": [[float(v) for v in row] for row in probs]}, f, indent=0)
        f.write("\n")
    print("training accuracy %.3f; wrote %s" % (acc, os.path.relpath(HERE)))


if __name__ == "__main__":
    main()
