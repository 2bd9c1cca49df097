"""llm_magic.ipython.magics in a real Jupyter kernel: the kernel's interrupt stops a streaming %%ask."""

from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.slow


def _printed(kc, code: str) -> str:
    outputs = []
    kc.execute_interactive(code, output_hook=outputs.append, timeout=60)
    return "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")


def test_kernel_interrupt_cancels_generation_and_keeps_partial(tiny_model):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, "LLM_MAGIC_MODEL": tiny_model})
    try:
        kc.execute_interactive("%load_ext llm_magic", timeout=120)
        msg_id = kc.execute("%%ask -n 100000 -t 120 -o a\nTalk forever")
        time.sleep(1.0)
        t0 = time.monotonic()
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=60)
        assert time.monotonic() - t0 < 10
        assert reply["content"]["status"] == "ok"  # no exception: the partial answer is the result
        assert _printed(kc, "print(a.finish_reason, a.n_tokens > 0, len(a) > 0)").strip() == "cancelled True True"
        kc.execute_interactive("%%ask -n 5 -o b\nstill usable?\n", timeout=120)
        assert _printed(kc, "print(b.finish_reason, b.n_tokens)").strip() == "length 5"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
