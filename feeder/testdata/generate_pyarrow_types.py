"""Writes pyarrow_types.parquet / pyarrow_types.arrow and the values
TensorFlow sees for each column (pyarrow_types_expected.json).

Run from the repository root:
    .venv/bin/python feeder/testdata/generate_pyarrow_types.py

The feeder test reads the same files through gotflow's feeder into a TF
session and compares what TF returns with the expected values, which come
from tf.convert_to_tensor on the numpy view pyarrow gives of each column.
"""
import base64
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
N = 6

rng = np.random.default_rng(20261121)
f32 = rng.standard_normal(N).astype(np.float32)
f64 = rng.standard_normal(N) * 1e6
i64 = rng.integers(-(2**62), 2**62, N, dtype=np.int64)
i32 = rng.integers(-(2**31), 2**31 - 1, N, dtype=np.int32)
u8 = rng.integers(0, 256, N, dtype=np.uint8)
i16 = rng.integers(-(2**15), 2**15 - 1, N, dtype=np.int16)
f16 = rng.standard_normal(N).astype(np.float16)
flags = np.array([True, False, True, True, False, False])
words = ["plain", "with\x00nul", "ünïcödé", "日本語テキスト", "", "emoji 🚀\x00end"]
blobs = [b"\xff\x00\x01", b"", b"abc", b"\x00", b"\xc3\x28", b"zz"]
image = rng.standard_normal((N, 2, 3)).astype(np.float32)
vec = rng.integers(-1000, 1000, (N, 4), dtype=np.int64)
lst = rng.standard_normal((N, 3)).astype(np.float64)

tensor_type = pa.fixed_shape_tensor(pa.float32(), (2, 3))
table = pa.table({
    "f32": pa.array(f32),
    "f64": pa.array(f64),
    "i64": pa.array(i64),
    "i32": pa.array(i32),
    "u8": pa.array(u8),
    "i16": pa.array(i16),
    "f16": pa.array(f16, type=pa.float16()),
    "flag": pa.array(flags),
    "word": pa.array(words, type=pa.string()),
    "large_word": pa.array(words, type=pa.large_string()),
    "blob": pa.array(blobs, type=pa.binary()),
    "cat": pa.array(["b", "a", "b", "c", "a", "b"]).dictionary_encode(),
    "vec": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), 4),
    "image": pa.ExtensionArray.from_storage(
        tensor_type, pa.FixedSizeListArray.from_arrays(pa.array(image.reshape(-1)), 6)),
    "lst": pa.array(list(lst), type=pa.list_(pa.float64())),
    "nullable": pa.array([1.5, None, 3.5, None, 5.5, 6.5], type=pa.float64()),
})

pq.write_table(table, os.path.join(HERE, "pyarrow_types.parquet"), row_group_size=4)
with pa.OSFile(os.path.join(HERE, "pyarrow_types.arrow"), "wb") as sink:
    with pa.ipc.new_file(sink, table.schema) as w:
        for batch in table.to_batches(max_chunksize=4):
            w.write_batch(batch)


def expected(name, value):
    t = tf.convert_to_tensor(value)
    out = {"dtype": t.dtype.name, "shape": list(t.shape)}
    if t.dtype == tf.string:
        out["b64"] = [base64.b64encode(v).decode() for v in t.numpy().reshape(-1)]
    elif t.dtype == tf.float16:
        out["bits"] = t.numpy().view(np.uint16).reshape(-1).tolist()
    elif t.dtype == tf.bool:
        out["values"] = [bool(v) for v in t.numpy().reshape(-1)]
    else:
        out["values"] = [v.item() for v in t.numpy().reshape(-1)]
        if t.dtype in (tf.int64,):
            out["values"] = [str(v) for v in out["values"]]  # exact in JSON
    return name, out


exp = dict([
    expected("f32", f32), expected("f64", f64), expected("i64", i64), expected("i32", i32),
    expected("u8", u8), expected("i16", i16), expected("f16", f16), expected("flag", flags),
    expected("word", np.array([w.encode() for w in words], dtype=object)),
    expected("large_word", np.array([w.encode() for w in words], dtype=object)),
    expected("blob", np.array(blobs, dtype=object)),
    expected("cat", np.array([b"b", b"a", b"b", b"c", b"a", b"b"], dtype=object)),
    expected("vec", vec), expected("image", image), expected("lst", lst),
    # the feeder fills nulls with -1 (Fill: -1 in the test)
    expected("nullable", np.nan_to_num(table.column("nullable").to_numpy(zero_copy_only=False), nan=-1.0)),
])
with open(os.path.join(HERE, "pyarrow_types_expected.json"), "w") as f:
    json.dump(exp, f, indent=1, sort_keys=True)
    f.write("\n")
