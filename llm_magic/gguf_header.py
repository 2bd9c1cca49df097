"""Read just enough of a GGUF file's header to configure a load and to explain a failed one.

llama.cpp reports every unreadable file as "Failed to load model from file"; this module says
*why*: not a GGUF file at all, a header cut short, or tensor data missing at the end.
No third-party dependency: the format is small (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"

# value type id -> struct format (scalars only; 8 = string, 9 = array)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

# ggml tensor type id -> (elements per block, bytes per block), from ggml.c's type_traits.
_TYPE_SIZES = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 36),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    16: (256, 66),
    17: (256, 74),
    18: (256, 98),
    19: (256, 50),
    20: (32, 18),
    21: (256, 110),
    22: (256, 82),
    23: (256, 136),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    29: (256, 56),
    30: (1, 2),
    34: (256, 54),
    35: (256, 66),
    39: (32, 17),
}


class GGUFError(ValueError):
    """The file is not a readable GGUF file; the message says why."""


class _Truncated(Exception):
    pass


@dataclass(frozen=True)
class _SkippedArray:
    length: int


@dataclass
class GGUFHeader:
    version: int
    n_tensors: int
    metadata: dict[str, Any] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)  # skipped arrays (token list ...): their lengths
    # filled only by a full read:
    data_end: int | None = None  # bytes the file needs to hold all tensor data
    tensor_bytes: dict[str, int] = field(default_factory=dict)  # tensor name -> bytes of its data

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def context_length(self) -> int | None:
        arch = self.architecture
        value = self.metadata.get(f"{arch}.context_length") if arch else None
        return int(value) if value is not None else None


def _read(f: BinaryIO, n: int) -> bytes:
    if n > 1 << 20 and n > _remaining(f):  # a corrupt length (say 2**63) is a truncated file, not a huge read
        raise _Truncated
    data = f.read(n)
    if len(data) != n:
        raise _Truncated
    return data


def _remaining(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size - f.tell()


def _unpack(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack("<" + fmt, _read(f, struct.calcsize(fmt)))[0]


def _string(f: BinaryIO) -> str:
    return _read(f, _unpack(f, "Q")).decode("utf-8", errors="replace")


def _value(f: BinaryIO, vtype: int, keep: bool) -> Any:
    if vtype in _SCALARS:
        return _unpack(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        item_type, count = _unpack(f, "I"), _unpack(f, "Q")
        if item_type in _SCALARS and not keep:  # skip big arrays (token scores) without decoding
            skip = struct.calcsize(_SCALARS[item_type]) * count
            if skip > _remaining(f):
                raise _Truncated
            f.seek(skip, os.SEEK_CUR)
            return _SkippedArray(count)
        if item_type == _STRING and not keep:  # the token list: 100k+ strings, skipped by their lengths
            _skip_strings(f, count)
            return _SkippedArray(count)
        items = [_value(f, item_type, keep) for _ in range(count)]
        return items if keep else _SkippedArray(count)
    raise GGUFError(f"unknown metadata value type {vtype}")


def _skip_strings(f: BinaryIO, count: int) -> None:
    """Seek past ``count`` GGUF strings (8-byte length, then the bytes) without reading them one by one."""
    size = os.fstat(f.fileno()).st_size
    offset = f.tell()
    if count * 8 > size - offset:
        raise _Truncated
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        unpack = struct.Struct("<Q").unpack_from
        for _ in range(count):
            if offset + 8 > size:
                raise _Truncated
            offset += 8 + unpack(mm, offset)[0]
    if offset > size:
        raise _Truncated
    f.seek(offset)


def read_header(
    path: str | os.PathLike[str], *, full: bool = False, until: Callable[[dict[str, Any]], bool] | None = None
) -> GGUFHeader:
    """Parse a GGUF header.

    ``until``: stop reading metadata as soon as ``until(metadata)`` is true (cheap: a few KB).
    Arrays (token lists, scores) are skipped, not kept.
    ``full``: also read the tensor table and compute where tensor data must end, to detect truncation.
    Raises ``GGUFError`` naming the problem.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        magic = f.read(4)
        if size == 0:
            raise GGUFError("the file is empty (0 bytes)")
        if magic != GGUF_MAGIC:
            shown = magic[:4]
            raise GGUFError(
                f"not a GGUF file (it starts with {shown!r}, a GGUF file starts with b'GGUF'; size {size} bytes)"
            )
        try:
            version = _unpack(f, "I")
            if version not in (2, 3):
                raise GGUFError(f"unsupported GGUF version {version}")
            n_tensors, n_kv = _unpack(f, "Q"), _unpack(f, "Q")
            header = GGUFHeader(version=version, n_tensors=n_tensors)
            for _ in range(n_kv):
                key = _string(f)
                vtype = _unpack(f, "I")
                value = _value(f, vtype, keep=False)
                if isinstance(value, _SkippedArray):
                    header.array_lengths[key], value = value.length, None
                header.metadata[key] = value
                if until is not None and not full and until(header.metadata):
                    return header
            if not full:
                return header
            alignment = int(header.metadata.get("general.alignment", 32))
            data_size_needed = 0
            for _ in range(n_tensors):
                name = _string(f)
                n_dims = _unpack(f, "I")
                n_elements = 1
                for _ in range(n_dims):
                    n_elements *= _unpack(f, "Q")
                ttype, offset = _unpack(f, "I"), _unpack(f, "Q")
                if ttype not in _TYPE_SIZES:
                    return header  # a type we don't know: can't check sizes, don't guess
                block, nbytes = _TYPE_SIZES[ttype]
                header.tensor_bytes[name] = n_elements // block * nbytes
                data_size_needed = max(data_size_needed, offset + header.tensor_bytes[name])
            data_start = -(-f.tell() // alignment) * alignment
            header.data_end = data_start + data_size_needed
            return header
        except _Truncated:
            raise GGUFError(f"truncated: the GGUF header stops early (file is only {size} bytes)") from None


def diagnose(path: str | os.PathLike[str]) -> str | None:
    """Why would llama.cpp refuse this file? ``None`` if the header looks fine."""
    try:
        header = read_header(path, full=True)
    except GGUFError as e:
        return str(e)
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    size = os.path.getsize(path)
    if header.data_end is not None and size < header.data_end:
        return f"truncated: tensor data needs {header.data_end} bytes but the file has {size} (an interrupted download or copy?)"
    return None
