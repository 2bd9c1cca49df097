"""Reasoning models behind an OpenAI-compatible server: a server that passes ``<think>…</think>``
through as text (a real `python -m llama_cpp.server` serving a tiny model with Qwen3's template),
and one that sends the reasoning apart as ``reasoning_content`` deltas, the way llama-server does
(a small loopback server speaking that protocol)."""

from __future__ import annotations

import http.server
import json
import os
import threading

import pytest
from llama_templates import WHY_NONE, template_model, template_path

import llm_magic
from llm_magic.thinking import Thinking

from fake_openai import ModelsHandler
from llama_server import Server

pytest.importorskip("openai")

REASONING = "The user asks about France."
QWEN3 = template_path("Qwen-Qwen3-0.6B")


@pytest.mark.skipif(QWEN3 is None and not os.environ.get("CI"), reason=f"Qwen3's template: {WHY_NONE}")
def test_think_tags_passed_through_by_a_server_are_split_off(tmp_path_factory):
    pytest.importorskip("uvicorn")
    assert QWEN3 is not None, WHY_NONE
    model, _, _ = template_model(QWEN3, tmp_path_factory.mktemp("srv-qwen3"), user_tokens=("<think>", "</think>"))
    server = Server(str(model), alias="qwen3")
    try:
        llm_magic.current_settings().models = {"srv": {"base_url": server.url, "model": "qwen3"}}
        grammar = f'root ::= "<think>\\n{REASONING}\\n</think>\\n\\nParis is the capital."'
        answer = llm_magic.ask("Capital of France?", model="srv", grammar=grammar, temperature=0, max_tokens=60)
        assert (answer.text, answer.thinking) == ("Paris is the capital.", REASONING)
        assert 0 < answer.thinking_tokens < answer.n_tokens
    finally:
        server.stop()


class _ReasoningServer(ModelsHandler):
    """Streams ``reasoning_content`` deltas, then ``content`` deltas (llama-server's default)."""

    model_id = "r"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        deltas = [{"reasoning_content": "Let me "}, {"reasoning_content": "think."}, {"content": "Paris"}, {}]
        for i, delta in enumerate(deltas):
            chunk = {
                "id": "1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "r",
                "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if i == len(deltas) - 1 else None}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def test_reasoning_content_from_a_server_is_the_thinking():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ReasoningServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        llm_magic.current_settings().models = {"reasoner": {"base_url": url, "model": "r"}}
        stream = llm_magic.stream("Capital of France?", model="reasoner", max_tokens=20)
        chunks = list(stream)
        assert [type(c) is Thinking for c in chunks] == [True, True, False]
        answer = stream.answer
        assert (answer.text, answer.thinking, answer.thinking_tokens) == ("Paris", "Let me think.", 2)
    finally:
        httpd.shutdown()
