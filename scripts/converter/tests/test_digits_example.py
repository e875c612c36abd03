"""The digits example trains to >= 95 % held-out accuracy through its
bundles: gradients from train.pb, Adam in numpy, accuracy from infer.pb."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from converter import bundle, keras_source, runbundle, specs, tf1_source

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DIGITS = os.path.join(ROOT, "examples", "digits")
SCE = '{"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}}'


def load():
    t = pq.read_table(os.path.join(DIGITS, "digits.parquet"))
    x = np.stack(t.column("pixels").to_numpy(zero_copy_only=False)).astype(np.float32)
    y = t.column("label").to_numpy().astype(np.int32)
    train = np.array(t.column("split").to_pylist()) == "train"
    return x[train], y[train], x[~train], y[~train]


def train(b, x, y, epochs=12, batch=32, lr=3e-3):
    m = b.manifest
    w = {k: v.copy() for k, v in b.weights.items()}
    mom = {k: np.zeros_like(v) for k, v in w.items()}
    vel = {k: np.zeros_like(v) for k, v in w.items()}
    rng = np.random.RandomState(0)
    step = 0
    in_name, lab_name = m["inputs"][0]["name"], m["labels"][0]["name"]
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch):
            idx = order[i:i + batch]
            r = b.train_step({in_name: x[idx]}, {lab_name: y[idx]}, weights=w)
            step += 1
            for v in m["variables"]:
                n = v["name"]
                if v.get("gradient"):
                    g = r["grad/" + n]
                    mom[n] = 0.9 * mom[n] + 0.1 * g
                    vel[n] = 0.999 * vel[n] + 0.001 * g * g
                    mh = mom[n] / (1 - 0.9 ** step)
                    vh = vel[n] / (1 - 0.999 ** step)
                    w[n] = (w[n] - lr * mh / (np.sqrt(vh) + 1e-7)).astype(w[n].dtype)
                elif v.get("update"):
                    w[n] = r["update/" + n]
    return w


@pytest.mark.parametrize("source", ["keras", "tf1"])
def test_digits_bundle_trains(tmp_path, source):
    if source == "keras":
        model = keras_source.load_model(os.path.join(DIGITS, "model.py") + ":mlp")
        parts = keras_source.convert(model, loss=SCE, metrics=["accuracy"],
                                     label_specs=[specs.parse_spec("label:int32:-1")])
        assert [t.name for t in parts.inputs] == ["pixels"]
    else:
        parts = tf1_source.convert(os.path.join(DIGITS, "graph.py") + ":build_graph")
    out = str(tmp_path / "digits")
    bundle.write(parts, out)
    b = runbundle.LoadedBundle(out)
    xtr, ytr, xte, yte = load()
    assert len(ytr) == 1437 and len(yte) == 360
    w = train(b, xtr, ytr)
    out_name = b.manifest["outputs"][0]["name"]
    logits = b.infer({b.manifest["inputs"][0]["name"]: xte}, weights=w)[out_name]
    acc = float(np.mean(np.argmax(logits, 1) == yte))
    assert acc >= 0.95, f"held-out accuracy {acc:.3f}"
