"""In a real Jupyter kernel: the quickstart notebook via nbclient, and the kernel's interrupt."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "notebooks"))

pytestmark = pytest.mark.slow


def _cell_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        else:
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_quickstart_notebook_streams_in_a_real_kernel(tiny_model):
    from run_quickstart import run

    nb, client = run(model=tiny_model, echo=False, timeout=120)
    code = {i: c for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    for i, cell in code.items():
        assert not any(o.get("output_type") == "error" for o in cell.outputs), (i, cell.outputs)
    ask_cells = [i for i, c in code.items() if c.source.startswith("%%ask")]
    assert len(ask_cells) == 3
    first, second, partial = ask_cells
    # each answer is one display, updated in place, ending as Markdown
    for i in ask_cells:
        displays = [o for o in code[i].outputs if o.output_type == "display_data"]
        assert len(displays) == 1
        assert "text/markdown" in displays[0].data and displays[0].data["text/plain"].strip()
    # the timed-out cell streamed for a second: many in-place updates, throttled
    assert 5 <= client.updates[partial] <= 40
    assert "timed out after 1 s — partial answer" in _cell_text(code[partial])
    assert "('timeout'," in _cell_text(code[partial + 1])
    second_timing = _cell_text(code[second + 1])
    assert "second ask: waited 0.0" in second_timing  # cache hit: no load wait
    [status] = [c for c in code.values() if c.source.strip() == "%llm status"]
    assert "tiny.gguf" in _cell_text(status) and "ready" in _cell_text(status)


def test_kernel_interrupt_cancels_generation_and_keeps_partial(tiny_model):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env={**__import__("os").environ, "LLM_MAGIC_MODEL": tiny_model})
    try:
        kc.execute_interactive("%load_ext llm_magic", timeout=60)
        msg_id = kc.execute("%%ask -n 100000 -t 120 -o a\nTalk forever")
        time.sleep(1.0)
        t0 = time.monotonic()
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=30)
        assert time.monotonic() - t0 < 5
        assert reply["content"]["status"] == "ok"  # no exception: the partial answer is the result
        outputs = []
        kc.execute_interactive("print(a.finish_reason, a.n_tokens > 0, len(a) > 0)",
                               output_hook=lambda m: outputs.append(m), timeout=30)
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        assert text.strip() == "cancelled True True"
        outputs.clear()
        kc.execute_interactive("%%ask -n 5 -o b\nstill usable?\n", timeout=60)
        kc.execute_interactive("print(b.finish_reason, b.n_tokens)", output_hook=lambda m: outputs.append(m), timeout=30)
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        assert text.strip() == "length 5"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
