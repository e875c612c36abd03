"""An existing SavedModel -> bundle parts, for fine-tuning.

The chosen signature is frozen into one GraphDef; each captured variable's
constant is turned back into a Placeholder "var/<name>", so the forward graph
is a pure function of the weights. The loss, gradients (tf.gradients) and
metrics are added on top in tf.compat.v1 graph mode. The signature is the
serving graph, so training-only behaviour stays off while fine-tuning
(batch-norm statistics are frozen, dropout is off): the usual setting for
transfer learning. Non-trainable variables are fed but never updated.
eval.pb is the same graph without the gradients.
"""

import numpy as np

from . import bundle
from .bundle import Tensor, Variable, op_name, shape_list
from .errors import ConversionError
from .keras_source import _check_ops_generic, _metric_value, resolve_loss, resolve_metric


def convert(path, signature="serving_default", loss=None, metrics=(), label_specs=None, output=None,
            source="savedmodel"):
    import tensorflow as tf
    import keras
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:
        raise ConversionError(f"cannot load SavedModel {path!r}: {e}") from None
    sigs = getattr(loaded, "signatures", {})
    if signature not in sigs:
        raise ConversionError(f"SavedModel {path!r} has no signature {signature!r} (have: {', '.join(sorted(sigs))})")
    cf = sigs[signature]
    variables = list(cf.graph.variables)
    by_handle = {id(v.handle): v for v in variables}
    capture_var = {}
    for ext, internal in cf.graph.captures:
        if ext.dtype == tf.resource:
            v = by_handle.get(id(ext))
            if v is None:
                raise ConversionError(f"signature {signature!r} captures resource {internal.name!r} that is not a "
                                      "variable (tables and other resources cannot be fed)")
            capture_var[internal.op.name] = v
    frozen = convert_variables_to_constants_v2(cf)
    gd = frozen.graph.as_graph_def()

    # Names for the variables.
    names, seen = {}, set()
    for v in variables:
        n = op_name(v.name.split(":")[0])
        base, k = n, 0
        while n in seen:
            k += 1
            n = f"{base}_{k}"
        seen.add(n)
        names[id(v)] = n
    mapping = {}
    values = {}
    for node in gd.node:
        v = capture_var.get(node.name)
        if v is None or node.op != "Const":
            continue
        vname = names[id(v)]
        values[vname] = (v, np.asarray(v.numpy()))
        dtype = node.attr["dtype"].type
        node.op = "Placeholder"
        node.ClearField("attr")
        node.attr["dtype"].type = dtype
        node.attr["shape"].shape.CopyFrom(v.shape.as_proto())
        mapping[node.name] = "var/" + vname
    in_names = {}
    for t in frozen.inputs:
        n = op_name(t.op.name)
        in_names[t.op.name] = "input/" + n
    mapping.update(in_names)
    bundle.rename_nodes(gd, mapping)

    # Outputs of the signature, in structured order.
    out_struct = cf.structured_outputs
    keys = list(out_struct.keys()) if isinstance(out_struct, dict) else [f"output_{i}" for i in range(len(frozen.outputs))]
    out_tensors = list(frozen.outputs)
    if len(keys) != len(out_tensors):
        raise ConversionError(f"signature {signature!r}: {len(keys)} output names for {len(out_tensors)} tensors")
    infer_gd = tf.compat.v1.GraphDef()
    infer_gd.CopyFrom(gd)
    outputs = []
    for k, t in zip(keys, out_tensors):
        ref = bundle.add_identity(infer_gd, "output/" + op_name(k), t.name, t.dtype.as_datatype_enum)
        outputs.append(Tensor(op_name(k), ref, t.dtype.name, shape_list(t.shape)))
    if output is None:
        if len(keys) != 1:
            raise ConversionError(f"signature {signature!r} has outputs {keys}: pass --output to pick the one to train")
        train_idx = 0
    else:
        if output not in keys:
            raise ConversionError(f"signature {signature!r} has no output {output!r} (have: {', '.join(keys)})")
        train_idx = keys.index(output)

    loss_fn, loss_name = resolve_loss(loss)
    metric_objs = [resolve_metric(m, loss_name) for m in metrics]
    metric_init = [[np.asarray(keras.ops.convert_to_numpy(v.value)) for v in m.variables]
                   if isinstance(m, keras.metrics.Metric) else None for m, _ in metric_objs]

    g = tf.Graph()
    with g.as_default():
        tf.graph_util.import_graph_def(gd, name="")
        y_pred = g.get_tensor_by_name(out_tensors[train_idx].name)
        if label_specs:
            if len(label_specs) != 1:
                raise ConversionError("a SavedModel is fine-tuned on one output: pass one --label")
            s = label_specs[0]
            if s.dtype is None:
                raise ConversionError(f"label spec {s.name!r} needs a dtype and shape (name:dtype:shape)")
            lname, ldtype, lshape = op_name(s.name), s.dtype, [None if d == -1 else d for d in s.shape]
        else:
            lname = "y"
            if "sparse" in str(loss_name).lower():
                ldtype, lshape = "int32", y_pred.shape[:-1]
            else:
                ldtype, lshape = y_pred.dtype.name, y_pred.shape
        y = tf.compat.v1.placeholder(ldtype, lshape, name="label/" + lname)
        loss_v = tf.convert_to_tensor(loss_fn(y, y_pred))
        if loss_v.shape.rank != 0:
            raise ConversionError(f"loss {loss_name!r} must return a scalar, got shape {loss_v.shape}")
        loss_id = tf.identity(loss_v, name="loss")
        tvars = [(vname, v) for vname, (v, _) in values.items() if v.trainable]
        if not tvars:
            raise ConversionError(f"SavedModel {path!r}: signature {signature!r} reads no trainable variables")
        phs = [g.get_tensor_by_name("var/" + vname + ":0") for vname, _ in tvars]
        grads = tf.compat.v1.gradients(loss_id, phs)
        grad_refs = {}
        for (vname, _), ph, gr in zip(tvars, phs, grads):
            if gr is None:
                gr = tf.zeros_like(ph)
            if isinstance(gr, tf.IndexedSlices):
                gr = tf.convert_to_tensor(gr)
            grad_refs[vname] = tf.identity(gr, name="grad/" + vname).name
        mts = []
        for (m, mname), init in zip(metric_objs, metric_init):
            t = tf.identity(_metric_value(m, init, y, y_pred), name="metric/" + op_name(mname))
            mts.append(Tensor(mname, t.name, t.dtype.name, shape_list(t.shape)))
        train_gd = g.as_graph_def()
    # The serving graph already runs with training behaviour off: eval.pb is
    # train.pb without the gradients.
    eval_gd = bundle.extract_subgraph(train_gd, [loss_id.op.name] + [bundle.node_of(t.tensor) for t in mts])
    _check_ops_generic(train_gd, "train.pb")
    _check_ops_generic(infer_gd, "infer.pb")
    _check_ops_generic(eval_gd, "eval.pb")

    vars_out = []
    for vname, (v, val) in values.items():
        vars_out.append(Variable(
            name=vname, dtype=val.dtype.name, shape=list(val.shape), trainable=bool(v.trainable), value=val,
            train_placeholder="var/" + vname + ":0", infer_placeholder="var/" + vname + ":0",
            gradient=grad_refs.get(vname, "")))
    inputs = [Tensor(bundle.node_of(mapping[t.op.name])[len("input/"):], mapping[t.op.name] + ":0",
                     t.dtype.name, shape_list(t.shape)) for t in frozen.inputs]
    labels = [Tensor(lname, "label/" + lname + ":0", y.dtype.name, shape_list(y.shape))]
    return bundle.Parts(train_graph=train_gd, infer_graph=infer_gd, variables=vars_out, inputs=inputs,
                        labels=labels, outputs=outputs,
                        loss=Tensor(str(loss_name), loss_id.name, loss_id.dtype.name, []),
                        metrics=mts, source=source, eval_graph=eval_gd,
                        notes=["fine-tuning runs the serving graph: batch-norm statistics stay frozen and dropout is off"])
