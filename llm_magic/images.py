"""Images for vision models: whatever the user has at hand becomes PNG/JPEG bytes.

``--image X`` takes a file path, or the name of a variable holding a PIL image, a numpy array
(H×W×3 uint8), raw PNG/JPEG bytes, or a matplotlib figure (rendered to PNG). An image larger
than ``MAX_SIDE`` pixels on a side is downscaled, with a note, rather than refused.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import LLMMagicError

MAX_SIDE = 2048  # larger images are downscaled before they reach the projector

_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"GIF87a": "gif", b"GIF89a": "gif", b"BM": "bmp"}


class ImageError(LLMMagicError, ValueError):
    user_error = True


@dataclass
class Image:
    data: bytes
    mime: str
    source: str  # what the user named, for messages
    size: tuple[int, int] | None = None
    note: str | None = None  # e.g. "downscaled from 5000×3000 to 2048×1229"

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def _kind(data: bytes) -> str | None:
    for magic, kind in _MAGIC.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def png_from_array(array: Any) -> bytes:
    """Encode an H×W×3 (or H×W×4, or H×W) uint8 array as PNG, without Pillow."""
    import numpy as np

    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise ImageError(f"a numpy image must be uint8 (H×W×3), got dtype {a.dtype}")
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ImageError(f"a numpy image must be H×W×3 uint8, got shape {a.shape}")
    h, w, c = a.shape
    color = 2 if c == 3 else 6
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _from_object(obj: Any, source: str) -> bytes:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    if hasattr(obj, "savefig"):  # a matplotlib figure
        buf = io.BytesIO()
        obj.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()
    if hasattr(obj, "save") and hasattr(obj, "size") and hasattr(obj, "mode"):  # a PIL image
        buf = io.BytesIO()
        obj.convert("RGB").save(buf, format="PNG")
        return buf.getvalue()
    if hasattr(obj, "__array_interface__") or type(obj).__module__.startswith("numpy"):
        return png_from_array(obj)
    raise ImageError(
        f"{source} is a {type(obj).__name__}; --image takes a file path, a PIL image, a numpy "
        f"array (H×W×3 uint8), PNG/JPEG bytes or a matplotlib figure"
    )


def _fit(data: bytes, source: str, max_side: int) -> tuple[bytes, tuple[int, int] | None, str | None]:
    """Check the bytes decode as an image; downscale one larger than ``max_side``."""
    try:
        from PIL import Image as PILImage
    except ImportError:  # no Pillow: trust the header check; llama.cpp decodes it
        return data, None, None
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            im.load()
            size = im.size
            if max(size) <= max_side:
                return data, size, None
            scale = max_side / max(size)
            new = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
            buf = io.BytesIO()
            im.convert("RGB").resize(new, PILImage.Resampling.LANCZOS).save(buf, format="PNG")
            return buf.getvalue(), new, f"{source}: downscaled from {size[0]}×{size[1]} to {new[0]}×{new[1]}"
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds
        raise ImageError(f"{source} is not a readable image ({type(e).__name__}: {e})") from None


def load_image(spec: Any, user_ns: Mapping[str, Any] | None = None, max_side: int = MAX_SIDE) -> Image:
    """Turn what the user gave (a path, a variable name, or an object) into an ``Image``."""
    if isinstance(spec, str):
        path = os.path.expanduser(spec)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
            source = spec
        elif user_ns is not None and spec.isidentifier() and spec in user_ns:
            data, source = _from_object(user_ns[spec], spec), spec
        elif os.path.isdir(path):
            raise ImageError(f"{spec} is a directory, not an image file")
        else:
            raise ImageError(f"no image file or variable named {spec!r}")
    else:
        source = type(spec).__name__
        data = _from_object(spec, source)
    kind = _kind(data)
    if kind is None:
        raise ImageError(f"{source} is not an image (PNG, JPEG, GIF, BMP or WebP expected)")
    data, size, note = _fit(data, source, max_side)
    kind = _kind(data) or kind
    return Image(data=data, mime=f"image/{kind}", source=source, size=size, note=note)
