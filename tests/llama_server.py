"""Start and stop `python -m llama_cpp.server` (llama-cpp-python's own server) on a free loopback
port: the real OpenAI-compatible server the remote tests and benchmarks talk to."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m llama_cpp.server` as a subprocess on a free loopback port."""

    def __init__(self, model: str, alias: str = "tiny", api_key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            model,
            "--model_alias",
            alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "8192",
            "--verbose",
            "False",
        ]
        if api_key:
            cmd += ["--api_key", api_key]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                req = urllib.request.Request(
                    f"{self.url}/models", headers={"Authorization": f"Bearer {api_key}"} if api_key else {}
                )
                urllib.request.urlopen(req, timeout=1).read()
                return
            except Exception:  # noqa: BLE001 - not listening yet, or not ready: try again
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not start in 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
