"""Build (once) and locate llama.cpp's own `llama-bench` from the sources vendored in the llama-cpp-python sdist.

The binary is cached under ~/.cache/llm_magic/llama-bench/<version>/, so only the first `make bench` builds it
(a few minutes on 2 cores). Missing tools are reported, never papered over.

    python benchmarks/llama_bench_build.py     # build now (e.g. in the background before `make bench`)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path


def installed_version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")


def cache_dir(version: str | None = None) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm_magic" / "llama-bench"
    return base / (version or installed_version())


def binary_path(version: str | None = None) -> Path:
    return cache_dir(version) / "build" / "bin" / "llama-bench"


def missing_tools() -> list[str]:
    return [t for t in ("cmake",) if shutil.which(t) is None] + (
        [] if (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")) else ["a C++ compiler"]
    )


def vendored_llama_cpp(log=print) -> tuple[Path | None, str]:
    """The llama.cpp sources vendored in the installed llama-cpp-python's sdist (downloaded with pip
    and extracted once, into the cache): (their folder, "") or (None, why they are not available)."""
    version = installed_version()
    root = cache_dir(version)
    root.mkdir(parents=True, exist_ok=True)
    sdist_dir = root / "sdist"
    tarballs = sorted(sdist_dir.glob("llama_cpp_python-*.tar.gz")) if sdist_dir.exists() else []
    if not tarballs:
        log(f"downloading the llama-cpp-python {version} sdist …")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "-d",
                str(sdist_dir),
            ],
            capture_output=True,
            text=True,
        )
        tarballs = sorted(sdist_dir.glob("llama_cpp_python-*.tar.gz")) if sdist_dir.exists() else []
        if proc.returncode != 0 or not tarballs:
            return None, f"cannot download the llama-cpp-python {version} sdist: {proc.stderr.strip()[-300:]}"
    src = root / "src"
    vendor = src / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not vendor.exists():
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(src, filter="data") if sys.version_info >= (3, 12) else tar.extractall(src)
    if not (vendor / "CMakeLists.txt").exists():
        return None, f"the sdist has no vendored llama.cpp at {vendor}"
    return vendor, ""


def build(log=print) -> tuple[Path | None, str]:
    """Return (path to llama-bench, "") or (None, why it is not available)."""
    version = installed_version()
    binary = binary_path(version)
    if binary.exists():
        return binary, ""
    missing = missing_tools()
    if missing:
        return None, f"cannot build llama-bench: {', '.join(missing)} not found"
    vendor, why = vendored_llama_cpp(log)
    if vendor is None:
        return None, why
    root = cache_dir(version)
    build_dir = root / "build"
    jobs = str(os.cpu_count() or 2)
    logfile = root / "build.log"
    log(f"building llama-bench from {vendor} (one time, a few minutes; log: {logfile}) …")
    with open(logfile, "w") as out:
        for cmd in (
            [
                "cmake",
                "-S",
                str(vendor),
                "-B",
                str(build_dir),
                "-DCMAKE_BUILD_TYPE=Release",
                "-DLLAMA_CURL=OFF",
                "-DGGML_NATIVE=ON",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_SERVER=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_BUILD_TOOLS=ON",
                "-DBUILD_SHARED_LIBS=OFF",
            ],
            ["cmake", "--build", str(build_dir), "--target", "llama-bench", "-j", jobs],
        ):
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                return None, f"llama-bench build failed ({' '.join(cmd[:3])} …): see {logfile}"
    if not binary.exists():
        found = list(build_dir.rglob("llama-bench"))
        if not found:
            return None, f"llama-bench build produced no binary: see {logfile}"
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(found[0], binary)
    return binary, ""


if __name__ == "__main__":
    path, why = build()
    print(path or why)
    sys.exit(0 if path else 1)
