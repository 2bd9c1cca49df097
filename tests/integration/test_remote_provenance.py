"""A remote model's answer on record: Answer.prompt as the chat messages rendered as text, the
provenance naming the server's URL and model (never the key), the log row, and replay by URL and
model — against a real `python -m llama_cpp.server` on 127.0.0.1."""

from __future__ import annotations

import pytest

import llm_magic
from llm_magic import answer_record, ask_log

from llama_server import Server

pytest.importorskip("openai")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow

SECRET = "sk-provenance-4d2b8e"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tiny_gguf import write_tiny_model

    model = str(write_tiny_model(tmp_path_factory.mktemp("srv") / "tiny.gguf", n_ctx_train=32768))
    srv = Server(model)
    yield srv
    srv.stop()


def test_remote_answers_are_recorded_and_replayed(server, monkeypatch):
    monkeypatch.setenv("PROV_KEY", SECRET)
    llm_magic.current_settings().models = {"srv": {"base_url": server.url, "model": "tiny", "api_key_env": "PROV_KEY"}}
    answer = llm_magic.ask(f"my key is {SECRET}", model="srv", max_tokens=4, seed=2, system="Be brief.")
    assert answer.prompt == f"[system]\nBe brief.\n\n[user]\nmy key is {SECRET}"
    meta = answer.provenance
    assert meta["base_url"] == server.url and meta["remote_model"] == "tiny" and meta["server_model"] == "tiny"
    assert "sha256" not in meta and meta["seed"] == 2 and meta["max_tokens"] == 4
    [row] = ask_log.get().recent(1)
    assert SECRET not in row.prompt and SECRET not in row.model_prompt and "[api key]" in row.prompt
    assert row.metadata["base_url"] == server.url
    again = answer_record.replay(
        llm_magic.stream(f"my key is {SECRET}", model="srv", max_tokens=4, seed=2, system="Be brief.")
    )
    assert again is not None and again.replayed and again.text == answer.text
