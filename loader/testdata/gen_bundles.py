"""Write the bundle fixtures of loader's tests and what Python TF computed.

For each model: bundles/<name>/ (written by the converter) and
bundles/<name>.expected.json holding one batch, the loss, every gradient,
the metrics and the state updates that Python computed with
tf.GradientTape (tf.gradients in a session for the TF1 graph function) on
the bundle's initial weights, the model's inference outputs
(model(x, training=False)), and under "eval" the loss and metrics that
Keras' model.evaluate reports for the batch: the loss on
model(x, training=False) plus the regularization losses, and the metrics
on the same outputs (for the TF1 graph function, which has no training
argument, its one graph's loss and metrics).

Run from the repository root:
    .venv/bin/python loader/testdata/gen_bundles.py
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import models  # noqa: E402
import tempfile  # noqa: E402

from converter import bundle, keras_source, savedmodel_source, tf1_source  # noqa: E402

SCE = '{"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}}'
OUT = os.path.join(HERE, "bundles")


def arr(a):
    a = np.asarray(a)
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.reshape(-1).tolist()}


def write_expected(name, exp):
    exp["format"] = "gotflow.bundle-expected/v1"
    with open(os.path.join(OUT, name + ".expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
        f.write("\n")


def keras_fixture(name, model, x, y):
    parts = keras_source.convert(model, loss=SCE, metrics=["accuracy"])
    bundle.write(parts, os.path.join(OUT, name), overwrite=True)
    # parts.variables lists the trainable then the non-trainable variables
    # in the model's order, under the bundle's names.
    names = {id(v): pv.name for v, pv in zip(model.trainable_variables + model.non_trainable_variables,
                                                parts.variables)}
    infer = model(x, training=False).numpy()
    lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    eval_loss = lf(y, infer)
    if model.losses:
        eval_loss = eval_loss + tf.add_n(model.losses)
    eval_acc = np.mean(np.argmax(infer, -1) == y).astype(np.float32)
    with tf.GradientTape() as tape:
        pred = model(x, training=True)  # updates batch-norm statistics and the seed
        loss = lf(y, pred)
        if model.losses:
            loss = loss + tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    acc = np.mean(np.argmax(pred.numpy(), -1) == y).astype(np.float32)
    write_expected(name, {
        "inputs": {"x": arr(x)},
        "labels": {"y": arr(y)},
        "loss": float(loss.numpy()),
        "gradients": {names[id(v)]: arr(g.numpy()) for v, g in zip(model.trainable_variables, grads)},
        "metrics": {"accuracy": float(acc)},
        "updates": {names[id(v)]: arr(v.numpy()) for v in model.non_trainable_variables},
        "outputs": {"output": arr(infer)},
        "eval": {"loss": float(eval_loss.numpy()), "metrics": {"accuracy": float(eval_acc)}},
    })


def tf1_fixture(name, x, y):
    parts = tf1_source.convert(models.tf1_graph)
    bundle.write(parts, os.path.join(OUT, name), overwrite=True)
    g = tf.Graph()
    with g.as_default():
        d = models.tf1_graph()
        tv = tf.compat.v1.trainable_variables()
        grads = tf.compat.v1.gradients(d["loss"], tv)
        with tf.compat.v1.Session() as s:
            s.run(tf.compat.v1.global_variables_initializer())
            r = s.run({"loss": d["loss"], "grads": grads, "acc": d["metrics"]["accuracy"],
                       "logits": d["outputs"]["logits"], "probs": d["outputs"]["probs"]},
                      {"x:0": x, "y:0": y})
    write_expected(name, {
        "inputs": {"x": arr(x)},
        "labels": {"y": arr(y)},
        "loss": float(r["loss"]),
        "gradients": {v.op.name: arr(gr) for v, gr in zip(tv, r["grads"])},
        "metrics": {"accuracy": float(r["acc"])},
        "updates": {},
        "outputs": {"logits": arr(r["logits"]), "probs": arr(r["probs"])},
        "eval": {"loss": float(r["loss"]), "metrics": {"accuracy": float(r["acc"])}},
    })


def finetune_fixture(name, model, x, y):
    """A SavedModel converted for fine-tuning: the serving graph, so the
    reference runs the model with training=False (batch-norm frozen)."""
    with tempfile.TemporaryDirectory() as d:
        model.export(os.path.join(d, "sm"), verbose=False)
        parts = savedmodel_source.convert(os.path.join(d, "sm"), loss=SCE, metrics=["accuracy"])
    bundle.write(parts, os.path.join(OUT, name), overwrite=True)
    lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        pred = model(x, training=False)
        loss = lf(y, pred)
    grads = tape.gradient(loss, model.trainable_variables)
    acc = np.mean(np.argmax(pred.numpy(), -1) == y).astype(np.float32)
    out_name = parts.outputs[0].name
    write_expected(name, {
        "inputs": {"features": arr(x)},
        "labels": {"y": arr(y)},
        "loss": float(loss.numpy()),
        "gradients": {bundle.op_name(v.path): arr(g.numpy()) for v, g in zip(model.trainable_variables, grads)},
        "metrics": {"accuracy": float(acc)},
        "updates": {},
        "outputs": {out_name: arr(pred.numpy())},
        "eval": {"loss": float(loss.numpy()), "metrics": {"accuracy": float(acc)}},
    })


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.RandomState(5)
    x = rng.randn(7, 6).astype(np.float32)
    y = rng.randint(0, 3, 7).astype(np.int32)
    keras_fixture("mlp", models.mlp(), x, y)
    xc = rng.randn(5, 6, 6, 2).astype(np.float32)
    yc = rng.randint(0, 3, 5).astype(np.int32)
    keras_fixture("cnn", models.cnn(), xc, yc)
    tf1_fixture("tf1", x, y)
    base = models.finetune_base()
    base(x, training=True)  # move the batch-norm statistics off their initial values
    finetune_fixture("finetune", base, x, y)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
