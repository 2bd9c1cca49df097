"""Start and stop real OpenAI-compatible servers on free loopback ports, for the remote tests and benchmarks:
`python -m llama_cpp.server` (llama-cpp-python's own server), llama.cpp's `llama-server`, and llama.cpp's
`rpc-server` workers that a `llama-server --rpc` spreads a model over.

llama.cpp's binaries are built once from the sources vendored in the llama-cpp-python sdist and cached
(benchmarks/llama_cpp_build.py); `llama_cpp_tools()` finds or builds them. The servers' logs go to files, so a
chatty server never blocks on a full pipe, and a test can read them (which devices got which layers)."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("llama_cpp.server", "llama-server")  # the servers the remote tests run against
TOOLS = ("llama-server", "rpc-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_tools: tuple[dict[str, Path], str] | None = None


def llama_cpp_tools(log=lambda s: print(s, file=sys.stderr)) -> tuple[dict[str, Path], str]:
    """({"llama-server": path, "rpc-server": path}, "") or ({}, why not): cached, else built now (minutes);
    asked once per process (a failed build is not retried by every test)."""
    global _tools
    if _tools is None:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        try:
            import llama_cpp_build
        finally:
            sys.path.remove(str(ROOT / "benchmarks"))
        _tools = llama_cpp_build.build(TOOLS, log=log)
    return _tools


_log_dir: str | None = None


def _log_file(name: str) -> Path:
    """A new log file in this process's own temporary folder, removed when the process exits."""
    global _log_dir
    if _log_dir is None:
        _log_dir = tempfile.mkdtemp(prefix="llm-magic-servers-")
        atexit.register(shutil.rmtree, _log_dir, ignore_errors=True)
    fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=_log_dir)
    os.close(fd)
    return Path(path)


class _Process:
    """A server subprocess whose stdout and stderr go to a log file."""

    name = "server"

    def __init__(self, cmd: list[str]):
        self.cmd = cmd
        self.log_path = _log_file(self.name)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - open for the process's life, closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _died(self) -> str:
        return f"{self.name} exited ({self.proc.returncode}): {self.log()[-2000:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _OpenAIServer(_Process):
    kind = ""

    def __init__(self, cmd: list[str], port: int, api_key: str | None, start_timeout: float):
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1"
        super().__init__(cmd)
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(self._died())
            try:
                req = urllib.request.Request(
                    f"{self.url}/models", headers={"Authorization": f"Bearer {api_key}"} if api_key else {}
                )
                urllib.request.urlopen(req, timeout=1).read()
                return
            except Exception:  # noqa: BLE001 - not listening yet, or still loading (503): try again
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {start_timeout:.0f} s: {self.log()[-2000:]}")


class Server(_OpenAIServer):
    """`python -m llama_cpp.server` as a subprocess on a free loopback port."""

    kind = name = "llama_cpp.server"

    def __init__(self, model: str, alias: str = "tiny", api_key: str | None = None, n_ctx: int = 8192):
        port = free_port()
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--model_alias", alias]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--verbose", "False"]
        if api_key:
            cmd += ["--api_key", api_key]
        super().__init__(cmd, port, api_key, 60)


class LlamaServer(_OpenAIServer):
    """llama.cpp's own `llama-server` on a free loopback port: one slot, no Web UI, CPU weights without the
    extra (repacked/AMX) buffer types (`--no-repack`: those crash Gemma 3 on AMX CPUs in this llama.cpp)."""

    kind = name = "llama-server"

    def __init__(
        self,
        model: str,
        alias: str = "tiny",
        api_key: str | None = None,
        n_ctx: int = 32768,
        rpc: list[str] | None = None,
        extra: list[str] | None = None,
        threads: int = 2,
    ):
        tools, why = llama_cpp_tools()
        if not tools:
            raise RuntimeError(why)
        port = free_port()
        cmd = [str(tools["llama-server"]), "-m", model, "--alias", alias, "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["-c", str(n_ctx), "-np", "1", "-t", str(threads), "--no-webui", "--no-repack", "--no-warmup"]
        if api_key:
            cmd += ["--api-key", api_key]
        if rpc:
            cmd += ["--rpc", ",".join(rpc)]
        cmd += extra or []
        super().__init__(cmd, port, api_key, 120)


def start_server(kind: str, model: str, **kwargs) -> _OpenAIServer:
    """A running server of `kind` (one of KINDS) serving `model`."""
    if kind == "llama-server":
        return LlamaServer(model, **kwargs)
    return Server(model, **kwargs)


class RpcServer(_Process):
    """llama.cpp's `rpc-server` (ggml-rpc-server): one worker exposing this machine's CPU to a `llama-server --rpc`,
    on loopback only."""

    name = "rpc-server"

    def __init__(self, threads: int = 1, start_timeout: float = 30):
        tools, why = llama_cpp_tools()
        if not tools:
            raise RuntimeError(why)
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        super().__init__([str(tools["rpc-server"]), "-H", "127.0.0.1", "-p", str(self.port), "-t", str(threads)])
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(self._died())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rpc-server did not listen in {start_timeout:.0f} s: {self.log()[-2000:]}")


def model_buffers(server_log: str) -> dict[str, float]:
    """The model weights each device holds, in MiB, from llama.cpp's load log (llama-server with `-lv 4`):
    an RPC worker by its endpoint (`load_tensors: RPC0[127.0.0.1:PORT] model buffer size = 0.42 MiB` —
    every worker's buffer type is named RPC0), the host by its buffer type (`CPU_Mapped`)."""
    found: dict[str, float] = {}
    pattern = r"load_tensors:\s+(\S+?) model buffer size\s*=\s*([\d.]+) MiB"
    for name, mib in re.findall(pattern, server_log):
        endpoint = re.fullmatch(r"RPC\d*\[(.+)\]", name)
        key = endpoint.group(1) if endpoint else name
        found[key] = found.get(key, 0.0) + float(mib)
    return found


def need_llama_cpp_tools() -> dict[str, Path]:
    """The tools, or skip the test saying why they cannot be built here (no compiler, no cmake, offline);
    with $CI set, fail instead: CI (`.ci/run`) builds them, so there they must run."""
    import pytest

    tools, why = llama_cpp_tools()
    if tools:
        return tools
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set: the llama-server tests must run; .ci/run builds the tools)")
    pytest.skip(why)
