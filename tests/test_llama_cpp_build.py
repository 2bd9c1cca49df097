"""benchmarks/llama_cpp_build.py: llama.cpp's own tools, built once from the sources vendored in the
llama-cpp-python sdist and cached per version; and what a machine that cannot build them is told."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_server import need_llama_cpp_tools

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # the build modules live there; off the path again at once
try:
    import llama_bench_build
    import llama_cpp_build
finally:
    sys.path.remove(str(ROOT / "benchmarks"))


def test_the_build_is_release_with_rpc_and_no_network_dependencies(tmp_path):
    args = llama_cpp_build.cmake_configure_args(tmp_path / "src", tmp_path / "build")
    for flag in (
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_RPC=ON",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
    ):
        assert flag in args


@pytest.mark.llama_cpp_tools
def test_the_tools_are_cached_per_version_and_run():
    tools = need_llama_cpp_tools()
    version = llama_cpp_build.installed_version()
    for tool in ("llama-server", "rpc-server"):
        assert tools[tool] == llama_cpp_build.binary_path(tool, version)
        assert f"/llama.cpp/{version}/bin/" in str(tools[tool]) and os.access(tools[tool], os.X_OK)
    assert "--rpc" in subprocess.run([tools["llama-server"], "--help"], capture_output=True, text=True).stdout
    helped = subprocess.run([tools["rpc-server"], "--help"], capture_output=True, text=True)
    assert "--port" in helped.stdout + helped.stderr
    paths, why = llama_cpp_build.build(["llama-server", "rpc-server"])  # cached: returns at once
    assert why == "" and paths == {t: tools[t] for t in ("llama-server", "rpc-server")}


def test_an_unknown_tool_is_named():
    paths, why = llama_cpp_build.build(["llama-serve"])
    assert paths == {} and "unknown llama.cpp tool 'llama-serve'" in why and "llama-server" in why


def test_without_cmake_the_reason_is_given_and_nothing_is_built(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": str(tmp_path / "empty")}
    code = "import sys; sys.path.insert(0, 'benchmarks'); import llama_cpp_build as b; print(b.build(['rpc-server']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert "({}, 'cannot build rpc-server: cmake, a C++ compiler not found')" in out.stdout, out.stderr
    assert not (tmp_path / "cache" / "llm_magic" / "llama.cpp").exists()


def test_the_tests_skip_without_a_compiler_but_fail_in_ci(tmp_path):
    test = ROOT / "tests" / "integration" / "test_llama_server_rpc.py"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": str(Path(sys.executable).parent)}
    env.pop("CI", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(test), "-k", "workers_hold"]
    skipped = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert "1 skipped" in skipped.stdout and "cmake, a C++ compiler not found" in skipped.stdout, skipped.stdout
    failed = subprocess.run(cmd, capture_output=True, text=True, env={**env, "CI": "1"}, cwd=ROOT, timeout=120)
    assert failed.returncode != 0 and "1 error" in failed.stdout and "CI is set" in failed.stdout, failed.stdout


def test_llama_bench_is_still_found_for_its_callers():
    path = llama_bench_build.binary_path()
    assert path.name == "llama-bench"
    if path.exists():  # built earlier (make bench): found, not rebuilt
        assert llama_bench_build.build() == (path, "")
