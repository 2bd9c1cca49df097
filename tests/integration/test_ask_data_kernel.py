"""Issue 15 in a real kernel (nbclient): a DataFrame summarised for {df}, metadata["llm_magic"]
saved with each answer in the notebook, and after a kernel restart `%%ask --cache` replays the
answer from the ask log and `%llm log` still lists it."""

from __future__ import annotations

import os
import time

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


def test_the_late_file_hash_updates_the_cells_own_output(tmp_path):
    """The model file's sha256 arrives after the answer (hashed in the background): the metadata
    update is sent as the asking cell's output (its parent header), which is what a front end that
    routes updates by request (JupyterLab) needs to apply it."""
    import queue

    from jupyter_client.manager import start_new_kernel

    from tiny_gguf import write_tiny_model

    # a file whose hash is not known yet, large enough (~130 MB) to take a moment to hash
    model = str(write_tiny_model(tmp_path / "fresh.gguf", seed=11, n_embd=1024, n_layer=3))
    env = {**os.environ, "LLM_MAGIC_MODEL": model, "LLM_MAGIC_DATA_DIR": str(tmp_path / "data")}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        kc.execute_interactive("%load_ext llm_magic", timeout=120)
        msg_id = kc.execute("%%ask -n 4\nhi")
        kc.execute("%%ask -n 300\nnext")  # the next cell runs while the file is hashed (which pauses for it)
        update = None
        deadline = time.monotonic() + 60
        while update is None and time.monotonic() < deadline:
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            meta = msg["content"].get("metadata", {}).get("llm_magic", {})
            if msg["msg_type"] == "update_display_data" and meta.get("sha256"):
                update = msg
        assert update is not None, "no metadata update with the file's sha256"
        assert update["parent_header"]["msg_id"] == msg_id
        assert len(update["content"]["metadata"]["llm_magic"]["sha256"]) == 64
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
