"""Model sources in a real kernel (jupyter_client): ``complete_request`` after ``%%ask -m`` offers
the models on the machine, and an ``hf:`` download shows a ``tqdm.notebook`` progress bar (a
widget) in the cell, then answers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from hub_server import FakeHub
from test_ollama_source import add_model

pytestmark = pytest.mark.slow

REPO = "tiny-org/Tiny-GGUF"


def test_completion_and_a_download_with_a_notebook_progress_bar(tmp_path, tiny_model):
    from jupyter_client.manager import start_new_kernel

    add_model(tmp_path / "ollama", "tiny", {"model": Path(tiny_model)}, "small")
    hub = FakeHub().start()
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": tiny_model})
    env = {
        **os.environ,
        "LLM_MAGIC_MODEL": tiny_model,
        "OLLAMA_MODELS": str(tmp_path / "ollama"),
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "HF_ENDPOINT": hub.url,
        "HOME": str(tmp_path),
    }
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        kc.execute_interactive("%load_ext llm_magic", timeout=120)
        line = "%%ask -m ollama:"
        msg_id = kc.complete(line, len(line))
        reply = kc.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=60)
        content = reply["content"]
        assert "ollama:tiny:small" in content["matches"]
        assert content["cursor_start"] == len("%%ask -m ")

        hub.stall_at = Path(tiny_model).stat().st_size // 2  # the download is caught mid-file for a moment

        def release_later():
            if hub.stalled.wait(60):
                time.sleep(1.0)
                hub.release()

        threading.Thread(target=release_later, daemon=True).start()
        outputs = []
        reply = kc.execute_interactive(
            f"%%ask -m hf:{REPO}:Q4_K_M -n 3 -o a\nhello", output_hook=outputs.append, timeout=120
        )
        assert reply["content"]["status"] == "ok"
        widgets = [
            m
            for m in outputs
            if m["msg_type"] == "display_data" and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]
        ]
        assert widgets, [m["msg_type"] for m in outputs]  # tqdm.notebook's bar
        printed = []
        kc.execute_interactive("print(a.n_tokens, a.model)", output_hook=printed.append, timeout=60)
        text = "".join(m["content"].get("text", "") for m in printed if m["msg_type"] == "stream")
        assert text.strip() == f"3 hf:{REPO}:Q4_K_M"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        hub.stop()
