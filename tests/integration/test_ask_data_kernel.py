"""Issue 15 in a real kernel (nbclient): a DataFrame summarised for {df}, metadata["llm_magic"]
saved with each answer in the notebook, and after a kernel restart `%%ask --cache` replays the
answer from the ask log and `%llm log` still lists it."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("pandas")


def _execute(cells: list[str], model: str):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    env_model = os.environ.get("LLM_MAGIC_MODEL")
    os.environ["LLM_MAGIC_MODEL"] = model
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    finally:
        if env_model is None:
            os.environ.pop("LLM_MAGIC_MODEL", None)
        else:
            os.environ["LLM_MAGIC_MODEL"] = env_model
    return nb


def _display(cell) -> dict:
    [out] = [o for o in cell.outputs if o.output_type == "display_data"]
    return out


FRAME = (
    "import numpy as np, pandas as pd\n"
    "df = pd.DataFrame(np.random.default_rng(0).random((5000, 25)), columns=[f'c{i}' for i in range(25)])"
)
ASK = "%%ask -n 4 --seed 9 -f text\nWhich column of {df} varies most?"


def test_metadata_is_saved_and_replay_survives_a_restart(tiny_model):
    nb = _execute(["%load_ext llm_magic", FRAME, ASK, "%llm last --prompt"], tiny_model)
    out = _display(nb.cells[2])
    meta = out.metadata["llm_magic"]
    assert meta["model"] == "tiny.gguf" and meta["seed"] == 9 and meta["max_tokens"] == 4
    assert meta["finish_reason"] in ("stop", "length") and meta["versions"]["llm_magic"]
    assert "summarised to fit" in out.data["text/plain"] and "5,000 × 25 DataFrame" in out.data["text/plain"]
    prompt = "".join(o.get("text", "") for o in nb.cells[3].outputs)
    assert "pandas.DataFrame: 5,000 rows × 25 columns" in prompt and "c24: float64" in prompt

    # a new kernel: Run All with --cache answers from the log, no model call
    nb2 = _execute(["%load_ext llm_magic", FRAME, ASK.replace("-f text", "-f text --cache"), "%llm log 5"], tiny_model)
    replayed = _display(nb2.cells[2])
    assert "replayed from the ask log" in replayed.data["text/plain"]
    assert replayed.metadata["llm_magic"]["replayed"] is True
    first_text = out.data["text/plain"].split("\n\n[")[0]
    assert replayed.data["text/plain"].startswith(first_text)
    listing = "".join(o.get("text", "") for o in nb2.cells[3].outputs)
    assert listing.count("\n  Q: ") == 1 and "Which column of pandas.DataFrame" in listing
