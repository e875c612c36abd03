"""TF1-style graph functions (SparkFlow's build_graph) -> bundle parts.

The function runs in tf.compat.v1 graph mode, creates its placeholders and
variables, and returns the loss tensor, or a dict with keys "loss" and
optionally "outputs" ({name: tensor}), "metrics" ({name: tensor}),
"inputs" and "labels" ({name: placeholder}). If it takes a ``training``
argument it is called twice: training=True for train.pb and training=False
for infer.pb and eval.pb (loss and metrics, under the same tensor names as
train.pb); variables are matched by name. Without it, eval.pb is train.pb
without gradients and state updates.

Variables become Placeholders by GraphDef surgery: each ReadVariableOp of a
resource variable (or each reference variable node) is rewired to read the
placeholder "var/<variable name>". State updates are taken from the
UPDATE_OPS collection (AssignVariableOp / AssignAddVariableOp /
AssignSubVariableOp, e.g. batch-norm moving statistics).
"""

import inspect

import numpy as np

from . import bundle
from .bundle import Tensor, Variable, op_name, shape_list
from .errors import ConversionError
from .specs import load_callable

_RESOURCE_READERS_OK = {"ReadVariableOp"}
_VAR_OPS = {"VarHandleOp", "VariableV2", "Variable"}


def _call(fn, training):
    sig = inspect.signature(fn)
    if "training" in sig.parameters:
        return fn(training=training)
    return fn()


def _normalize(result, graph, input_refs, label_refs, output_refs, metric_refs):
    import tensorflow as tf
    if isinstance(result, dict):
        d = dict(result)
    else:
        d = {"loss": result}
    if "loss" not in d:
        raise ConversionError("graph function returned a dict without a 'loss' entry")

    def get(ref, what):
        if isinstance(ref, (tf.Tensor, tf.Operation)):
            return ref
        try:
            return graph.get_tensor_by_name(bundle.tensor_ref(ref))
        except (KeyError, ValueError):
            raise ConversionError(f"{what} {ref!r} not found in the graph function's graph") from None

    def named(refs, default_key, what):
        out = {}
        if refs:
            for r in refs:
                name, sep, tensor = r.partition("=")
                if not sep:
                    tensor, name = name, bundle.node_of(name)
                out[op_name(name)] = get(tensor, what)
        elif default_key in d:
            for k, v in d[default_key].items():
                out[op_name(k)] = get(v, what)
        return out

    loss = get(d["loss"], "loss")
    inputs = named(input_refs, "inputs", "input")
    labels = named(label_refs, "labels", "label")
    outputs = named(output_refs, "outputs", "output")
    metrics = named(metric_refs, "metrics", "metric")
    return loss, inputs, labels, outputs, metrics


def convert(fn_ref, inputs=(), labels=(), outputs=(), metrics=(), source="tf1"):
    """Convert a TF1 graph function (module.py:function or a callable)."""
    import tensorflow as tf
    fn = load_callable(fn_ref, "graph function") if isinstance(fn_ref, str) else fn_ref

    g = tf.Graph()
    with g.as_default():
        result = _call(fn, True)
        loss, ins, labs, outs, mets = _normalize(result, g, inputs, labels, outputs, metrics)
        if not ins:
            raise ConversionError("no inputs: pass --input placeholder names (or return 'inputs' from the function)")
        if loss.shape.rank != 0:
            raise ConversionError(f"loss {loss.name!r} must be a scalar, got shape {loss.shape}")
        if not loss.dtype.is_floating:
            raise ConversionError(f"loss {loss.name!r} must be floating point, got {loss.dtype.name}")
        for k, t in list(ins.items()) + list(labs.items()):
            if t.op.type not in ("Placeholder", "PlaceholderWithDefault"):
                raise ConversionError(f"input/label {k!r} ({t.name}) is a {t.op.type}, expected a Placeholder")
        gvars = tf.compat.v1.global_variables()
        tvars = tf.compat.v1.trainable_variables()
        if not tvars:
            raise ConversionError("graph function created no trainable variables")
        tset = {id(v) for v in tvars}
        grads = tf.compat.v1.gradients(loss, tvars)
        named_grads = {}
        for v, gr in zip(tvars, grads):
            if gr is None:
                gr = tf.zeros_like(v)
            if isinstance(gr, tf.IndexedSlices):
                gr = tf.convert_to_tensor(gr)
            named_grads[_vname(v)] = tf.identity(gr, name="grad/" + _vname(v))
        updates = _updates(g, gvars)
        loss_id = tf.identity(loss, name="loss")
        metric_ids = {k: tf.identity(t, name="metric/" + k) for k, t in mets.items()}
        if not outs:
            outs_train = {}
        else:
            outs_train = outs
        init = tf.compat.v1.global_variables_initializer()
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(init)
            values = sess.run({_vname(v): v for v in gvars}) if gvars else {}
        train_gd = g.as_graph_def()

    fetch = ([loss_id.op.name] + [t.op.name for t in named_grads.values()] + [t.op.name for t in metric_ids.values()]
             + [t.op.name for t in updates.values()])
    train_gd, train_used = _variables_to_placeholders(train_gd, gvars, fetch, "train.pb")

    eval_fetch = [loss_id.op.name] + [t.op.name for t in metric_ids.values()]
    # The inference and evaluation graphs.
    if "training" in inspect.signature(fn).parameters:
        gi = tf.Graph()
        with gi.as_default():
            result_i = _call(fn, False)
            loss_i, ins_i, labs_i, outs_i, mets_i = _normalize(result_i, gi, inputs, labels, outputs, metrics)
            ivars = tf.compat.v1.global_variables()
            infer_gd = gi.as_graph_def()
            loss_e = tf.identity(loss_i, name="loss")
            metric_e = {k: tf.identity(t, name="metric/" + k) for k, t in mets_i.items()}
            eval_full = gi.as_graph_def()
        missing = {_vname(v) for v in ivars} - {_vname(v) for v in gvars}
        if missing:
            raise ConversionError(f"training=False creates variables the training graph lacks: {sorted(missing)}")
        if set(ins_i) != set(ins):
            raise ConversionError("training=True and training=False graphs declare different inputs")
        # eval.pb is addressed by train.pb's tensor names.
        pairs = ([("loss", loss_id, loss_e)] + [(f"input {k!r}", ins[k], ins_i[k]) for k in ins]
                 + [(f"label {k!r}", labs[k], labs_i.get(k)) for k in labs]
                 + [(f"metric {k!r}", metric_ids[k], metric_e.get(k)) for k in metric_ids])
        for what, t, t_i in pairs:
            if t_i is None or t_i.name != t.name:
                got = "missing" if t_i is None else repr(t_i.name)
                raise ConversionError(f"training=False graph: {what} is {got}, the training=True graph has "
                                      f"{t.name!r}; both calls must create the same placeholders and results")
        eval_gd, eval_used = _variables_to_placeholders(eval_full, ivars, eval_fetch, "eval.pb")
    else:
        ivars, ins_i, outs_i = gvars, ins, outs_train
        infer_gd = g.as_graph_def()
        # The same graph without gradients and state updates.
        eval_gd = bundle.extract_subgraph(train_gd, eval_fetch)
        eval_used = {n.name[len("var/"):] for n in eval_gd.node if n.op == "Placeholder" and n.name.startswith("var/")}
    if eval_used - train_used:
        raise ConversionError("the training=False graph reads variables the training step does not: "
                              f"{sorted(eval_used - train_used)}; eval.pb feeds them through train.pb's placeholders")
    if not outs_i:
        raise ConversionError("no outputs for infer.pb: pass --output name=tensor (or return 'outputs')")
    out_ids = {}
    for k, t in outs_i.items():
        node = infer_gd.node.add()
        node.name = "output/" + k
        node.op = "Identity"
        node.input.append(t.name)
        node.attr["T"].type = t.dtype.as_datatype_enum
        out_ids[k] = node.name + ":0"
    infer_gd, infer_used = _variables_to_placeholders(infer_gd, ivars, [bundle.node_of(r) for r in out_ids.values()],
                                                      "infer.pb")

    from .keras_source import _check_ops_generic
    _check_ops_generic(train_gd, "train.pb")
    _check_ops_generic(eval_gd, "eval.pb")
    try:
        _check_ops_generic(infer_gd, "infer.pb")
    except ConversionError as e:
        raise ConversionError(f"{e}\n(give the graph function a `training` argument and leave dropout and other "
                              "random ops out when it is False)") from None

    variables = []
    for v in gvars:
        name = _vname(v)
        if name not in train_used and name not in infer_used:
            continue
        val = np.asarray(values[name])
        trainable = id(v) in tset
        variables.append(Variable(
            name=name, dtype=val.dtype.name, shape=list(val.shape), trainable=trainable, value=val,
            train_placeholder=("var/" + name + ":0") if name in train_used else "",
            infer_placeholder=("var/" + name + ":0") if name in infer_used else "",
            gradient=named_grads[name].name if trainable else "",
            update=updates[name].name if name in updates else ""))
    inputs_t = [Tensor(k, t.name, t.dtype.name, shape_list(t.shape)) for k, t in ins.items()]
    labels_t = [Tensor(k, t.name, t.dtype.name, shape_list(t.shape)) for k, t in labs.items()]
    outputs_t = [Tensor(k, out_ids[k], t.dtype.name, shape_list(t.shape)) for k, t in outs_i.items()]
    loss_t = Tensor("loss", loss_id.name, loss_id.dtype.name, [])
    metrics_t = [Tensor(k, t.name, t.dtype.name, shape_list(t.shape)) for k, t in metric_ids.items()]
    return bundle.Parts(train_graph=train_gd, infer_graph=infer_gd, variables=variables, inputs=inputs_t,
                        labels=labels_t, outputs=outputs_t, loss=loss_t, metrics=metrics_t, source=source,
                        eval_graph=eval_gd)


def _vname(v):
    return op_name(v.op.name)


def _updates(g, gvars):
    """Map variable name -> tensor holding its value after UPDATE_OPS."""
    import tensorflow as tf
    by_handle = {v.handle.op.name if hasattr(v, "handle") else v.op.name: v for v in gvars}
    out = {}
    for op in tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS):
        if isinstance(op, tf.Tensor):
            op = op.op
        ops = [op]
        # Walk through Identity/NoOp wrappers (control dependencies).
        seen = set()
        while ops:
            o = ops.pop()
            if o.name in seen:
                continue
            seen.add(o.name)
            if o.type in ("NoOp", "Identity"):
                ops.extend(o.control_inputs)
                ops.extend(i.op for i in o.inputs)
                continue
            if o.type not in ("AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"):
                raise ConversionError(
                    f"update op {o.name!r} has type {o.type}; only AssignVariableOp, AssignAddVariableOp and "
                    "AssignSubVariableOp on resource variables can become state updates")
            h = o.inputs[0].op.name
            v = by_handle.get(h)
            if v is None:
                raise ConversionError(f"update op {o.name!r} assigns {h!r}, which is not a global variable")
            name = _vname(v)
            if name in out:
                raise ConversionError(f"variable {name!r} is updated by more than one update op")
            with g.as_default():
                val = o.inputs[1]
                cur = v.read_value() if o.type != "AssignVariableOp" else None
                if o.type == "AssignAddVariableOp":
                    new = cur + val
                elif o.type == "AssignSubVariableOp":
                    new = cur - val
                else:
                    new = val
                out[name] = tf.identity(new, name="update/" + name)
    return out


def _variables_to_placeholders(gd, gvars, fetch_nodes, which):
    """Replace variables by placeholders 'var/<name>' and prune to fetches.

    Returns the new GraphDef and the set of variable names it feeds."""
    import tensorflow as tf
    handle_to_var = {}
    for v in gvars:
        h = v.handle.op.name if hasattr(v, "handle") else v.op.name
        handle_to_var[h] = v
    # Also match by node name in a graph rebuilt from the same function.
    by_node = {}
    for n in gd.node:
        if n.op in _VAR_OPS:
            by_node[n.name] = n
    known = {h: _vname(v) for h, v in handle_to_var.items()}
    for name in by_node:
        known.setdefault(name, op_name(name))
    dtypes = {_vname(v): (v.dtype.base_dtype.as_datatype_enum, v.shape) for v in gvars}

    pruned = bundle.extract_subgraph(gd, fetch_nodes)
    used = set()
    bad = []
    new_nodes = []
    for n in pruned.node:
        if n.op == "ReadVariableOp" and bundle.node_of(n.input[0]) in known:
            vname = known[bundle.node_of(n.input[0])]
            used.add(vname)
            dtype = n.attr["dtype"].type
            n.op = "Identity"
            del n.input[:]
            n.input.append("var/" + vname)
            n.ClearField("attr")
            n.attr["T"].type = dtype
        elif n.op in ("VariableV2", "Variable") and n.name in known:
            vname = known[n.name]
            used.add(vname)
            dtype = n.attr["dtype"].type
            n.op = "Identity"
            del n.input[:]
            n.input.append("var/" + vname)
            n.ClearField("attr")
            n.attr["T"].type = dtype
        elif n.op == "VarHandleOp":
            continue  # consumers were rewritten above; checked below
        new_nodes.append(n)
    remaining = {bundle.node_of(i) for n in new_nodes for i in n.input}
    for n in pruned.node:
        if n.op == "VarHandleOp" and n.name in remaining:
            users = [m.name + " (" + m.op + ")" for m in new_nodes if any(bundle.node_of(i) == n.name for i in m.input)]
            bad.append(f"variable {known.get(n.name, n.name)!r} is used by {', '.join(users)}")
    if bad:
        raise ConversionError(f"{which}: only plain reads of variables can become placeholders:\n  " + "\n  ".join(bad))
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(gd.versions)
    out.library.CopyFrom(gd.library)
    for vname in sorted(used):
        ph = out.node.add()
        ph.name = "var/" + vname
        ph.op = "Placeholder"
        dt, shape = dtypes.get(vname, (None, None))
        if dt is None:
            raise ConversionError(f"{which}: variable {vname!r} not found among the global variables")
        ph.attr["dtype"].type = dt
        ph.attr["shape"].shape.CopyFrom(shape.as_proto())
    out.node.extend(new_nodes)
    return out, used
