"""Build (once) and locate llama.cpp's own tools from the sources vendored in the llama-cpp-python sdist.

Named tools (`llama-server`, `rpc-server`, `llama-bench`) are built in one CMake tree, Release, with the RPC backend
(`-DGGML_RPC=ON`), no tests, no examples and no network dependencies (no curl, no OpenSSL, no Web UI download), and
cached under ~/.cache/llm_magic/llama.cpp/<version>/bin/, so a machine builds each tool once for each installed
llama-cpp-python version. Missing tools (cmake, a C++ compiler) are reported, never papered over.

    python benchmarks/llama_cpp_build.py llama-server rpc-server    # build now (`.ci/run` does this before the tests)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# Tool name -> CMake target. llama.cpp renamed `rpc-server` to `ggml-rpc-server`; both names are accepted and the
# binary is cached under the name asked for.
TARGETS = {
    "llama-server": "llama-server",
    "rpc-server": "ggml-rpc-server",
    "ggml-rpc-server": "ggml-rpc-server",
    "llama-bench": "llama-bench",
}


def installed_version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")


def _cache_base() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm_magic"


def cache_dir(version: str | None = None) -> Path:
    return _cache_base() / "llama.cpp" / (version or installed_version())


def binary_path(tool: str, version: str | None = None) -> Path:
    """Where the cached binary of `tool` lives (it may not exist yet)."""
    if tool not in TARGETS:
        raise ValueError(f"unknown llama.cpp tool {tool!r}; known: {', '.join(sorted(TARGETS))}")
    return cache_dir(version) / "bin" / tool


def missing_tools() -> list[str]:
    return [t for t in ("cmake",) if shutil.which(t) is None] + (
        [] if (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")) else ["a C++ compiler"]
    )


def cmake_configure_args(vendor: Path, build_dir: Path) -> list[str]:
    return [
        "cmake",
        "-S",
        str(vendor),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_NATIVE=ON",
        "-DGGML_RPC=ON",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_APP=OFF",
        "-DLLAMA_BUILD_UI=OFF",  # no npm build of the Web UI …
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # … and no download of a prebuilt one: the API is all the tests need
        "-DBUILD_SHARED_LIBS=OFF",
    ]


def _sdist_tarball(version: str, log: Callable[[str], object]) -> tuple[Path | None, str]:
    """The llama-cpp-python sdist: from this cache, from llama-bench's older cache, or downloaded by pip."""
    sdist_dir = cache_dir(version) / "sdist"
    for where in (sdist_dir, _cache_base() / "llama-bench" / version / "sdist"):
        tarballs = sorted(where.glob("llama_cpp_python-*.tar.gz")) if where.exists() else []
        if tarballs:
            return tarballs[0], ""
    log(f"downloading the llama-cpp-python {version} sdist …")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    proc = subprocess.run([*cmd, f"llama-cpp-python=={version}", "-d", str(sdist_dir)], capture_output=True, text=True)
    tarballs = sorted(sdist_dir.glob("llama_cpp_python-*.tar.gz")) if sdist_dir.exists() else []
    if proc.returncode != 0 or not tarballs:
        return None, f"cannot download the llama-cpp-python {version} sdist: {proc.stderr.strip()[-300:]}"
    return tarballs[0], ""


def vendored_llama_cpp(log: Callable[[str], object] = print) -> tuple[Path | None, str]:
    """The llama.cpp sources vendored in the installed llama-cpp-python's sdist (downloaded with pip
    and extracted once, into the cache): (their folder, "") or (None, why they are not available).
    Also what the chat-template tests read (llama.cpp's models/templates)."""
    version = installed_version()
    tarball, why = _sdist_tarball(version, log)
    if tarball is None:
        return None, why
    src = cache_dir(version) / "src"
    vendor = src / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not vendor.exists():
        src.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(src, filter="data") if sys.version_info >= (3, 12) else tar.extractall(src)
    if not (vendor / "CMakeLists.txt").exists():
        return None, f"the sdist has no vendored llama.cpp at {vendor}"
    return vendor, ""


def build(tools: Iterable[str], log: Callable[[str], object] = print) -> tuple[dict[str, Path], str]:
    """Build whichever of `tools` are not cached yet; return ({tool: path}, "") or ({}, why they are not available)."""
    tools = list(dict.fromkeys(tools))
    version = installed_version()
    try:
        paths = {tool: binary_path(tool, version) for tool in tools}
    except ValueError as e:
        return {}, str(e)
    todo = [tool for tool, path in paths.items() if not path.exists()]
    if not todo:
        return paths, ""
    names = ", ".join(todo)
    missing = missing_tools()
    if missing:
        return {}, f"cannot build {names}: {', '.join(missing)} not found"
    root = cache_dir(version)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (CI's prebuild and a test session may race)
        return _build_locked(version, root, paths, log)


def _build_locked(
    version: str, root: Path, paths: dict[str, Path], log: Callable[[str], object]
) -> tuple[dict[str, Path], str]:
    todo = [tool for tool, path in paths.items() if not path.exists()]
    if not todo:
        return paths, ""
    names = ", ".join(todo)
    vendor, why = vendored_llama_cpp(log)
    if vendor is None:
        return {}, why
    build_dir = root / "build"
    jobs = str(os.cpu_count() or 2)
    logfile = root / "build.log"
    targets = sorted({TARGETS[tool] for tool in todo})
    log(f"building {names} from {vendor} (one time, a few minutes; log: {logfile}) …")
    started = time.monotonic()
    with open(logfile, "a") as out:
        for cmd in (
            cmake_configure_args(vendor, build_dir),
            ["cmake", "--build", str(build_dir), "--config", "Release", "--target", *targets, "-j", jobs],
        ):
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                return {}, f"building {names} failed ({' '.join(cmd[:3])} …): see {logfile}"
        out.write(f"built {names} in {time.monotonic() - started:.0f} s\n")
    for tool in todo:
        built = build_dir / "bin" / TARGETS[tool]
        if not built.exists():
            found = [p for p in build_dir.rglob(TARGETS[tool]) if p.is_file() and os.access(p, os.X_OK)]
            if not found:
                return {}, f"building {tool} produced no binary: see {logfile}"
            built = found[0]
        paths[tool].parent.mkdir(parents=True, exist_ok=True)
        tmp = paths[tool].with_suffix(".tmp")
        shutil.copy2(built, tmp)
        os.replace(tmp, paths[tool])  # atomic: a concurrent reader never sees half a binary
    return paths, ""


def main(argv: list[str]) -> int:
    tools = argv or ["llama-server", "rpc-server"]
    paths, why = build(tools)
    if not paths:
        print(why, file=sys.stderr)
        return 1
    for tool in tools:
        print(f"{tool}: {paths[tool]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
