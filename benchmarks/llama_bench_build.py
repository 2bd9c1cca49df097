"""Build (once) and locate llama.cpp's own `llama-bench` from the sources vendored in the llama-cpp-python sdist.

Kept for its callers (`make bench`, common.llama_bench_binary): the build itself is llama_cpp_build.py's, which
builds llama.cpp's tools in one cached tree (~/.cache/llm_magic/llama.cpp/<version>/). A llama-bench built
earlier under ~/.cache/llm_magic/llama-bench/<version>/ is still used, not rebuilt.

    python benchmarks/llama_bench_build.py     # build now (e.g. in the background before `make bench`)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import llama_cpp_build
from llama_cpp_build import installed_version, missing_tools, vendored_llama_cpp

__all__ = ["binary_path", "build", "installed_version", "missing_tools", "vendored_llama_cpp"]


def _legacy_path(version: str) -> Path:
    return llama_cpp_build._cache_base() / "llama-bench" / version / "build" / "bin" / "llama-bench"


def binary_path(version: str | None = None) -> Path:
    version = version or installed_version()
    legacy = _legacy_path(version)
    return legacy if legacy.exists() else llama_cpp_build.binary_path("llama-bench", version)


def build(log: Callable[[str], object] = print) -> tuple[Path | None, str]:
    """Return (path to llama-bench, "") or (None, why it is not available)."""
    legacy = _legacy_path(installed_version())
    if legacy.exists():
        return legacy, ""
    paths, why = llama_cpp_build.build(["llama-bench"], log=log)
    return paths.get("llama-bench"), why


if __name__ == "__main__":
    path, why = build()
    print(path or why)
    sys.exit(0 if path else 1)
