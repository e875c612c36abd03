"""The bundle: what the converter writes (manifest.json, train.pb, infer.pb,
eval.pb, weights.safetensors), written atomically to a directory.

The manifest schema lives in loader/schema/bundle-v1.schema.json.
"""

import dataclasses
import json
import os
import re
import shutil
import tempfile

import numpy as np

from . import safetensors
from .errors import ConversionError

FORMAT = "gotflow.bundle/v1"
TRAIN_GRAPH = "train.pb"
INFER_GRAPH = "infer.pb"
EVAL_GRAPH = "eval.pb"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST = "manifest.json"

_OP_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/]*$")


def op_name(name):
    """Return name made safe as a TF op name (bad characters become '_')."""
    s = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name).strip("/")
    if not s or not re.match(r"[A-Za-z0-9.]", s[0]):
        s = "v" + s
    s = re.sub(r"/+", "/", s)
    if not _OP_NAME.match(s):
        raise ConversionError(f"cannot make {name!r} a valid op name")
    return s


@dataclasses.dataclass
class Tensor:
    """A named tensor of a bundle: an input, label, output, loss or metric."""
    name: str
    tensor: str
    dtype: str
    shape: list

    def to_json(self):
        return {"name": self.name, "tensor": self.tensor, "dtype": self.dtype, "shape": list(self.shape)}


@dataclasses.dataclass
class Variable:
    """A weight: trainable parameter or non-trainable state."""
    name: str
    dtype: str
    shape: list
    trainable: bool
    value: np.ndarray
    train_placeholder: str = ""
    infer_placeholder: str = ""
    gradient: str = ""
    update: str = ""

    def to_json(self):
        d = {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "trainable": self.trainable,
        }
        if self.train_placeholder:
            d["train_placeholder"] = self.train_placeholder
        if self.infer_placeholder:
            d["infer_placeholder"] = self.infer_placeholder
        if self.gradient:
            d["gradient"] = self.gradient
        if self.update:
            d["update"] = self.update
        return d


@dataclasses.dataclass
class Parts:
    """Everything a bundle holds, before it is written."""
    train_graph: object  # GraphDef
    infer_graph: object  # GraphDef
    variables: list
    inputs: list
    labels: list
    outputs: list
    loss: Tensor
    metrics: list
    source: str
    notes: list = dataclasses.field(default_factory=list)
    # (weights, inputs, labels) -> (loss, metrics) with training behaviour
    # off, under train_graph's names; None writes no eval.pb.
    eval_graph: object = None  # GraphDef

    def manifest(self):
        import tensorflow as tf
        import keras
        return {
            "format": FORMAT,
            "producer": {
                "name": "gotflow convert",
                "source": self.source,
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
            },
            "train_graph": TRAIN_GRAPH,
            "infer_graph": INFER_GRAPH,
            **({"eval_graph": EVAL_GRAPH} if self.eval_graph is not None else {}),
            "weights": WEIGHTS_FILE,
            "variables": [v.to_json() for v in self.variables],
            "inputs": [t.to_json() for t in self.inputs],
            "labels": [t.to_json() for t in self.labels],
            "outputs": [t.to_json() for t in self.outputs],
            "loss": self.loss.to_json(),
            "metrics": [t.to_json() for t in self.metrics],
        }


def write(parts, out_dir, overwrite=False):
    """Write parts as a bundle directory at out_dir.

    Files are written into a temporary sibling directory that is renamed to
    out_dir at the end, so a failed conversion never leaves a half-written
    bundle.
    """
    validate(parts)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise ConversionError(f"output {out_dir} exists (pass --force to replace it)")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        _write_file(os.path.join(tmp, TRAIN_GRAPH), _stable_bytes(parts.train_graph))
        _write_file(os.path.join(tmp, INFER_GRAPH), _stable_bytes(parts.infer_graph))
        if parts.eval_graph is not None:
            _write_file(os.path.join(tmp, EVAL_GRAPH), _stable_bytes(parts.eval_graph))
        weights = {v.name: v.value for v in parts.variables}
        _write_file(os.path.join(tmp, WEIGHTS_FILE),
                    safetensors.dumps(weights, metadata={"format": FORMAT}))
        manifest = json.dumps(parts.manifest(), indent=2) + "\n"
        _write_file(os.path.join(tmp, MANIFEST), manifest.encode("utf-8"))
        if os.path.exists(out_dir):
            old = out_dir + ".old-" + os.path.basename(tmp)
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _stable_bytes(gd):
    """Serialize with nodes sorted by name, so the same model always gives
    the same bytes (TF imports nodes in any order)."""
    out = type(gd)()
    out.CopyFrom(gd)
    nodes = sorted(out.node, key=lambda n: n.name)
    copies = [type(n)() for n in nodes]
    for c, n in zip(copies, nodes):
        c.CopyFrom(n)
    del out.node[:]
    out.node.extend(copies)
    return out.SerializeToString(deterministic=True)


def _write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def validate(parts):
    """Check that every tensor the manifest names exists in its graph with the
    declared dtype and shape, by importing the graphs into TF.

    eval.pb is addressed by train.pb's names: it must hold the inputs,
    labels, loss and metrics, the placeholders it has for variables must be
    their train placeholders, and every placeholder it has must be one of
    those feeds."""
    import tensorflow as tf

    def check(graph, which, ref, dtype, shape):
        try:
            t = graph.get_tensor_by_name(ref)
        except (KeyError, ValueError) as e:
            raise ConversionError(f"{which}: tensor {ref!r} not found: {e}") from None
        if t.dtype.name != dtype:
            raise ConversionError(f"{which}: tensor {ref!r} has dtype {t.dtype.name}, manifest says {dtype}")
        got = shape_list(t.shape)
        if got is not None and list(got) != list(shape):
            raise ConversionError(f"{which}: tensor {ref!r} has shape {got}, manifest says {shape}")

    names = set()
    for v in parts.variables:
        if v.name in names:
            raise ConversionError(f"variable name {v.name!r} used twice")
        names.add(v.name)
        if list(v.value.shape) != list(v.shape) or v.value.dtype.name != v.dtype:
            raise ConversionError(
                f"variable {v.name!r}: value {v.value.dtype.name}{list(v.value.shape)} "
                f"does not match {v.dtype}{v.shape}")
        if v.trainable != bool(v.gradient):
            raise ConversionError(f"variable {v.name!r}: trainable={v.trainable} but gradient={v.gradient!r}")
    if parts.loss.shape != []:
        raise ConversionError(f"loss {parts.loss.tensor!r} must be a scalar, got shape {parts.loss.shape}")
    graphs = [(TRAIN_GRAPH, parts.train_graph), (INFER_GRAPH, parts.infer_graph)]
    if parts.eval_graph is not None:
        graphs.append((EVAL_GRAPH, parts.eval_graph))
    for which, gd in graphs:
        g = tf.Graph()
        with g.as_default():
            tf.graph_util.import_graph_def(gd, name="")
        feeds = set()
        for v in parts.variables:
            ph = v.infer_placeholder if which == INFER_GRAPH else v.train_placeholder
            if which == EVAL_GRAPH and ph and node_of(ph) not in {n.name for n in gd.node}:
                ph = ""  # eval.pb does not read this variable
            if ph:
                feeds.add(ph)
                check(g, which, ph, v.dtype, v.shape)
                if g.get_tensor_by_name(ph).op.type != "Placeholder":
                    raise ConversionError(f"{which}: {ph!r} for variable {v.name!r} is not a Placeholder")
            if which == TRAIN_GRAPH:
                if v.gradient:
                    check(g, which, v.gradient, v.dtype, v.shape)
                if v.update:
                    check(g, which, v.update, v.dtype, v.shape)
        for t in parts.inputs:
            feeds.add(t.tensor)
            check(g, which, t.tensor, t.dtype, t.shape)
        if which == INFER_GRAPH:
            for t in parts.outputs:
                check(g, which, t.tensor, t.dtype, t.shape)
            continue
        for t in parts.labels + parts.metrics + [parts.loss]:
            check(g, which, t.tensor, t.dtype, t.shape)
        feeds.update(t.tensor for t in parts.labels)
        if which == EVAL_GRAPH:
            for n in gd.node:
                if n.op == "Placeholder" and n.name + ":0" not in feeds:
                    raise ConversionError(f"{which}: placeholder {n.name!r} is neither a variable's train "
                                          "placeholder nor an input or label, so nothing would feed it")


def shape_list(shape):
    """TensorShape -> list with -1 for unknown dims, or None for unknown rank."""
    if shape.rank is None:
        return None
    return [-1 if d is None else int(d) for d in shape.as_list()]


# --- GraphDef surgery -------------------------------------------------------

def node_of(ref):
    """'op:0' -> 'op', '^op' -> 'op'."""
    ref = ref.lstrip("^")
    return ref.split(":")[0]


def rename_nodes(gd, mapping):
    """Rename nodes old -> new everywhere in gd (node names and inputs)."""
    existing = {n.name for n in gd.node}
    for old, new in mapping.items():
        if new in existing and new not in mapping:
            raise ConversionError(f"cannot rename {old!r} to {new!r}: a node of that name exists")
    for n in gd.node:
        if n.name in mapping:
            n.name = mapping[n.name]
        for i, inp in enumerate(n.input):
            ctrl = inp.startswith("^")
            base = inp[1:] if ctrl else inp
            name, sep, idx = base.partition(":")
            if name in mapping:
                n.input[i] = ("^" if ctrl else "") + mapping[name] + sep + idx


def add_identity(gd, name, ref, dtype_enum):
    """Append an Identity node `name` reading tensor `ref`; return 'name:0'."""
    if any(n.name == name for n in gd.node):
        raise ConversionError(f"graph already has a node named {name!r}")
    node = gd.node.add()
    node.name = name
    node.op = "Identity"
    node.input.append(ref if ":" in ref else ref + ":0")
    node.attr["T"].type = dtype_enum
    return name + ":0"


def extract_subgraph(gd, fetch_nodes):
    """The part of gd that fetch_nodes depend on (TF's deprecation warning
    silenced)."""
    import logging
    import warnings
    import tensorflow as tf
    log = tf.get_logger()
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.compat.v1.graph_util.extract_sub_graph(gd, fetch_nodes)
    finally:
        log.setLevel(level)


def tensor_ref(ref):
    """Normalize 'op' to 'op:0'."""
    return ref if ":" in ref else ref + ":0"
