"""The Open Inference Protocol's tensor datatypes and their NumPy / PyTorch counterparts.

A purely computational module: tables and codecs, no state. ``BYTES`` tensors travel as a sequence
of elements each prefixed by its 4-byte little-endian length (the protocol's raw encoding); in the
engine they are NumPy ``object`` arrays of ``bytes``.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool_worker.engine.errors import InferenceError

__all__ = [
    "DataType",
    "decode_bytes_elements",
    "encode_bytes_elements",
    "from_numpy_dtype",
]

_LEN = struct.Struct("<I")


class DataType(enum.Enum):
    """A tensor element type as the protocol spells it."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @classmethod
    def parse(cls, text: str, *, tensor: str) -> DataType:
        try:
            return _BY_NAME[text]  # a dict lookup: Enum's own lookup costs several times more
        except KeyError:
            known = ", ".join(member.value for member in cls)
            raise InferenceError.invalid(
                f"tensor '{tensor}': unknown datatype '{text}' (one of {known})"
            ) from None

    @property
    def numpy_dtype(self) -> np.dtype[np.generic]:
        return _DTYPES[self]

    @property
    def itemsize(self) -> int:
        """Bytes per element; 0 for BYTES, whose elements vary in length."""
        return _ITEMSIZE[self]


_NUMPY: dict[DataType, str] = {
    DataType.BOOL: "bool",
    DataType.UINT8: "<u1",
    DataType.UINT16: "<u2",
    DataType.UINT32: "<u4",
    DataType.UINT64: "<u8",
    DataType.INT8: "<i1",
    DataType.INT16: "<i2",
    DataType.INT32: "<i4",
    DataType.INT64: "<i8",
    DataType.FP16: "<f2",
    DataType.FP32: "<f4",
    DataType.FP64: "<f8",
    DataType.BYTES: "object",
}
_BY_NAME: dict[str, DataType] = {member.value: member for member in DataType}
_DTYPES: dict[DataType, np.dtype[np.generic]] = {k: np.dtype(v) for k, v in _NUMPY.items()}
_ITEMSIZE: dict[DataType, int] = {
    k: 0 if k is DataType.BYTES else v.itemsize for k, v in _DTYPES.items()}
_BY_KIND = {np.dtype(v).str if k is not DataType.BYTES else "|O": k for k, v in _NUMPY.items()}


def from_numpy_dtype(dtype: np.dtype[np.generic]) -> DataType:
    """The protocol datatype of a NumPy dtype (object and bytes arrays are BYTES)."""
    if dtype.kind in ("O", "S", "U"):
        return DataType.BYTES
    try:
        return _BY_KIND[dtype.newbyteorder("<").str if dtype.kind != "b" else "|b1"]
    except KeyError:
        raise ValueError(f"no protocol datatype for numpy dtype {dtype}") from None


def decode_bytes_elements(raw: bytes, *, count: int, tensor: str) -> npt.NDArray[np.object_]:
    """Split a raw BYTES payload into exactly ``count`` elements, naming ``tensor`` on any defect."""
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InferenceError.invalid(
                f"tensor '{tensor}': BYTES payload ends after {i} of {count} elements"
            )
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InferenceError.invalid(
                f"tensor '{tensor}': BYTES element {i} declares {length} bytes but only "
                f"{len(view) - offset} remain"
            )
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InferenceError.invalid(
            f"tensor '{tensor}': BYTES payload has {len(view) - offset} trailing bytes after "
            f"{count} elements"
        )
    return out


def encode_bytes_elements(elements: Sequence[object] | npt.NDArray[Any]) -> bytes:
    """Length-prefix each element (bytes, or str encoded as UTF-8) and join them."""
    parts: list[bytes] = []
    for element in np.asarray(elements, dtype=object).reshape(-1):
        data = element.encode() if isinstance(element, str) else bytes(element)
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)
