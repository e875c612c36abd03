"""Keras 3 models -> bundle parts.

The training step is traced as a pure function of (trainable weights,
non-trainable state, inputs, labels) with ``model.stateless_call`` and
``tf.GradientTape`` inside a ``tf.function``; variables never enter the
graph, so freezing leaves one Placeholder per weight. The evaluation
graph is traced the same way with training=False and no gradients.
"""

import json
import re

import numpy as np

from . import bundle
from .bundle import Tensor, Variable, op_name, shape_list
from .errors import ConversionError
from .specs import load_callable

# Ops that cannot live in a bundle graph, with the reason.
_FORBIDDEN = {
    "PyFunc": "calls back into Python (tf.py_function / tf.numpy_function)",
    "PyFuncStateless": "calls back into Python (tf.py_function / tf.numpy_function)",
    "EagerPyFunc": "calls back into Python (tf.py_function / tf.numpy_function)",
    "VarHandleOp": "reads a variable that Keras does not track",
    "ReadVariableOp": "reads a variable that Keras does not track",
    "AssignVariableOp": "assigns a variable inside the step",
    "AssignAddVariableOp": "assigns a variable inside the step",
    "AssignSubVariableOp": "assigns a variable inside the step",
    "HashTableV2": "uses a lookup table resource",
    "MutableHashTableV2": "uses a lookup table resource",
}
_STATEFUL_RANDOM = {
    "RandomUniform", "RandomStandardNormal", "TruncatedNormal", "RandomUniformInt",
    "RandomShuffle", "Multinomial", "RandomGamma", "RandomPoisson", "RandomPoissonV2",
}


def load_model(ref, custom_objects=None):
    """Load a model from a .keras file or module.py:function."""
    import keras
    if ref.endswith(".keras") or ref.endswith(".h5"):
        try:
            return keras.models.load_model(ref, custom_objects=custom_objects, compile=True)
        except Exception as e:  # keras raises many types here
            raise ConversionError(f"cannot load Keras model {ref!r}: {e}") from None
    fn = load_callable(ref, "model function")
    try:
        model = fn()
    except Exception as e:
        raise ConversionError(f"model function {ref!r} failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, keras.Model):
        raise ConversionError(f"model function {ref!r} returned {type(model).__name__}, expected a keras.Model")
    return model


def resolve_loss(loss, model=None):
    """Return (callable, name). Keras names and configs are reduced to the
    batch mean like compile() does; user functions must return a scalar."""
    import keras
    if loss is None and model is not None and getattr(model, "loss", None) is not None:
        loss = model.loss
    if loss is None:
        raise ConversionError("no loss: pass --loss (a Keras loss name, a JSON config, or module.py:function)")
    if isinstance(loss, keras.losses.Loss):
        return loss, loss.name
    if callable(loss):
        return loss, getattr(loss, "__name__", "loss")
    if isinstance(loss, str) and loss.lstrip().startswith("{"):
        try:
            obj = keras.losses.get(json.loads(loss))
        except Exception as e:
            raise ConversionError(f"bad loss config {loss!r}: {e}") from None
        return obj, getattr(obj, "name", "loss")
    if isinstance(loss, str) and ":" in loss:
        fn = load_callable(loss, "loss")
        if isinstance(fn, type) and issubclass(fn, keras.losses.Loss):
            fn = fn()
        return fn, getattr(fn, "__name__", getattr(fn, "name", "loss"))
    try:
        obj = keras.losses.get(loss)
    except Exception as e:
        raise ConversionError(f"unknown Keras loss {loss!r}: {e}") from None
    if obj is None:
        raise ConversionError(f"unknown Keras loss {loss!r}")
    if not isinstance(obj, keras.losses.Loss):
        obj = _mean_loss(obj, loss)
    return obj, loss


def _mean_loss(fn, name):
    """Wrap a per-sample Keras loss function in a Loss reducing to the
    batch mean, as Model.compile does."""
    import keras

    class _BatchMean(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return fn(y_true, y_pred)

    return _BatchMean(name=name)


def resolve_metric(name, loss_name):
    """Return (stateful Keras metric or plain function, name)."""
    import keras
    if ":" in name:
        fn = load_callable(name, "metric")
        return fn, name.rpartition(":")[2]
    if name in ("accuracy", "acc"):
        ln = (loss_name or "").lower().replace("_", "")
        if "sparsecategorical" in ln:
            return keras.metrics.SparseCategoricalAccuracy(name="accuracy"), "accuracy"
        if "categorical" in ln:
            return keras.metrics.CategoricalAccuracy(name="accuracy"), "accuracy"
        if "binary" in ln:
            return keras.metrics.BinaryAccuracy(name="accuracy"), "accuracy"
        return keras.metrics.Accuracy(name="accuracy"), "accuracy"
    try:
        obj = keras.metrics.get(name)
    except Exception as e:
        raise ConversionError(f"unknown Keras metric {name!r}: {e}") from None
    return obj, name


def _seed_state_names(model):
    """Map id(state variable) -> "<model>/<layer>/seed_generator_state" for
    the seed generators of layers (Dropout, noise layers), whose own paths
    depend on how many generators the process created before."""
    import keras
    out = {}
    for layer in model._flatten_layers(include_self=False):
        for attr, val in vars(layer).items():
            if isinstance(val, keras.random.SeedGenerator):
                suffix = "seed_generator_state" if attr in ("seed_generator", "_seed_generator") else attr + "_state"
                out[id(val.state)] = f"{model.name}/{layer.name}/{suffix}"
    return out


def _unique_names(variables, renamed=None):
    names, seen = [], {}
    renamed = renamed or {}
    for v in variables:
        base = op_name(renamed.get(id(v)) or getattr(v, "path", None) or v.name)
        n = base
        k = seen.get(base, 0)
        while n in seen:
            k += 1
            n = f"{base}_{k}"
        seen[base] = k
        seen[n] = 0
        names.append(n)
    return names


def _input_specs(model, input_specs):
    import tensorflow as tf
    if input_specs:
        out = []
        for s in input_specs:
            if s.dtype is None:
                raise ConversionError(f"input spec {s.name!r} needs a dtype and shape (name:dtype:shape)")
            out.append((op_name(s.name), tf.TensorSpec([None if d == -1 else d for d in s.shape], s.dtype)))
        return out
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ConversionError(
            f"model {model.name!r} does not declare its inputs: pass --input name:dtype:shape")
    names = [op_name(t.name) for t in inputs]
    if len(inputs) == 1 and _auto_name(inputs[0].name):
        names = ["x"]
    return [(n, tf.TensorSpec(t.shape, t.dtype)) for n, t in zip(names, inputs)]


def _auto_name(name):
    """Whether Keras generated the name (keras_tensor_3, input_layer_1)."""
    return re.match(r"^(keras_tensor|input_layer|input)(_\d+)?$", name) is not None


def _label_specs(label_specs, output_specs, loss_name):
    import tensorflow as tf
    if label_specs:
        out = []
        for s in label_specs:
            if s.dtype is None:
                raise ConversionError(f"label spec {s.name!r} needs a dtype and shape (name:dtype:shape)")
            out.append((op_name(s.name), tf.TensorSpec([None if d == -1 else d for d in s.shape], s.dtype)))
        return out
    sparse = "sparse" in (loss_name or "").lower()
    out = []
    for i, (_, spec) in enumerate(output_specs):
        name = "y" if len(output_specs) == 1 else f"y_{i}"
        if sparse:
            out.append((name, tf.TensorSpec(spec.shape[:-1], tf.int32)))
        else:
            out.append((name, tf.TensorSpec(spec.shape, spec.dtype)))
    return out


def _structure(tensors):
    return tensors[0] if len(tensors) == 1 else list(tensors)


def _flat_outputs(y):
    import tensorflow as tf
    if isinstance(y, dict):
        return list(y.keys()), [y[k] for k in y]
    if isinstance(y, (list, tuple)):
        return None, list(y)
    return None, [tf.convert_to_tensor(y)]


def convert(model, loss=None, metrics=(), input_specs=None, label_specs=None,
            output_names=None, source="keras"):
    """Convert a Keras 3 model to bundle.Parts."""
    import tensorflow as tf
    import keras

    loss_fn, loss_name = resolve_loss(loss, model)
    metric_objs = [resolve_metric(m, loss_name) for m in metrics]
    metric_init = [[np.asarray(keras.ops.convert_to_numpy(v.value)) for v in getattr(m, "variables", [])]
                   if isinstance(m, keras.metrics.Metric) else None for m, _ in metric_objs]
    in_specs = _input_specs(model, input_specs)
    if not model.built:
        model(_structure([tf.zeros([1 if d is None else d for d in s.shape], s.dtype) for _, s in in_specs]))
    _check_untracked_variables(model)

    tvars = list(model.trainable_variables)
    nvars = list(model.non_trainable_variables)
    names = _unique_names(tvars + nvars, _seed_state_names(model))
    tnames, nnames = names[:len(tvars)], names[len(tvars):]
    tspecs = [tf.TensorSpec(v.shape, v.dtype) for v in tvars]
    nspecs = [tf.TensorSpec(v.shape, v.dtype) for v in nvars]
    nt, nn, ni = len(tspecs), len(nspecs), len(in_specs)

    # Infer graph: (weights, inputs) -> outputs, training=False.
    def infer_fn(*args):
        tv, nv, xs = list(args[:nt]), list(args[nt:nt + nn]), list(args[nt + nn:])
        y, _ = model.stateless_call(tv, nv, _structure(xs), **_training_kw(model, False))
        keys, ys = _flat_outputs(y)
        infer_fn.keys = keys
        return ys

    infer_cf = _trace(infer_fn, tspecs + nspecs + [s for _, s in in_specs], model)
    n_out = len(infer_cf.outputs)
    keys = infer_fn.keys
    if output_names:
        if len(output_names) != n_out:
            raise ConversionError(f"--output-names has {len(output_names)} names, model has {n_out} outputs")
        out_names = [op_name(n) for n in output_names]
    elif keys:
        out_names = [op_name(str(k)) for k in keys]
    elif n_out == 1:
        out_names = ["output"]
    else:
        out_names = [op_name(t.node.operation.name) if hasattr(t, "node") else f"output_{i}"
                     for i, t in enumerate(getattr(model, "outputs", None) or [None] * n_out)]
        if len(set(out_names)) != n_out:
            out_names = [f"output_{i}" for i in range(n_out)]
    out_specs = [(n, tf.TensorSpec(t.shape, t.dtype)) for n, t in zip(out_names, infer_cf.outputs)]
    lab_specs = _label_specs(label_specs, out_specs, loss_name)
    nl = len(lab_specs)

    # Train graph: (weights, state, inputs, labels) -> loss, grads, metrics, state.
    def train_fn(*args):
        tv = list(args[:nt])
        nv = list(args[nt:nt + nn])
        xs = list(args[nt + nn:nt + nn + ni])
        ys = list(args[nt + nn + ni:])
        with tf.GradientTape() as tape:
            tape.watch(tv)
            y_pred, new_nv, losses = model.stateless_call(
                tv, nv, _structure(xs), return_losses=True, **_training_kw(model, True))
            loss_v = loss_fn(_structure(ys), y_pred)
            loss_v = tf.convert_to_tensor(loss_v)
            if loss_v.shape.rank != 0:
                raise ConversionError(
                    f"loss {loss_name!r} must return a scalar, got shape {loss_v.shape} "
                    "(reduce it, e.g. with tf.reduce_mean)")
            data_loss = loss_v
            if losses:
                loss_v = loss_v + tf.add_n([tf.cast(l, loss_v.dtype) for l in losses])
        grads = tape.gradient(loss_v, tv)
        missing = [tnames[i] for i, g in enumerate(grads) if g is None]
        train_fn.unconnected = missing
        grads = [tf.zeros_like(t) if g is None else tf.convert_to_tensor(g) for t, g in zip(tv, grads)]
        mvals = []
        for (m, mname), init in zip(metric_objs, metric_init):
            mvals.append(_metric_value(m, init, _structure(ys), y_pred))
        updated = []
        for i, (old, new) in enumerate(zip(nv, new_nv)):
            updated.append(new is not old)
        train_fn.updated = updated
        del data_loss
        return [loss_v] + grads + mvals + [tf.convert_to_tensor(v) for v in new_nv]

    train_cf = _trace(train_fn, tspecs + nspecs + [s for _, s in in_specs] + [s for _, s in lab_specs], model)

    # Eval graph: (weights, state, inputs, labels) -> loss, metrics, with
    # training=False, as model.evaluate computes them.
    def eval_fn(*args):
        tv = list(args[:nt])
        nv = list(args[nt:nt + nn])
        xs = list(args[nt + nn:nt + nn + ni])
        ys = list(args[nt + nn + ni:])
        y_pred, _, losses = model.stateless_call(
            tv, nv, _structure(xs), return_losses=True, **_training_kw(model, False))
        loss_v = tf.convert_to_tensor(loss_fn(_structure(ys), y_pred))
        if losses:
            loss_v = loss_v + tf.add_n([tf.cast(l, loss_v.dtype) for l in losses])
        mvals = [_metric_value(m, init, _structure(ys), y_pred) for (m, _), init in zip(metric_objs, metric_init)]
        return [loss_v] + mvals

    eval_cf = _trace(eval_fn, tspecs + nspecs + [s for _, s in in_specs] + [s for _, s in lab_specs], model)
    notes = []
    if train_fn.unconnected:
        notes.append("no gradient path from the loss to " + ", ".join(train_fn.unconnected) + "; their gradients are zeros")

    # Name the graphs' placeholders and outputs.
    var_ph = ["var/" + n for n in tnames + nnames]
    in_ph = ["input/" + n for n, _ in in_specs]
    lab_ph = ["label/" + n for n, _ in lab_specs]
    infer_gd = _name_graph(infer_cf, var_ph + in_ph, ["output/" + n for n in out_names])
    train_out = (["loss"] + ["grad/" + n for n in tnames] + ["metric/" + n for _, n in metric_objs]
                 + ["update/" + n for n in nnames])
    train_gd = _name_graph(train_cf, var_ph + in_ph + lab_ph, train_out)
    eval_gd = _name_graph(eval_cf, var_ph + in_ph + lab_ph, ["loss"] + ["metric/" + n for _, n in metric_objs])
    # Weights that training=False does not read (a dropout layer's seed)
    # need no feed.
    read = {bundle.node_of(i) for n in eval_gd.node for i in n.input}
    _drop_nodes(eval_gd, {n.name for n in eval_gd.node
                          if n.op == "Placeholder" and n.name.startswith("var/") and n.name not in read})
    _check_ops(train_gd, "train.pb", model, allow_random=True)
    _check_ops(infer_gd, "infer.pb", model, allow_random=False)
    _check_ops(eval_gd, "eval.pb", model, allow_random=False)

    variables = []
    for i, v in enumerate(tvars + nvars):
        trainable = i < nt
        name = names[i]
        val = np.asarray(keras.ops.convert_to_numpy(v.value))
        upd = ""
        if not trainable and train_fn.updated[i - nt]:
            upd = "update/" + name + ":0"
        variables.append(Variable(
            name=name, dtype=val.dtype.name, shape=list(val.shape), trainable=trainable, value=val,
            train_placeholder="var/" + name + ":0", infer_placeholder="var/" + name + ":0",
            gradient=("grad/" + name + ":0") if trainable else "", update=upd))
    # State that the step does not change needs no update tensor: drop the
    # Identity nodes we added for it.
    keep_updates = {v.update for v in variables if v.update}
    _drop_nodes(train_gd, {"update/" + n for j, n in enumerate(nnames)
                           if "update/" + n + ":0" not in keep_updates})

    inputs = [Tensor(n, "input/" + n + ":0", s.dtype.name, shape_list(s.shape)) for n, s in in_specs]
    labels = [Tensor(n, "label/" + n + ":0", s.dtype.name, shape_list(s.shape)) for n, s in lab_specs]
    outputs = [Tensor(n, "output/" + n + ":0", t.dtype.name, shape_list(t.shape))
               for n, t in zip(out_names, infer_cf.outputs)]
    lt = train_cf.outputs[0]
    loss_t = Tensor(loss_name if isinstance(loss_name, str) else "loss", "loss:0", lt.dtype.name, [])
    mts = []
    for j, (_, mname) in enumerate(metric_objs):
        t = train_cf.outputs[1 + nt + j]
        mts.append(Tensor(mname, "metric/" + mname + ":0", t.dtype.name, shape_list(t.shape)))
    return bundle.Parts(train_graph=train_gd, infer_graph=infer_gd, variables=variables,
                        inputs=inputs, labels=labels, outputs=outputs, loss=loss_t,
                        metrics=mts, source=source, notes=notes, eval_graph=eval_gd)


def _training_kw(model, training):
    """{"training": training} if the model's call takes that argument."""
    import inspect
    has = getattr(model, "_call_has_training_arg", None)
    if has is None:
        has = "training" in inspect.signature(model.call).parameters
    return {"training": training} if has else {}


def _metric_value(m, init, y_true, y_pred):
    import tensorflow as tf
    if init is not None:
        new = m.stateless_update_state([tf.constant(v) for v in init], y_true, y_pred)
        val = m.stateless_result(new)
    else:
        val = m(y_true, y_pred)
    val = tf.convert_to_tensor(val)
    if val.shape.rank != 0:
        val = tf.reduce_mean(val)
    if val.dtype != tf.float32 and val.dtype.is_floating:
        val = tf.cast(val, tf.float32)
    return val


def _trace(fn, specs, model):
    """Trace fn into a concrete function and inline it into one GraphDef."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    try:
        cf = tf.function(fn, autograph=False).get_concrete_function(*specs)
    except ConversionError:
        raise
    except Exception as e:
        raise ConversionError(f"model {model.name!r} cannot be traced as a pure function: {type(e).__name__}: {e}") from None
    if cf.captured_inputs:
        caps = []
        for ext, internal in cf.graph.captures:
            caps.append(internal.name if ext.dtype != tf.resource else _resource_name(ext))
        raise ConversionError(
            f"model {model.name!r} captures state outside its Keras variables ({', '.join(caps)}); "
            "every weight must be a keras.Variable created with add_weight")
    return convert_variables_to_constants_v2(cf)


def _resource_name(handle):
    try:
        return handle._handle_name if hasattr(handle, "_handle_name") else handle.name
    except Exception:
        return str(handle)


def _name_graph(cf, in_names, out_names):
    import tensorflow as tf
    gd = cf.graph.as_graph_def()
    if len(cf.inputs) != len(in_names):
        raise ConversionError(f"internal: {len(cf.inputs)} placeholders for {len(in_names)} names")
    mapping = {}
    for t, name in zip(cf.inputs, in_names):
        mapping[t.op.name] = name
    bundle.rename_nodes(gd, mapping)
    # Outputs may be placeholders themselves (state the step passes
    # through); refer to them by their new names.
    for t, name in zip(cf.outputs, out_names):
        src = t.name
        base, _, idx = src.partition(":")
        if base in mapping:
            src = mapping[base] + ":" + idx
        bundle.add_identity(gd, name, src, t.dtype.as_datatype_enum)
    del tf
    return gd


def _drop_nodes(gd, names):
    keep = [n for n in gd.node if n.name not in names]
    del gd.node[:]
    gd.node.extend(keep)


def _layer_of(node_name, model):
    """Best-effort: the Keras layer whose name scope produced node_name."""
    parts = node_name.split("/")
    layer_names = {l.name for l in model._flatten_layers(include_self=False)}
    for p in parts:
        if p in layer_names:
            return p
        base = re.sub(r"_\d+$", "", p)
        if base in layer_names:
            return base
    return None


def _check_ops(gd, which, model, allow_random):
    bad = []
    for n in gd.node:
        reason = _FORBIDDEN.get(n.op)
        if reason is None and not allow_random and n.op in _STATEFUL_RANDOM:
            reason = ("draws random numbers with training=False" if which == "eval.pb"
                      else "draws random numbers at inference time")
        if reason:
            layer = _layer_of(n.name, model)
            where = f"layer {layer!r}" if layer else f"node {n.name!r}"
            bad.append(f"{where}: op {n.op} {reason}")
    for fn in gd.library.function:
        for n in fn.node_def:
            if n.op in _FORBIDDEN:
                bad.append(f"function {fn.signature.name!r}: op {n.op} {_FORBIDDEN[n.op]}")
    if bad:
        raise ConversionError(f"{which}: model {model.name!r} cannot be expressed as a pure graph:\n  "
                              + "\n  ".join(sorted(set(bad))))


def _check_ops_generic(gd, which):
    bad = []
    for n in gd.node:
        if n.op in _FORBIDDEN:
            bad.append(f"node {n.name!r}: op {n.op} {_FORBIDDEN[n.op]}")
        elif which == "infer.pb" and n.op in _STATEFUL_RANDOM:
            bad.append(f"node {n.name!r}: op {n.op} draws random numbers at inference time")
    if bad:
        raise ConversionError(f"{which}: the graph cannot be expressed as a pure function:\n  " + "\n  ".join(bad))


def _check_untracked_variables(model):
    import tensorflow as tf
    import keras
    for layer in model._flatten_layers(include_self=True):
        for attr, val in vars(layer).items():
            if isinstance(val, tf.Variable) and not isinstance(val, keras.Variable):
                raise ConversionError(
                    f"layer {layer.name!r} ({type(layer).__name__}) holds tf.Variable {attr!r} that Keras does "
                    "not track; create weights with self.add_weight so they can be fed")
