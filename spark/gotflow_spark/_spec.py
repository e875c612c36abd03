"""The model's inputs and outputs (from ``gotflow inspect --json``) and how
Spark columns feed them."""

import json
import subprocess

import pyarrow as pa
from pyspark.sql import types as T

from ._binary import child_env, find_binary

# numpy-style dtype names gotflow prints -> (Spark type, Arrow type).
_TYPES = {
    "float32": (T.FloatType(), pa.float32()),
    "float64": (T.DoubleType(), pa.float64()),
    "int8": (T.ByteType(), pa.int8()),
    "int16": (T.ShortType(), pa.int16()),
    "int32": (T.IntegerType(), pa.int32()),
    "int64": (T.LongType(), pa.int64()),
    "bool": (T.BooleanType(), pa.bool_()),
    "string": (T.StringType(), pa.string()),
}

_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType)


class TensorSpec:
    """One model input or output: its name, dtype and shape (-1: unknown)."""

    def __init__(self, d):
        self.name = d["name"]
        self.tensor = d.get("tensor", self.name)
        self.dtype = d["dtype"]
        self.shape = d.get("shape")

    def width(self):
        """Elements per row when every non-batch dimension is known, else None."""
        if self.shape is None or len(self.shape) < 1:
            return None
        n = 1
        for d in self.shape[1:]:
            if d < 0:
                return None
            n *= d
        return n

    def describe(self):
        shape = "?" if self.shape is None else "[" + ",".join(str(d) for d in self.shape) + "]"
        return f"{self.name!r} ({self.dtype}{shape})"

    def spark_type(self, column):
        """The Spark type of the column this output becomes."""
        if self.dtype not in _TYPES:
            raise ValueError(f"model output {self.describe()} has dtype {self.dtype}, which has no Spark column type; "
                             f"map another output (have: {', '.join(_TYPES)})")
        if self.shape is None:
            raise ValueError(f"model output {self.describe()} has an unknown rank; it cannot become column {column!r}")
        if len(self.shape) == 0:
            raise ValueError(f"model output {self.describe()} is a scalar; it needs a batch dimension to become column {column!r}")
        t = _TYPES[self.dtype][0]
        for _ in self.shape[1:]:
            t = T.ArrayType(t, containsNull=False)
        return t

    def arrow_type(self):
        """The Arrow type Spark expects for spark_type()."""
        t = _TYPES[self.dtype][1]
        for _ in self.shape[1:]:
            t = pa.list_(pa.field("element", t, nullable=False))
        return t


class ModelSpec:
    """What ``gotflow inspect --json`` says about a model."""

    def __init__(self, doc):
        self.doc = doc
        self.signature = doc.get("signature") or None
        self.inputs = [TensorSpec(d) for d in doc.get("inputs") or []]
        self.outputs = [TensorSpec(d) for d in doc.get("outputs") or []]

    def input(self, name):
        for s in self.inputs:
            if s.name == name:
                return s
        raise ValueError(f"the model has no input {name!r} (inputs: {', '.join(s.describe() for s in self.inputs) or 'none'})")

    def output(self, name):
        for s in self.outputs:
            if s.name == name:
                return s
        raise ValueError(f"the model has no output {name!r} (outputs: {', '.join(s.describe() for s in self.outputs) or 'none'})")


_cache = {}


def inspect_model(path, tags="", signature="", binary=None, library_path=None, timeout=300):
    """Runs ``gotflow inspect --json`` on the driver; cached per arguments."""
    exe = find_binary(binary)
    key = (exe, path, tags, signature)
    if key in _cache:
        return _cache[key]
    argv = [exe, "inspect", "--json"]
    if tags:
        argv += ["--tags", tags]
    if signature:
        argv += ["--signature", signature]
    argv.append(path)
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout, env=child_env(library_path))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"`{' '.join(argv)}` did not finish within {timeout}s") from None
    if p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ValueError(f"modelPath {path!r}: `gotflow inspect` failed: " + "\n".join(err[-10:]))
    spec = ModelSpec(json.loads(p.stdout))
    _cache[key] = spec
    return spec


def feed_column(df, column, spec, param, loose=False):
    """Returns a Column expression that feeds model input spec from df's
    column, converting VectorUDT columns (dense or sparse) and numeric arrays
    to arrays of the input's dtype, or raises ValueError naming the column.
    With loose (the mapping has --map options), the column goes as it is
    (vectors as arrays of doubles) and gotflow converts it."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F

    if column not in df.columns:
        raise ValueError(f"{param}: column {column!r} (for model input {spec.describe()}) does not exist; "
                         f"the DataFrame has columns: {', '.join(df.columns)}")
    field = df.schema[column]
    t = field.dataType
    if loose:
        return vector_to_array(F.col(column), "float64") if isinstance(t, VectorUDT) else F.col(column)
    want = spec.dtype
    width = spec.width()
    rank = None if spec.shape is None else len(spec.shape)
    if want not in _TYPES:
        raise ValueError(f"model input {spec.describe()} has dtype {want}, which gotflow_spark cannot feed")
    elem = _TYPES[want][0]
    if isinstance(t, VectorUDT):
        if want not in ("float32", "float64"):
            raise ValueError(f"{param}: column {column!r} is a vector (doubles) but model input {spec.describe()} "
                             f"wants {want}; feed an array column of {want} instead")
        size = _vector_size(field)
        if size is not None and width is not None and size != width:
            raise ValueError(f"{param}: column {column!r} holds vectors of size {size}, but model input "
                             f"{spec.describe()} wants {width} values a row")
        return vector_to_array(F.col(column), want)
    if isinstance(t, T.ArrayType):
        inner = t.elementType
        depth = 1
        while isinstance(inner, T.ArrayType):
            inner, depth = inner.elementType, depth + 1
        if not isinstance(inner, _NUMERIC + (T.BooleanType,)):
            raise ValueError(f"{param}: column {column!r} has type {t.simpleString()}; model input {spec.describe()} "
                             f"wants an array or vector of numbers")
        if want == "string" or (want == "bool") != isinstance(inner, T.BooleanType):
            raise ValueError(f"{param}: column {column!r} has type {t.simpleString()}, which does not convert to "
                             f"model input {spec.describe()}")
        if inner == elem:
            return F.col(column)
        target = elem
        for _ in range(depth):
            target = T.ArrayType(target)
        return F.col(column).cast(target)
    if isinstance(t, T.StringType):
        if want != "string":
            raise ValueError(f"{param}: column {column!r} has type string; model input {spec.describe()} wants {want}")
        return F.col(column)
    if isinstance(t, _NUMERIC + (T.BooleanType,)):
        if rank is not None and rank > 1 and width != 1:
            raise ValueError(f"{param}: column {column!r} is a scalar ({t.simpleString()}) but model input "
                             f"{spec.describe()} wants {width if width else 'several'} values a row; "
                             "assemble the columns with VectorAssembler or an array")
        if want == "string" or (want == "bool") != isinstance(t, T.BooleanType):
            raise ValueError(f"{param}: column {column!r} has type {t.simpleString()}; model input {spec.describe()} wants {want}")
        return F.col(column).cast(elem) if t != elem else F.col(column)
    raise ValueError(f"{param}: column {column!r} has type {t.simpleString()}; model input {spec.describe()} "
                     "wants a vector, an array of numbers, a number or a string")


def _vector_size(field):
    """The vector size VectorAssembler (or another ML attribute writer)
    recorded in the column's metadata, if any."""
    attr = (field.metadata or {}).get("ml_attr") or {}
    n = attr.get("num_attrs")
    if n is None and isinstance(attr.get("attrs"), dict):
        n = sum(len(v) for v in attr["attrs"].values())
    return int(n) if n else None
