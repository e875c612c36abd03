"""Parsing of command-line tensor specs and module references."""

import importlib
import importlib.util
import os
import sys

from .errors import ConversionError

_DTYPES = {
    "float32", "float64", "float16", "bfloat16", "int8", "int16", "int32",
    "int64", "uint8", "uint16", "uint32", "uint64", "bool", "string",
}
_ALIASES = {"float": "float32", "double": "float64", "int": "int32", "long": "int64", "half": "float16"}


class Spec:
    """A tensor spec from the command line: name, dtype, shape (-1 unknown)."""

    def __init__(self, name, dtype, shape):
        self.name = name
        self.dtype = dtype
        self.shape = shape

    def __repr__(self):
        return f"Spec({self.name!r}, {self.dtype!r}, {self.shape!r})"


def parse_dtype(s):
    s = s.strip().lower()
    if s.startswith("dt_"):
        s = s[3:]
    s = _ALIASES.get(s, s)
    if s not in _DTYPES:
        raise ConversionError(f"unknown dtype {s!r} (expected one of {sorted(_DTYPES)})")
    return s


def parse_shape(s):
    s = s.strip().strip("[]()")
    if not s:
        return []
    dims = []
    for part in s.split(","):
        part = part.strip()
        if part in ("?", "-1", "None", "none", "_"):
            dims.append(-1)
            continue
        try:
            d = int(part)
        except ValueError:
            raise ConversionError(f"bad dimension {part!r} in shape {s!r} (expected an integer, -1 or ?)") from None
        if d < -1:
            raise ConversionError(f"bad dimension {d} in shape {s!r}")
        dims.append(d)
    return dims


def parse_spec(text):
    """Parse 'name:dtype:shape', e.g. 'x:float32:-1,64' or 'y:int32:[-1]'.

    The tensor part may itself contain a colon index for TF1 graphs
    ('x:0' alone names an existing placeholder)."""
    parts = text.split(":")
    if len(parts) == 3:
        name, dtype, shape = parts
        return Spec(name.strip(), parse_dtype(dtype), parse_shape(shape))
    if len(parts) in (1, 2) and all(p.strip() for p in parts):
        return Spec(text.strip(), None, None)
    raise ConversionError(f"bad tensor spec {text!r} (expected name:dtype:shape, e.g. x:float32:-1,64)")


def load_callable(ref, what):
    """Load 'path/to/module.py:function' or 'package.module:function'."""
    mod_ref, sep, attr = ref.rpartition(":")
    if not sep or not mod_ref or not attr:
        raise ConversionError(f"{what} {ref!r}: expected module.py:function or package.module:function")
    if mod_ref.endswith(".py") or os.path.sep in mod_ref:
        path = os.path.abspath(mod_ref)
        if not os.path.exists(path):
            raise ConversionError(f"{what} {ref!r}: file {path} not found")
        name = "_gotflow_user_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        d = os.path.dirname(path)
        if d not in sys.path:
            sys.path.insert(0, d)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(mod_ref)
        except ImportError as e:
            raise ConversionError(f"{what} {ref!r}: cannot import {mod_ref}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ConversionError(f"{what} {ref!r}: module has no function {attr!r}")
    return fn
