"""notebooks/: the quickstart and panel notebooks, executed with nbclient in a real kernel."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llm_magic import specs

from conftest import LONG_CTX

ROOT = Path(__file__).resolve().parents[2]
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

    # The tiny model streams thousands of tokens a second: the timed-out cell needs a window it
    # cannot fill in its 1 s (settings made before %load_ext carry over).
    setup = f"import llm_magic\nllm_magic.current_settings().n_ctx = {LONG_CTX}"
    nb, client = run(model=tiny_model, echo=False, timeout=300, setup=setup)
    code = {i: c for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    for i, cell in code.items():
        assert not any(o.get("output_type") == "error" for o in cell.outputs), (i, cell.outputs)
    ask_cells = [i for i, c in code.items() if c.source.startswith("%%ask")]
    assert len(ask_cells) == 3
    first, second, partial = ask_cells
    # each answer is one display, updated in place, ending as text and sanitized HTML (no Markdown
    # left for the front end to render)
    for i in ask_cells:
        displays = [o for o in code[i].outputs if o.output_type == "display_data"]
        assert len(displays) == 1
        data = displays[0].data
        assert set(data) == {"text/plain", "text/html"}, set(data)
        assert data["text/plain"].strip() and "▌" not in data["text/plain"]
        assert "<script" not in data["text/html"]
    # the timed-out cell streamed for a second: many in-place updates, throttled (≤ 25/s + the final one)
    assert 3 <= client.updates[partial] <= 40, client.updates[partial]
    assert "[timed out after 1 s — partial answer" in _cell_text(code[partial])
    html = code[partial].outputs[0].data["text/html"]
    assert "llm-magic-marker" in html and "⏱" not in html
    # where the time went: subdued under the marker, not a warning on stderr (JupyterLab's pink box)
    assert '<p class="llm-magic-note" style="opacity:0.7">[waiting for the model load' in html
    assert not [o for o in code[partial].outputs if o.output_type == "stream" and o.name == "stderr"]
    assert "('timeout'," in _cell_text(code[partial + 1])
    second_timing = _cell_text(code[second + 1])
    assert "second ask: waited 0.0" in second_timing  # cache hit: no load wait
    [status] = [c for c in code.values() if c.source.strip() == "%llm status"]
    assert "tiny.gguf" in _cell_text(status) and "ready" in _cell_text(status)


def test_panel_notebook_runs_in_a_real_kernel(tiny_model, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "panel.ipynb", as_version=4)
    monkeypatch.setenv(specs.ENV_MODEL, tiny_model)  # the kernel inherits our environment
    # The tiny model streams thousands of tokens a second: give the long story a window it cannot
    # fill before the notebook's 2-second timeout (settings made before %load_ext carry over).
    first = next(c for c in nb.cells if c.cell_type == "code")
    first.source = f"import llm_magic\nllm_magic.current_settings().n_ctx = {LONG_CTX}\n" + first.source
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    code_outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert "error" not in [o.output_type for o in code_outputs]
    outputs = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in code_outputs)
    assert "application/vnd.jupyter.widget-view+json" in str(nb.cells[3].outputs)
    assert "running: True" in outputs and "length: 200 tokens" in outputs
    assert "timeout — timed out after 2 s — partial answer" in outputs
