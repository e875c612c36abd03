import json
import os

import numpy as np
import pytest
import tensorflow as tf
import keras

from converter import __main__ as cli
from converter import bundle, keras_source, runbundle, safetensors, savedmodel_source, specs, tf1_source
from converter.errors import ConversionError

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models.py")
SCE = '{"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}}'

RTOL = 1e-5


def close(got, want, what):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    # Relative error per tensor: max |got - want| / max |want| (an entry
    # that is zero up to rounding, like the gradient of a bias that
    # batch-norm cancels, is measured against the tensor's scale).
    if not got.size:
        return
    err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)
    assert err <= RTOL, f"{what}: relative error {err:.3g}"


def test_safetensors_roundtrip():
    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array([3, -4], np.int64),
         "b": np.array(True)}
    data = safetensors.dumps(a, metadata={"k": "v"})
    n = int.from_bytes(data[:8], "little")
    assert (8 + n) % 8 == 0
    header = json.loads(data[8:8 + n])
    assert header["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    back = safetensors.loads(data)
    for k in a:
        np.testing.assert_array_equal(back[k], a[k])
    with pytest.raises(ConversionError, match="header length"):
        safetensors.loads(data[:20])


def test_parse_spec():
    s = specs.parse_spec("x:float32:-1,64")
    assert (s.name, s.dtype, s.shape) == ("x", "float32", [-1, 64])
    assert specs.parse_spec("y:int:[?]").shape == [-1]
    assert specs.parse_spec("x:0").dtype is None
    with pytest.raises(ConversionError, match="unknown dtype"):
        specs.parse_spec("x:flaot:3")
    with pytest.raises(ConversionError, match="bad dimension"):
        specs.parse_spec("x:float32:a,3")


def _batch(shape, n=5, classes=3, seed=0):
    r = np.random.RandomState(seed)
    return r.randn(n, *shape).astype(np.float32), r.randint(0, classes, n).astype(np.int32)


def test_keras_mlp_parity(tmp_path):
    import models
    model = models.mlp()
    parts = keras_source.convert(model, loss=SCE, metrics=["accuracy"])
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    x, y = _batch((6,))
    want_out = model(x, training=False).numpy()
    r = b.train_step({"x": x}, {"y": y})
    lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        pred = model(x, training=True)
        loss = lf(y, pred) + tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    close(r["loss"], loss.numpy(), "loss")
    for v, g in zip(model.trainable_variables, grads):
        close(r["grad/" + bundle.op_name(v.path)], g.numpy(), v.path)
    acc = np.mean(np.argmax(pred.numpy(), 1) == y)
    close(r["metric/accuracy"], acc, "accuracy")
    close(b.infer({"x": x})["output"], want_out, "infer output")
    m = b.manifest
    assert m["format"] == "gotflow.bundle/v1"
    assert [v["trainable"] for v in m["variables"]] == [True] * 4
    assert m["inputs"] == [{"name": "x", "tensor": "input/x:0", "dtype": "float32", "shape": [-1, 6]}]
    assert m["labels"] == [{"name": "y", "tensor": "label/y:0", "dtype": "int32", "shape": [-1]}]


def test_keras_cnn_batchnorm_dropout_parity(tmp_path):
    import models
    model = models.cnn()
    parts = keras_source.convert(model, loss=SCE)
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    x, y = _batch((6, 6, 1), n=4)
    want_out = model(x, training=False).numpy()
    close(b.infer({"x": x})["output"], want_out, "infer output")
    r = b.train_step({"x": x}, {"y": y})
    lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = lf(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    close(r["loss"], loss.numpy(), "loss")
    for v, g in zip(model.trainable_variables, grads):
        close(r["grad/" + bundle.op_name(v.path)], g.numpy(), v.path)
    # The eager step updated batch-norm statistics and the dropout seed.
    updates = {v["name"]: v.get("update") for v in b.manifest["variables"] if not v["trainable"]}
    assert len(updates) == 3 and all(updates.values()), updates
    assert list(updates)[2] == "cnn/dropout/seed_generator_state"
    for name, v in zip(updates, model.non_trainable_variables):
        close(r["update/" + name], v.numpy(), name)
    ops = {n.op for n in parts.infer_graph.node}
    assert not ops & {"StatelessRandomUniformV2", "RandomUniform"}, "dropout must be off in infer.pb"


def test_keras_file_uses_compiled_loss(tmp_path):
    import models
    model = models.mlp()
    model.compile(loss="sparse_categorical_crossentropy")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras_source.load_model(path)
    parts = keras_source.convert(loaded)
    assert parts.loss.name == "sparse_categorical_crossentropy"
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    x, y = _batch((6,))
    r = b.train_step({"x": x}, {"y": y})
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(y, model(x, training=True)) + tf.add_n(model.losses)
    close(r["loss"], loss.numpy(), "loss")


def test_tf1_graph_function_parity(tmp_path):
    import models
    parts = tf1_source.convert(models.tf1_graph, inputs=["x:0"], labels=["y:0"])
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    x, y = _batch((5,))
    r = b.train_step({"x": x}, {"y": y})
    # Reference: the same graph function run with its variables in a session.
    g = tf.Graph()
    with g.as_default():
        d = models.tf1_graph(training=True)
        tv = tf.compat.v1.trainable_variables()
        grads = tf.compat.v1.gradients(d["loss"], tv)
        with tf.compat.v1.Session() as s:
            s.run(tf.compat.v1.global_variables_initializer())
            want = s.run({"loss": d["loss"], "grads": grads, "logits": d["outputs"]["logits"],
                          "vals": {v.op.name: v for v in tv}}, {"x:0": x, "y:0": y})
    for name, val in want["vals"].items():
        np.testing.assert_array_equal(b.weights[name], val)
    close(r["loss"], want["loss"], "loss")
    for v, gr in zip(tv, want["grads"]):
        close(r["grad/" + v.op.name], gr, v.op.name)
    close(b.infer({"x": x})["logits"], want["logits"], "logits")
    assert b.manifest["inputs"][0]["tensor"] == "x:0"


def test_savedmodel_finetune(tmp_path):
    import models
    model = models.mlp()
    sm = str(tmp_path / "sm")
    model.export(sm, verbose=False)
    parts = savedmodel_source.convert(sm, loss=SCE)
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    x, y = _batch((6,))
    inp = b.manifest["inputs"][0]["name"]
    out = b.infer({inp: x})
    close(list(out.values())[0], model(x, training=False).numpy(), "infer output")
    r = b.train_step({inp: x}, {"y": y})
    lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = lf(y, model(x, training=False))
    grads = tape.gradient(loss, model.trainable_variables)
    close(r["loss"], loss.numpy(), "loss")
    got = sorted(k for k in r if k.startswith("grad/"))
    assert len(got) == 4
    for v, gr in zip(model.trainable_variables, grads):
        close(r["grad/" + bundle.op_name(v.path)], gr.numpy(), v.path)


def test_unsupported_layer_named():
    import models
    with pytest.raises(ConversionError, match=r"layer 'doubler'.*EagerPyFunc"):
        keras_source.convert(models.with_py_function(), loss=SCE)


def test_untracked_variable_named():
    import models
    with pytest.raises(ConversionError, match=r"layer 'rawvar'.*add_weight"):
        keras_source.convert(models.with_raw_variable(), loss="mse")


def test_nonscalar_loss_rejected():
    import models
    with pytest.raises(ConversionError, match=r"must return a scalar"):
        keras_source.convert(models.mlp(), loss=MODELS + ":per_sample_loss",
                             label_specs=[specs.parse_spec("y:float32:-1,3")])
    with pytest.raises(ConversionError, match=r"must be a scalar"):
        tf1_source.convert(MODELS + ":tf1_bad_loss", inputs=["x:0"])


def test_unknown_loss_and_metric():
    import models
    with pytest.raises(ConversionError, match="unknown Keras loss 'nope'"):
        keras_source.convert(models.mlp(), loss="nope")
    with pytest.raises(ConversionError, match="unknown Keras metric 'nope'"):
        keras_source.convert(models.mlp(), loss="mse", metrics=["nope"])


def test_cli_writes_bundle_atomically(tmp_path, capsys):
    out = str(tmp_path / "b")
    rc = cli.main(["keras", MODELS + ":mlp", "--loss", SCE, "--metric", "accuracy", "-o", out])
    assert rc == 0
    assert sorted(os.listdir(out)) == ["eval.pb", "infer.pb", "manifest.json", "train.pb", "weights.safetensors"]
    # Existing output without --force: refused, bundle untouched.
    rc = cli.main(["keras", MODELS + ":mlp", "--loss", SCE, "-o", out])
    assert rc == 1
    assert "exists" in capsys.readouterr().err
    # A failing conversion leaves nothing behind.
    bad = str(tmp_path / "bad")
    rc = cli.main(["keras", MODELS + ":with_py_function", "--loss", SCE, "-o", bad])
    assert rc == 1
    assert "doubler" in capsys.readouterr().err
    assert not os.path.exists(bad)
    assert [p for p in os.listdir(tmp_path) if ".tmp-" in p] == []
    rc = cli.main(["tf1", MODELS + ":tf1_graph", "--input", "x:0", "--label", "y:0", "-o", out, "--force"])
    assert rc == 0
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["producer"]["source"] == "tf1"


def test_manifests_match_schema(tmp_path):
    import jsonschema
    import models
    schema_path = os.path.join(HERE, "..", "..", "..", "loader", "schema", "bundle-v1.schema.json")
    with open(schema_path) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    for name, parts in [
        ("cnn", keras_source.convert(models.cnn(), loss=SCE, metrics=["accuracy"])),
        ("tf1", tf1_source.convert(models.tf1_graph, inputs=["x:0"], labels=["y:0"])),
    ]:
        m = parts.manifest()
        assert m["eval_graph"] == "eval.pb"
        jsonschema.validate(m, schema)
        old = json.loads(json.dumps(m))
        del old["eval_graph"]  # bundles written before eval.pb stay valid
        jsonschema.validate(old, schema)
        for bad_file in ("", "sub/eval.pb"):
            bad = json.loads(json.dumps(m))
            bad["eval_graph"] = bad_file
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(bad, schema)
        bad = json.loads(json.dumps(m))
        bad["variables"][0].pop("gradient")
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_keras_two_inputs(tmp_path):
    import models
    model = models.two_inputs()
    parts = keras_source.convert(model, loss="mse")
    assert [t.name for t in parts.inputs] == ["a", "b"]
    assert parts.labels[0].shape == [-1, 2] and parts.labels[0].dtype == "float32"
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    r = np.random.RandomState(1)
    a, bb, y = r.randn(4, 3).astype(np.float32), r.randn(4, 2).astype(np.float32), r.randn(4, 2).astype(np.float32)
    got = b.train_step({"a": a, "b": bb}, {"y": y})
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model([a, bb], training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    close(got["loss"], loss.numpy(), "loss")
    for v, g in zip(model.trainable_variables, grads):
        close(got["grad/" + bundle.op_name(v.path)], g.numpy(), v.path)
    close(b.infer({"a": a, "b": bb})["output"], model([a, bb], training=False).numpy(), "output")


def test_tf1_random_at_inference_rejected():
    import models
    with pytest.raises(ConversionError, match=r"(?s)infer.pb.*RandomUniform.*random numbers at inference.*`training` argument"):
        tf1_source.convert(models.tf1_dropout_at_inference, inputs=["x:0"], labels=["y:0"])


def test_subclassed_model_needs_input_spec(tmp_path):
    import models
    with pytest.raises(ConversionError, match="does not declare its inputs: pass --input"):
        keras_source.convert(models.subclassed(), loss="mse")
    model = models.subclassed()
    parts = keras_source.convert(model, loss="mse", input_specs=[specs.parse_spec("features:float32:-1,3")])
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    x = np.random.RandomState(2).randn(4, 3).astype(np.float32)
    y = np.random.RandomState(3).randn(4, 2).astype(np.float32)
    got = b.train_step({"features": x}, {"y": y})
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    close(got["loss"], loss.numpy(), "loss")
    assert len(grads) == 4
    for v, g in zip(parts.variables, grads):
        close(got["grad/" + v.name], g.numpy(), v.name)


def _keras_evaluate(model, x, y, loss=SCE, metrics=("accuracy",)):
    """Keras' own model.evaluate on one batch: [loss, *metrics]."""
    model.compile(loss=keras.losses.get(json.loads(loss)) if loss.startswith("{") else loss, metrics=list(metrics))
    out = model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    return out


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_keras_eval_graph_matches_evaluate(tmp_path, name):
    import models
    model = getattr(models, name)()
    parts = keras_source.convert(model, loss=SCE, metrics=["accuracy"])
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    assert b.manifest["eval_graph"] == "eval.pb"
    x, y = _batch((6,) if name == "mlp" else (6, 6, 1), n=6, seed=4)
    got = b.eval_step({"x": x}, {"y": y})
    assert sorted(got) == ["loss", "metric/accuracy"]
    # The definition: loss on model(x, training=False) plus the
    # regularization losses, accuracy on the same outputs.
    lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pred = model(x, training=False)
    want = lf(y, pred)
    if model.losses:
        want = want + tf.add_n(model.losses)
    close(got["loss"], want.numpy(), "eval loss")
    close(got["metric/accuracy"], np.mean(np.argmax(pred.numpy(), 1) == y), "eval accuracy")
    # And what Keras' model.evaluate reports for the batch.
    ev = _keras_evaluate(model, x, y)
    close(got["loss"], ev["loss"], "eval loss vs model.evaluate")
    close(got["metric/accuracy"], ev["accuracy"], "eval accuracy vs model.evaluate")
    ops = {n.op for n in parts.eval_graph.node}
    assert not ops & {"StatelessRandomUniformV2", "RandomUniform"}, "dropout must be off in eval.pb"
    names = {n.name for n in parts.eval_graph.node}
    assert not any(n.startswith(("grad/", "update/")) for n in names), "eval.pb computes no gradients or updates"
    if name == "cnn":
        # Dropout and batch-norm make the training step's loss differ.
        train_loss = b.train_step({"x": x}, {"y": y})["loss"]
        assert abs(train_loss - got["loss"]) > 1e-3, (train_loss, got["loss"])
        assert "var/cnn/dropout/seed_generator_state" not in names


def test_tf1_eval_graph_uses_training_false(tmp_path):
    import models
    parts = tf1_source.convert(models.tf1_dropout_training, inputs=["x:0"], labels=["y:0"])
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    x, y = _batch((5,), n=8, seed=6)
    got = b.eval_step({"x": x}, {"y": y})
    g = tf.Graph()
    with g.as_default():
        d = models.tf1_dropout_training(training=False)
        with tf.compat.v1.Session() as s:
            s.run(tf.compat.v1.global_variables_initializer())
            want = s.run({"loss": d["loss"], "acc": d["metrics"]["accuracy"]}, {"x:0": x, "y:0": y})
    close(got["loss"], want["loss"], "eval loss")
    close(got["metric/accuracy"], want["acc"], "eval accuracy")
    train_loss = b.train_step({"x": x}, {"y": y})["loss"]
    assert abs(train_loss - got["loss"]) > 1e-3, "train.pb runs dropout, eval.pb does not"
    assert not {n.op for n in parts.eval_graph.node} & {"RandomUniform"}


def test_tf1_eval_graph_without_training_argument(tmp_path):
    import models
    parts = tf1_source.convert(models.tf1_no_training_arg, inputs=["x:0"], labels=["y:0"])
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    x, y = _batch((5,), n=6, seed=7)
    got = b.eval_step({"x": x}, {"y": y})
    r = b.train_step({"x": x}, {"y": y})
    close(got["loss"], r["loss"], "eval loss equals the training graph's loss")
    close(got["metric/accuracy"], r["metric/accuracy"], "eval accuracy")
    assert not any(n.name.startswith("grad/") for n in parts.eval_graph.node)


def test_savedmodel_eval_graph(tmp_path):
    import models
    model = models.mlp()
    sm = str(tmp_path / "sm")
    model.export(sm, verbose=False)
    parts = savedmodel_source.convert(sm, loss=SCE, metrics=["accuracy"])
    bundle.write(parts, str(tmp_path / "b"))
    b = runbundle.LoadedBundle(str(tmp_path / "b"))
    x, y = _batch((6,), seed=8)
    inp = b.manifest["inputs"][0]["name"]
    got = b.eval_step({inp: x}, {"y": y})
    pred = model(x, training=False)
    lf = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    close(got["loss"], lf(y, pred).numpy(), "eval loss")
    close(got["metric/accuracy"], np.mean(np.argmax(pred.numpy(), 1) == y), "eval accuracy")


def test_eval_graph_with_unfed_placeholder_rejected():
    import models
    parts = keras_source.convert(models.mlp(), loss=SCE)
    node = parts.eval_graph.node.add()
    node.name = "stray"
    node.op = "Placeholder"
    node.attr["dtype"].type = tf.float32.as_datatype_enum
    with pytest.raises(ConversionError, match=r"eval.pb: placeholder 'stray' is neither"):
        bundle.validate(parts)
    parts = keras_source.convert(models.mlp(), loss=SCE)
    loss = [n for n in parts.eval_graph.node if n.name == "loss"][0]
    loss.name = "not_loss"
    with pytest.raises(ConversionError, match=r"eval.pb: tensor 'loss:0' not found"):
        bundle.validate(parts)
