"""The extension's and the kernel's lifecycle (llm_magic.ipython's load/unload and
llm_magic.runtime's cleanup): ``%reload_ext`` during a background generation, and real Jupyter
kernels shut down or restarted in the middle of a stream or a load."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from llm_magic import runtime
from llm_magic.background import run_in_background
from llm_magic.request import Stream

from conftest import llm_threads


def test_reload_ext_during_a_background_generation_leaves_nothing(ip):
    stream = Stream("go on and on", max_tokens=100_000, timeout=60)
    chunks: list[str] = []
    future = run_in_background(stream, on_chunk=chunks.append)
    deadline = time.monotonic() + 30
    while not chunks and time.monotonic() < deadline:
        time.sleep(0.02)
    assert chunks and stream.phase == "generate"
    old_models = [e.model for e in runtime.get().cache.entries()]
    assert old_models and any(t.name.startswith("llm_magic-gen") for t in llm_threads())
    ip.run_line_magic("reload_ext", "llm_magic")
    answer = future.result(10)
    assert answer.finish_reason == "cancelled" and answer.startswith("".join(chunks[:1]))
    assert all(m.closed for m in old_models if m is not None)
    assert "ask" in ip.magics_manager.magics["cell"]  # reloaded: the magics are back
    ip.run_line_magic("unload_ext", "llm_magic")
    assert llm_threads() == []
    assert runtime.get().cache_if_open() is None and runtime.get().requests() == []


def _kernel(env_model: str):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, "LLM_MAGIC_MODEL": env_model})
    km.shutdown_wait_time = 30  # no SIGKILL after 5 s that would hide a hang: the kernel must exit by itself
    return km, kc


def _wait_for_output(kc, msg_id: str, predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id and predicate(str(msg["content"])):
            return


@pytest.mark.slow
def test_kernel_shutdown_mid_stream_exits_within_5_s(tiny_model):
    km, kc = _kernel(tiny_model)
    try:
        kc.execute_interactive("%load_ext llm_magic", timeout=60)
        msg_id = kc.execute("%%ask -n 100000 -t 300\nTalk forever")
        _wait_for_output(kc, msg_id, lambda content: "data" in content)  # the answer's display is up
        time.sleep(1.0)  # and streaming
        pid = km.provisioner.process.pid
        t0 = time.monotonic()
        km.shutdown_kernel(now=False)  # a polite shutdown request, as Jupyter sends
        elapsed = time.monotonic() - t0
        assert elapsed < 5, elapsed
        assert not km.is_alive()
        assert km.provisioner is None or km.provisioner.process is None or km.provisioner.process.poll() is not None
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)


@pytest.mark.slow
def test_kernel_restart_mid_load_exits_within_5_s(tiny_model):
    km, kc = _kernel(tiny_model)
    try:
        # a load that takes 60 s: the real loader, started late
        kc.execute_interactive(
            "import time, llm_magic.cache as c; real = c.load_engine; "
            "c.load_engine = lambda spec, abort=None: (time.sleep(60), real(spec, abort))[1]",
            timeout=60,
        )
        kc.execute_interactive("%load_ext llm_magic", timeout=60)  # starts the (slow) preload
        msg_id = kc.execute("%%ask -n 3\nhi")  # waits for the load
        _wait_for_output(kc, msg_id, lambda content: "waiting for" in content, timeout=30)  # says so
        t0 = time.monotonic()
        km.shutdown_kernel(now=False, restart=True)
        elapsed = time.monotonic() - t0
        assert elapsed < 5, elapsed  # it exited by itself, well before any kill
        km.start_kernel()
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive("1 + 1", timeout=30)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
