"""%%ask, %ask and %llm in a real InteractiveShell with the tiny model."""

from __future__ import annotations

import _thread
import threading
import time

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic import cache as cache_mod
from llm_magic import config
from llm_magic.display import StreamDisplay, safe_markdown
from llm_magic.magics import split_options

from conftest import llm_threads, run


def test_cell_magic_streams_and_stores_answer(ip):
    result, out = run(ip, "%%ask -n 20 --temperature 0 -o ans\nWhat is the capital of France?")
    assert result.success, out
    ans = ip.user_ns["ans"]
    assert isinstance(ans, llm_magic.Answer)
    assert ans.finish_reason == "length" and ans.n_tokens == 20
    assert ans.text.strip() in out  # streamed to stdout in a terminal shell
    assert llm_magic.last_answer() is ans
    assert result.result is None  # shown once, not echoed again as Out[]


def test_line_magic_takes_prompt_after_flags(ip):
    result, out = run(ip, "%ask -n 5 -o a What's the capital of France? Don't say \"Rome\".")
    assert result.success, out
    a = ip.user_ns["a"]
    assert a.n_tokens == 5
    stream_prompt = llm_magic.cache.get_cache().entries()[0].model
    assert stream_prompt is not None


def test_second_ask_builds_no_second_llama(ip, llama_constructions, use_model):
    run(ip, "%%ask -n 3\nfirst")
    built = llama_constructions["n"]
    assert built <= 1  # 1 if the preload finished after the spy was installed
    run(ip, "%%ask -n 3 -o b\nsecond")
    run(ip, "%%ask -n 3\nthird")
    assert llama_constructions["n"] == built
    assert cache_mod.get_cache().constructions == 1
    assert ip.user_ns["b"].load_wait_s < 0.05


def test_timeout_marks_partial_answer(ip, caplog):
    result, out = run(ip, "%%ask -t 1 -n 100000 --temperature 0 -o a\nTell me everything")
    assert result.success, out
    a = ip.user_ns["a"]
    assert a.finish_reason == "timeout" and a.n_tokens > 0
    assert "timed out after 1 s — partial answer" in out
    assert any("timed out" in r.getMessage() for r in caplog.records)
    result, out = run(ip, "%%ask -n 5 -o b\nnext")
    assert result.success and ip.user_ns["b"].n_tokens == 5


def test_kernel_interrupt_keeps_partial_answer(ip):
    timer = threading.Timer(0.4, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    result, out = run(ip, "%%ask -n 100000 -t 60 -o a\nTalk")
    timer.join()
    assert time.monotonic() - t0 < 5
    a = ip.user_ns["a"]
    assert a.finish_reason == "cancelled" and a.n_tokens > 0 and len(a) > 0
    assert "cancelled — partial answer" in out
    result, out = run(ip, "%%ask -n 4 -o b\nstill there?")
    assert result.success and ip.user_ns["b"].n_tokens == 4


def test_load_ext_returns_while_slow_preload_runs_and_first_ask_waits_for_it(
        _shell, use_model, monkeypatch, llama_constructions):
    real = cache_mod._default_loader
    monkeypatch.setattr(cache_mod, "_default_loader", lambda spec: (time.sleep(1.5), real(spec))[1])
    t0 = time.monotonic()
    _shell.run_line_magic("load_ext", "llm_magic")
    try:
        assert time.monotonic() - t0 < 0.5
        [entry] = cache_mod.get_cache().entries()
        assert entry.state == "loading"
        result, out = run(_shell, "%%ask -n 3 -o a\nhi")
        assert result.success, out
        a = _shell.user_ns["a"]
        assert 0.8 < a.load_wait_s < 5
        assert llama_constructions["n"] == 1  # the ask used the preload, it did not start another
        assert entry.state == "ready" and entry.uses == 1
    finally:
        _shell.run_line_magic("unload_ext", "llm_magic")


def test_unload_ext_closes_models_and_stops_threads(_shell, use_model):
    _shell.run_line_magic("load_ext", "llm_magic")
    run(_shell, "%%ask -n 3\nhi")
    models = [e.model for e in cache_mod.get_cache().entries()]
    assert models and llm_threads()
    _shell.run_line_magic("unload_ext", "llm_magic")
    assert all(m.closed for m in models)
    assert llm_threads() == []
    assert "ask" not in _shell.magics_manager.magics["cell"]


def test_reload_ext_leaves_nothing_behind(_shell, use_model):
    _shell.run_line_magic("load_ext", "llm_magic")
    run(_shell, "%%ask -n 3\nhi")
    old = [e.model for e in cache_mod.get_cache().entries()]
    _shell.run_line_magic("reload_ext", "llm_magic")
    try:
        assert all(m.closed for m in old)
        result, out = run(_shell, "%%ask -n 3 -o a\nhi")
        assert result.success and _shell.user_ns["a"].n_tokens == 3
        assert len(cache_mod.get_cache().entries()) == 1
    finally:
        _shell.run_line_magic("unload_ext", "llm_magic")
    assert llm_threads() == []


def test_config_traits(ip, tiny_model, caplog):
    ip.run_line_magic("config", "AskMagics.max_tokens = 7")
    ip.run_line_magic("config", f"AskMagics.models = {{'tiny': {{'path': {tiny_model!r}, 'n_ctx': 256}}}}")
    result, out = run(ip, "%%ask -m tiny -o a\nhi")
    assert result.success, out
    assert ip.user_ns["a"].n_tokens == 7 and ip.user_ns["a"].model == "tiny"
    # traitlets rejects bad values (it logs the error); the old value stays in force
    run(ip, "%config AskMagics.timeout = 0")
    assert "timeout must be > 0" in caplog.text and config.settings.timeout == 120
    run(ip, f"%config AskMagics.models = {{'x': {{'path': {tiny_model!r}, 'ctx': 1}}}}")
    assert "valid keys" in caplog.text and "tiny" in config.settings.models


def test_status_load_unload(ip, tiny_model_b):
    run(ip, "%%ask -n 2\nhi")
    result, out = run(ip, f"%llm load {tiny_model_b} --wait")
    assert result.success and "ready" in out
    result, out = run(ip, "%llm status")
    for word in ("model", "state", "size", "load s", "uses", "last used", "tiny.gguf", "tiny-b.gguf", "ready"):
        assert word in out
    result, out = run(ip, "%llm unload tiny-b.gguf")
    assert "unloaded 1 model" in out
    result, out = run(ip, "%llm unload --all")
    assert "unloaded 1 model" in out
    assert llm_magic.models() == []


def test_help(ip):
    result, out = run(ip, "%%ask?\n")
    assert "--timeout" in out or "-t TIMEOUT" in out
    result, out = run(ip, "%llm help")
    for sub in ("status", "load", "unload", "--all", "alias", "aliases", "explain", "history", "reset", "panel", "help"):
        assert f"{sub}" in out


@pytest.mark.parametrize("cell, message", [
    ("%%ask\n   \n", "prompt is empty"),
    ("%ask", "prompt is empty"),
    ("%%ask --bogus\nhi", "unknown option --bogus"),
    ("%%ask -t 0\nhi", "timeout must be a positive"),
    ("%%ask -t -5\nhi", "timeout must be a positive"),
    ("%%ask -n 0\nhi", "max_tokens must be a positive"),
    ("%%ask -t abc\nhi", "invalid float value"),
    ("%%ask -m /no/such/model.gguf\nhi", "model file not found: /no/such/model.gguf"),
    ("%llm frobnicate", "unknown subcommand"),
    ("%llm unload nothing-loaded", "no loaded model"),
])
def test_bad_input_is_a_usage_error(ip, cell, message):
    result, out = run(ip, cell)
    assert isinstance(result.error_in_exec, UsageError), out
    assert message in str(result.error_in_exec)
    assert "Traceback" not in out
    result, out = run(ip, "%%ask -n 2 -o ok\nstill alive")
    assert result.success and ip.user_ns["ok"].n_tokens == 2


def test_no_model_configured_is_a_usage_error(ip, monkeypatch):
    monkeypatch.delenv(config.ENV_MODEL)
    monkeypatch.setattr("llm_magic.default_model.is_installed", lambda: False)
    result, out = run(ip, "%%ask\nhi")
    assert isinstance(result.error_in_exec, UsageError)
    for hint in ("LLM_MAGIC_MODEL", "%config AskMagics.model", "default-model"):
        assert hint in str(result.error_in_exec)


@pytest.mark.parametrize("kind, reason", [("not_gguf", "not a GGUF file"), ("truncated", "truncated")])
def test_corrupt_model_is_a_usage_error(ip, corrupt_files, kind, reason):
    result, out = run(ip, f"%%ask -m {corrupt_files[kind]}\nhi")
    assert isinstance(result.error_in_exec, UsageError) and reason in str(result.error_in_exec)
    result, out = run(ip, "%%ask -n 2 -o ok\nother models keep working")
    assert result.success and ip.user_ns["ok"].n_tokens == 2


def test_prompt_too_long_is_a_usage_error(ip, tiny_model):
    ip.run_line_magic("config", f"AskMagics.models = {{'small': {{'path': {tiny_model!r}, 'n_ctx': 64}}}}")
    result, out = run(ip, "%%ask -m small\n" + "word " * 300)
    assert isinstance(result.error_in_exec, UsageError) and "context window" in str(result.error_in_exec)


def test_split_options_keeps_prompt_verbatim():
    values, flags = {"-m", "-t", "--model", "-n"}, {"--raw"}
    assert split_options("-m x -t 3 What's up?", values, flags) == ("-m x -t 3 ", "What's up?")
    assert split_options('--raw say "hi" {a: 1}', values, flags) == ("--raw ", 'say "hi" {a: 1}')
    assert split_options("-m 'my model.gguf' hi", values, flags) == ("-m 'my model.gguf' ", "hi")
    assert split_options("-t 3 -- -m is text", values, flags) == ("-t 3 ", "-m is text")
    assert split_options("-n 5", values, flags) == ("-n 5", "")
    with pytest.raises(UsageError, match="unknown option --nope"):
        split_options("--nope x", values, flags)


def test_notebook_display_is_throttled_and_final_text_complete(ip):
    from IPython.utils.capture import capture_output

    view = StreamDisplay(mode="notebook")
    with capture_output() as captured:
        view.start()
        t0 = time.monotonic()
        for i in range(3000):
            view.add(f"t{i} ")
            if i % 100 == 0:
                time.sleep(0.01)
        elapsed = time.monotonic() - t0
        view.finish(marker="⏱ timed out after 1 s — partial answer, 3000 tokens")
    assert view.n_updates <= 25 * elapsed + 2
    assert view.n_updates >= 3  # it did update while streaming
    final = captured.outputs[-1].data
    assert final["text/plain"].startswith("t0 t1 ") and "t2999 " in final["text/plain"]
    assert "timed out" in final["text/markdown"]


def test_markdown_escapes_html_but_not_code():
    evil = "Hi <img src=x onerror=alert(1)> <script>x()</script> [a](javascript:alert(1)) `<b>` \n```\n<i>\n```"
    safe = safe_markdown(evil)
    assert "<img" not in safe and "<script" not in safe and "javascript:" not in safe
    assert "&lt;img" in safe and "`<b>`" in safe and "```\n<i>\n```" in safe


def test_line_ask_with_question_mark_is_not_a_help_request(ip):
    result, out = run(ip, "%ask -n 4 -o q What is the capital of France?")
    assert result.success, out
    assert ip.user_ns["q"].n_tokens == 4
    assert llm_magic.last_answer() is ip.user_ns["q"]


def test_unload_ext_removes_config_and_transformer(_shell, use_model):
    _shell.run_line_magic("load_ext", "llm_magic")
    _shell.run_line_magic("reload_ext", "llm_magic")
    assert sum(type(c).__name__ == "AskMagics" for c in _shell.configurables) == 1
    _shell.run_line_magic("unload_ext", "llm_magic")
    assert not any(type(c).__name__ == "AskMagics" for c in _shell.configurables)
    assert not any(getattr(t, "__name__", "") == "ask_line_transformer" for t in _shell.input_transformers_cleanup)
