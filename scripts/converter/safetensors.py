"""Read and write the safetensors layout with numpy only.

Layout: 8-byte little-endian unsigned header length N, N bytes of UTF-8 JSON
``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}}``
(offsets relative to the end of the header), then the raw little-endian
tensor bytes in header order. An optional ``"__metadata__"`` entry maps
strings to strings.
"""

import json
import struct

import numpy as np

from .errors import ConversionError

# numpy dtype name -> safetensors dtype code.
_CODES = {
    "float16": "F16",
    "float32": "F32",
    "float64": "F64",
    "bfloat16": "BF16",
    "int8": "I8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
}
_NAMES = {v: k for k, v in _CODES.items()}


def dtype_code(dtype_name):
    """Return the safetensors code ("F32", ...) for a numpy dtype name."""
    try:
        return _CODES[dtype_name]
    except KeyError:
        raise ConversionError(
            f"safetensors: dtype {dtype_name!r} cannot be stored "
            f"(expected one of {sorted(_CODES)})") from None


def dumps(tensors, metadata=None):
    """Serialize an ordered mapping name -> numpy array to bytes."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    offset = 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        code = dtype_code(arr.dtype.name)
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": code,
            "shape": [int(d) for d in arr.shape],
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad the header with spaces so the data starts 8-byte aligned.
    raw += b" " * ((8 - (8 + len(raw)) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def loads(data):
    """Parse bytes written by dumps into a dict name -> numpy array."""
    if len(data) < 8:
        raise ConversionError(f"safetensors: file is {len(data)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ConversionError(f"safetensors: header length {n} exceeds file size {len(data)}")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if end > len(body) or begin > end:
            raise ConversionError(f"safetensors: tensor {name!r} data [{begin}, {end}) outside the {len(body)}-byte body")
        dt = np.dtype(_NAMES[info["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(body[begin:end], dtype=dt).reshape(info["shape"]).astype(dt.newbyteorder("="))
    return out
