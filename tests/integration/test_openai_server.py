"""llm_magic.engines.openai (``RemoteModel``): remote models over an OpenAI-compatible server —
against two real servers on 127.0.0.1 serving the tiny test model, `python -m llama_cpp.server` and
llama.cpp's own `llama-server` (built once from the vendored sources, see tests/llama_server.py), and a
small loopback HTTP server that misbehaves on purpose (5xx, malformed streams)."""

from __future__ import annotations

import http.server
import json
import signal
import socket
import threading
import time
from typing import ClassVar

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic import runtime
from llm_magic.engines.base import Engine
from llm_magic.engines.openai import RemoteModel, describe_connection_error
from llm_magic.specs import resolve

from conftest import run, run_error
from fake_openai import ModelsHandler
from llama_server import free_port, need_llama_cpp_tools, start_server

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

SECRET = "sk-test-7f3a9c1e5b"

# every test that talks to a real server runs against both
SERVER_KINDS = [
    pytest.param("llama_cpp.server"),
    pytest.param("llama-server", marks=pytest.mark.llama_cpp_tools),
]


def _server_kind(request) -> str:
    if request.param == "llama-server":
        need_llama_cpp_tools()  # skip outside CI when it cannot be built here (no compiler), fail in CI
    return request.param


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request, tmp_path_factory):
    from tiny_gguf import write_tiny_model

    kind = _server_kind(request)
    model = str(write_tiny_model(tmp_path_factory.mktemp("srv") / "tiny.gguf", n_ctx_train=32768))
    srv = start_server(kind, model)
    yield srv
    srv.stop()


@pytest.fixture(params=SERVER_KINDS)
def server_kind(request) -> str:
    """For the tests that start (and kill) a server of their own."""
    return _server_kind(request)


@pytest.fixture
def srv_alias(server):
    llm_magic.current_settings().models = {"srv": {"base_url": server.url, "model": "tiny"}}
    return "srv"


def test_remote_ask_streams_chunk_by_chunk(ip, server):
    ip.run_line_magic("config", f"AskMagics.models = {{'srv': {{'base_url': {server.url!r}, 'model': 'tiny'}}}}")
    s = llm_magic.stream("Tell me about Paris", model="srv", max_tokens=40, temperature=0)
    arrivals = []
    for chunk in s:
        arrivals.append((time.monotonic(), chunk))
    answer = s.answer
    assert answer.finish_reason == "length" and len(arrivals) >= 20  # one piece per token, not one blob
    assert answer.text == "".join(c for _, c in arrivals)
    assert arrivals[-1][0] > arrivals[0][0]
    run(ip, "%%ask -m srv -n 10 -o a\nhello")
    assert ip.user_ns["a"].n_tokens == 10 and ip.user_ns["a"].model == "srv"


def test_remote_status_shows_url_and_latency(srv_alias, server):
    [entry] = llm_magic.preload("srv")
    entry.future.result(30)
    [info] = [m for m in llm_magic.models() if m["name"] == "srv"]
    assert info["state"] == "remote" and info["path"] == server.url
    assert info["latency_s"] is not None and info["server_models"] == ["tiny"]
    table = llm_magic.status_table()
    assert "remote" in table and server.url in table


def test_a_remote_model_is_an_engine_the_server_schedules(srv_alias, server):
    [entry] = llm_magic.preload("srv")
    model = entry.future.result(30)
    assert isinstance(model, RemoteModel) and isinstance(model, Engine)
    assert model.kind == "remote" and model.concurrency > 1 and entry.queue.slots == model.concurrency
    assert model.info()["server_models"] == ["tiny"] and model.info()["latency_s"] > 0
    chat = model.prepare("hello", system="Be brief.")
    assert chat.mode == "chat" and chat.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    llm_magic.unload("srv")
    assert model.closed


def test_the_completions_endpoint(server):
    llm_magic.current_settings().models = {"cmp": {"base_url": server.url, "model": "tiny", "endpoint": "completions"}}
    a = llm_magic.ask("What is it?", model="cmp", max_tokens=6, temperature=0)
    assert a.finish_reason == "length" and a.n_tokens == 6 and len(a) > 0
    [entry] = runtime.get().cache.find("cmp")
    prepared = entry.model.prepare("What is it?")
    assert prepared.mode == "completion" and prepared.text == "Q: What is it?\nA:" and prepared.messages is None
    raw = llm_magic.ask("Once upon a time", model="cmp", max_tokens=6, temperature=0, raw=True)
    assert raw.n_tokens == 6 and raw != a  # another prompt reached the server


def test_remote_timeout_keeps_the_partial_answer(srv_alias):
    a = llm_magic.ask("Write forever", model="srv", max_tokens=100_000, timeout=2.0, temperature=0)
    assert a.finish_reason == "timeout" and a.n_tokens > 0 and len(a) > 0
    assert 1.9 < a.total_s < 8
    b = llm_magic.ask("again", model="srv", max_tokens=5)
    assert b.finish_reason == "length"  # the server is free again: the stream was closed


def test_remote_stop_cancels(srv_alias):
    s = llm_magic.stream("go", model="srv", max_tokens=100_000, timeout=60)
    got = []
    for chunk in s:
        got.append(chunk)
        if len(got) == 10:
            threading.Thread(target=s.stop).start()
    assert s.answer.finish_reason == "cancelled" and 10 <= len(got) < 500


def test_unknown_model_lists_the_servers_models(server):
    llm_magic.current_settings().models = {"bad": {"base_url": server.url, "model": "qwen-72b"}}
    with pytest.raises(llm_magic.ModelLoadError, match=r"unknown model 'qwen-72b'; the server has: tiny"):
        llm_magic.ask("x", model="bad")


def test_nothing_listening_is_connection_refused(ip):
    port = free_port()
    ip.run_line_magic("config", f"AskMagics.models = {{'gone': {{'base_url': 'http://127.0.0.1:{port}/v1'}}}}")
    error, out = run_error(ip, "%%ask -m gone\nhello")
    assert isinstance(error, UsageError)
    message = str(error)
    assert "connection refused" in message and f"127.0.0.1:{port}" in message and "gone" in message
    _, out = run(ip, "%llm status")
    assert "failed" in out and "connection refused" in out


def test_dns_failure_message():
    err = socket.gaierror(-2, "Name or service not known")
    wrapped = RuntimeError("Connection error.")
    wrapped.__cause__ = err
    assert describe_connection_error(wrapped) == "cannot resolve the host name (DNS failure)"


def test_api_key_wrong_key_and_secrecy(ip, server_kind, tmp_path_factory, monkeypatch, caplog):
    from tiny_gguf import write_tiny_model

    model = str(write_tiny_model(tmp_path_factory.mktemp("srvkey") / "tiny.gguf"))
    srv = start_server(server_kind, model, api_key=SECRET)
    try:
        monkeypatch.setenv("MY_KEY", "sk-wrong-key-0000")
        ip.run_line_magic(
            "config",
            f"AskMagics.models = {{'srv': {{'base_url': {srv.url!r}, 'model': 'tiny', 'api_key_env': 'MY_KEY'}}}}",
        )
        error, out = run_error(ip, "%%ask -m srv -n 5\nhello")
        assert isinstance(error, UsageError)
        assert "401 Unauthorized: check the key in $MY_KEY" in str(error)
        assert "sk-wrong-key-0000" not in str(error) + out + caplog.text
        monkeypatch.setenv("MY_KEY", SECRET)
        llm_magic.unload(all=True)
        _, out = run(ip, "%%ask -m srv -n 5 -o a\nhello")
        assert ip.user_ns["a"].n_tokens == 5
        _, status_out = run(ip, "%llm status")
        everything = (
            out
            + status_out
            + caplog.text
            + repr(resolve("srv"))
            + repr(llm_magic.models())
            + repr(ip.user_ns["a"])
            + repr(runtime.get().cache.entries())
        )
        assert SECRET not in everything
    finally:
        srv.stop()


def test_server_killed_mid_stream_keeps_partial_text(server_kind, tmp_path_factory):
    from tiny_gguf import write_tiny_model

    model = str(write_tiny_model(tmp_path_factory.mktemp("srvkill") / "tiny.gguf", n_ctx_train=32768))
    srv = start_server(server_kind, model)
    try:
        llm_magic.current_settings().models = {"dying": {"base_url": srv.url, "model": "tiny"}}
        s = llm_magic.stream("go", model="dying", max_tokens=100_000, timeout=60)
        got = []
        for chunk in s:
            got.append(chunk)
            if len(got) == 20:
                srv.proc.send_signal(signal.SIGKILL)
        a = s.answer
        assert a.finish_reason == "error" and len(a) > 0 and a.text.startswith("".join(got[:20]))
        assert "broke off the stream" in a.error and srv.url in a.error
    finally:
        srv.stop()


def test_token_counts_come_from_the_server(server):
    """llama-server sends `usage` (when asked: stream_options.include_usage) and its `timings`: the prompt
    tokens it evaluated, the rest reused from its cache. llama_cpp.server sends neither in a stream."""
    if server.kind != "llama-server":
        pytest.skip("llama_cpp.server sends no usage in a stream: the answer counts its chunks")
    llm_magic.current_settings().models = {"srv": {"base_url": server.url, "model": "tiny"}}
    prompt = "Tell me everything about the history of Paris, the capital of France."
    a = llm_magic.ask(prompt, model="srv", max_tokens=8, temperature=0)
    b = llm_magic.ask(prompt, model="srv", max_tokens=8, temperature=0)
    assert a.n_tokens == b.n_tokens == 8 and a.n_prompt_tokens == b.n_prompt_tokens > 10
    assert 0 < b.n_prompt_evaluated < b.n_prompt_tokens  # the same prompt again: the server reused its cache


def test_stop_strings_end_the_answer_on_the_server(srv_alias):
    full = llm_magic.ask("Tell me about Paris", model="srv", max_tokens=30, temperature=0)
    words = full.text.split()
    stop = next(w for w in words[len(words) // 2 :] if len(w) >= 3)
    cut = llm_magic.ask("Tell me about Paris", model="srv", max_tokens=30, temperature=0, stop=[stop, "@@", "##", "%%"])
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)]


def test_a_prompt_longer_than_the_servers_context_is_one_line(server_kind, tmp_path_factory):
    from tiny_gguf import write_tiny_model

    model = str(write_tiny_model(tmp_path_factory.mktemp("srvctx") / "tiny.gguf"))
    srv = start_server(server_kind, model, n_ctx=256)
    try:
        llm_magic.current_settings().models = {"small": {"base_url": srv.url, "model": "tiny"}}
        with pytest.raises(llm_magic.LLMMagicError) as info:
            llm_magic.ask("word " * 600, model="small", max_tokens=5)
        message = str(info.value)
        assert "\n" not in message and srv.url in message and "context" in message.lower()
        assert llm_magic.ask("hi", model="small", max_tokens=3).n_tokens == 3  # the server and the model go on
    finally:
        srv.stop()


# ---- 5xx and malformed streams: a small loopback HTTP server that misbehaves on purpose -------------


class _Handler(ModelsHandler):
    mode = "500"
    hits = 0
    bodies: ClassVar[list[dict]] = []  # mode "record": the JSON bodies received

    def do_POST(self):
        type(self).hits += 1
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.mode == "record":
            type(self).bodies.append(json.loads(raw))
        if self.mode == "500":
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "boom"}}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunk = {
            "id": "1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}],
        }
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if self.mode == "record":
            chunk["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
            self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
        elif self.mode == "error-event":  # how llama-server reports a failure once the stream has begun
            error = {"code": 500, "message": "context shift is disabled\n(see --context-shift)", "type": "server_error"}
            self.wfile.write(f"data: {json.dumps({'error': error})}\n\n".encode())
        else:
            self.wfile.write(b"data: {this is not json\n\n")
        self.wfile.flush()


@pytest.fixture
def bad_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def test_5xx_is_retried_once_then_reported(bad_server):
    _Handler.mode, _Handler.hits = "500", 0
    url = f"http://127.0.0.1:{bad_server.server_address[1]}/v1"
    llm_magic.current_settings().models = {"flaky": {"base_url": url, "model": "m"}}
    with pytest.raises(llm_magic.LLMMagicError, match=r"flaky \(http://127.0.0.1:\d+/v1\): server error 500"):
        llm_magic.ask("x", model="flaky", max_tokens=5)
    assert _Handler.hits == 2  # one retry before the first token


def test_malformed_stream_keeps_partial_text(bad_server):
    _Handler.mode = "garbage"
    url = f"http://127.0.0.1:{bad_server.server_address[1]}/v1"
    llm_magic.current_settings().models = {"weird": {"base_url": url, "model": "m"}}
    a = llm_magic.ask("x", model="weird", max_tokens=5)
    assert a == "Hello" and a.finish_reason == "error" and "malformed stream" in a.error


def test_an_error_event_in_the_stream_is_the_servers_own_message(bad_server):
    _Handler.mode = "error-event"
    url = f"http://127.0.0.1:{bad_server.server_address[1]}/v1"
    llm_magic.current_settings().models = {"ev": {"base_url": url, "model": "m"}}
    a = llm_magic.ask("x", model="ev", max_tokens=5)
    assert a == "Hello" and a.finish_reason == "error"
    assert a.error.endswith("the server reported an error: context shift is disabled (see --context-shift)")


def test_penalties_are_sent_as_openai_parameters(bad_server):
    _Handler.mode, _Handler.bodies = "record", []
    url = f"http://127.0.0.1:{bad_server.server_address[1]}/v1"
    llm_magic.current_settings().models = {"rec": {"base_url": url, "model": "m"}}
    a = llm_magic.ask("x", model="rec", max_tokens=5, frequency_penalty=0.5, presence_penalty=-0.25)
    assert a == "Hello"
    body = _Handler.bodies[-1]
    assert (body["frequency_penalty"], body["presence_penalty"]) == (0.5, -0.25)
    assert body["stream_options"] == {"include_usage": True}  # what llama-server needs to send `usage`
    llm_magic.current_settings().presence_penalty = 1.5  # the setting is the default
    llm_magic.ask("x", model="rec", max_tokens=5)
    assert (_Handler.bodies[-1]["frequency_penalty"], _Handler.bodies[-1]["presence_penalty"]) == (0.0, 1.5)


def test_remote_alias_command(ip, server):
    run(ip, f"%llm alias srv2 --base-url {server.url} --model tiny")
    _, out = run(ip, "%llm aliases")
    assert "srv2" in out and server.url in out
    run(ip, "%%ask -m srv2 -n 4 -o a\nhi")
    assert ip.user_ns["a"].n_tokens == 4 and ip.user_ns["a"].model == "srv2"
    error, _ = run_error(ip, "%llm alias x --base-url ftp://nope")
    assert isinstance(error, UsageError) and "http://" in str(error)
    assert "x" not in llm_magic.current_settings().aliases()


def test_remote_models_do_not_count_against_the_local_budget(srv_alias, tiny_model):
    llm_magic.current_settings().max_loaded_models = 1
    llm_magic.ask("x", model=tiny_model, max_tokens=2)
    llm_magic.ask("x", model="srv", max_tokens=2)
    rows = {m["name"]: m["state"] for m in llm_magic.models() if m.get("note") != "the default model"}
    assert rows == {"tiny.gguf": "ready", "srv": "remote"}
