"""llm_magic.ipython.magics in a real Jupyter kernel: the kernel's interrupt stops a streaming %%ask;
a long prompt shows how far its evaluation got."""

from __future__ import annotations

import os
import re
import time

import pytest

from conftest import LONG_CTX

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


WIDE_EMBD = 256  # wider than the tiny models: a 16-token batch takes a few ms on one thread
PROMPT_REPEATS = 300
PROGRESS = re.compile(r"^\[reading the prompt ([\d,]+) / ([\d,]+) tokens\]$")


def test_a_long_prompt_shows_reading_the_prompt_in_a_real_kernel(model_dir):
    """While a long prompt is evaluated (here in batches of 16 tokens, on one thread, by a model
    slow enough for the throttle to let several batches through), the cell says how far it got:
    display updates "reading the prompt N / M tokens" with N growing, then the answer streams."""
    from jupyter_client.manager import start_new_kernel

    from tiny_gguf import write_tiny_model

    model = write_tiny_model(model_dir / "wider.gguf", n_embd=WIDE_EMBD, n_layer=4, n_ctx_train=LONG_CTX)
    km, kc = start_new_kernel(kernel_name="python3", env={**os.environ, "LLM_MAGIC_MODEL": str(model)})
    try:
        alias = {"path": str(model), "n_batch": 16, "n_threads": 1, "n_ctx": 4096}
        kc.execute_interactive(f"%load_ext llm_magic\n%config AskMagics.models = {{'batched': {alias!r}}}", timeout=120)
        messages = []
        prompt = "the capital of France is Paris and " * PROMPT_REPEATS
        kc.execute_interactive(f"%%ask -m batched -n 5 -o a\n{prompt}", output_hook=messages.append, timeout=300)
        total = int(_printed(kc, "print(a.n_prompt_evaluated)"))
        assert _printed(kc, "print(a.finish_reason, a.n_tokens)").strip() == "length 5"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    shown = [m["content"]["data"] for m in messages if m["msg_type"] in ("display_data", "update_display_data")]
    assert all(data.get("text/plain") and data.get("text/html") for data in shown)  # never an empty frame
    texts = [data["text/plain"] for data in shown]
    first_answer = next(i for i, t in enumerate(texts) if t.endswith("▌") and t != "▌")
    progress = [PROGRESS.match(t) for t in texts[:first_answer] if t.startswith("[reading the prompt")]
    assert all(progress), texts[:first_answer]
    done = [int(m.group(1).replace(",", "")) for m in progress]
    assert {int(m.group(2).replace(",", "")) for m in progress} == {total} and total > 1000
    assert len(done) >= 3 and done[0] == 0 and done == sorted(set(done)), done  # growing, batch by batch
    assert all(n % 16 == 0 or n == total for n in done)
    assert not any(t.startswith("[reading the prompt") for t in texts[first_answer:])  # then the answer streams
    assert texts[-1].endswith("\n\n[stopped at max_tokens (5 tokens)]") and "▌" not in texts[-1]
