"""Initializers of an ONNX model read straight from its (already verified) bytes.

Grad-CAM needs one tensor of the model, the head's Dense kernel.  Reading it with the ``onnx``
package meant shipping that package and its protobuf runtime (about 16 MB of the bundle) for one
array, so this module walks the protobuf wire format itself, for exactly the fields it needs:

- ``ModelProto.graph`` (field 7) -> ``GraphProto.initializer`` (field 5, repeated TensorProto)
  -> ``dims`` (1, int64, packed or not), ``data_type`` (2), ``float_data`` (4, packed float),
  ``int32_data`` (5: float16 bits when not raw), ``name`` (8), ``raw_data`` (9).

Every length is checked against what is left of the buffer, varints are at most 10 bytes, and
anything malformed raises ValueError: the bytes passed the card's SHA-256, but a parser of a file
format must still never index out of bounds or loop forever.
"""

from __future__ import annotations

import numpy as np

FLOAT, FLOAT16, DOUBLE = 1, 10, 11
_DTYPES = {FLOAT: np.dtype("<f4"), FLOAT16: np.dtype("<f2"), DOUBLE: np.dtype("<f8")}


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    for i in range(10):
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def _fields(buf: memoryview):
    """(field number, wire type, value) of one message: ints for varints, memoryviews otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if n > len(buf) - pos:
                raise ValueError("length beyond the end of the message")
            value, pos = buf[pos:pos + n], pos + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if n > len(buf) - pos:
                raise ValueError("fixed field beyond the end of the message")
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _packed_varints(buf: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


def _tensor(buf: memoryview) -> tuple[str, np.ndarray | None]:
    dims: list[int] = []
    dtype, name, raw = 0, "", None
    floats: list[bytes] = []
    int32s: list[int] = []
    for field, wire, value in _fields(buf):
        if field == 1:
            dims += _packed_varints(value) if wire == 2 else [value]
        elif field == 2 and wire == 0:
            dtype = value
        elif field == 4:
            floats.append(bytes(value))
        elif field == 5:
            int32s += _packed_varints(value) if wire == 2 else [value]
        elif field == 8 and wire == 2:
            name = bytes(value).decode("utf-8", "replace")
        elif field == 9 and wire == 2:
            raw = value
    if dtype not in _DTYPES:
        return name, None
    if any(d < 0 or d > 2**31 for d in dims):
        raise ValueError(f"tensor {name!r}: bad dimensions {dims}")
    count = int(np.prod(dims)) if dims else 1
    if raw is not None:
        arr = np.frombuffer(raw, _DTYPES[dtype])
    elif dtype == FLOAT and floats:
        arr = np.frombuffer(b"".join(floats), "<f4")
    elif dtype == FLOAT16 and int32s:
        arr = np.array(int32s, np.uint16).view("<f2")
    else:
        arr = np.zeros(0, _DTYPES[dtype])
    if arr.size != count:
        raise ValueError(f"tensor {name!r}: {arr.size} values for dimensions {dims}")
    return name, arr.reshape(dims).astype(_DTYPES[dtype].newbyteorder("="))


def float_initializers(data: bytes, rank: int | None = None) -> dict[str, np.ndarray]:
    """The float (32, 16 or 64 bit) initializers of an ONNX model by name, optionally only those
    of ``rank`` dimensions.  Raises ValueError on malformed bytes."""
    out: dict[str, np.ndarray] = {}
    for field, wire, graph in _fields(memoryview(data)):
        if field != 7 or wire != 2:
            continue
        for gfield, gwire, tensor in _fields(graph):
            if gfield != 5 or gwire != 2:
                continue
            if rank is not None and _rank(tensor) != rank:
                continue
            name, arr = _tensor(tensor)
            if arr is not None:
                out[name] = arr
    return out


def _rank(buf: memoryview) -> int:
    n = 0
    for field, wire, value in _fields(buf):
        if field == 1:
            n += len(_packed_varints(value)) if wire == 2 else 1
    return n
