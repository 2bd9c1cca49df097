"""llm_magic.ipython.model_commands: %llm status (other load options replace a model; the default
model listed when not loaded), load, unload, alias, aliases."""

from __future__ import annotations

import shutil

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic import runtime

from conftest import run, run_error


def test_status_load_unload(ip, tiny_model_b):
    run(ip, "%%ask -n 2\nhi")
    _, out = run(ip, f"%llm load {tiny_model_b} --wait")
    assert out.startswith("ready in ") and out.strip().endswith("s: tiny-b.gguf")
    assert [e.state for e in runtime.get().cache.find("tiny-b.gguf")] == ["ready"]
    _, out = run(ip, "%llm status")
    for word in ("model", "state", "size", "load s", "uses", "last used", "mlock", "tiny.gguf", "tiny-b.gguf", "ready"):
        assert word in out
    assert out.strip() == llm_magic.status_table()
    _, out = run(ip, "%llm unload tiny-b.gguf")
    assert out.strip() == "unloaded 1 model"
    assert [m["name"] for m in llm_magic.models()] == ["tiny.gguf"]
    _, out = run(ip, "%llm unload --all")
    assert out.strip() == "unloaded 1 model"
    [default] = llm_magic.models()  # the default model is still configured: listed, not loaded
    assert (default["name"], default["state"], default["note"]) == ("tiny.gguf", "unloaded", "the default model")
    _, out = run(ip, "%llm status")
    assert "no models loaded" not in out
    assert [line.split()[:3] for line in out.strip().splitlines()[2:]] == [["tiny.gguf", "-", "unloaded"]]
    assert "the default model" in out


def test_status_with_nothing_configured(shell, monkeypatch):
    monkeypatch.setattr("llm_magic.default_model.is_installed", lambda: False)
    shell.run_line_magic("load_ext", "llm_magic")
    assert llm_magic.models() == []
    _, out = run(shell, "%llm status")
    assert out.strip() == "no models loaded or configured (see %llm help)"


def test_config_n_ctx_replaces_the_loaded_model(ip):
    cache = runtime.get().cache
    run(ip, "%%ask -n 2\nhi")
    [old] = cache.entries()
    old_model = old.model
    run(ip, "%config AskMagics.n_ctx = 8192")
    run(ip, "%%ask -n 2 -o a\nhi")
    assert ip.user_ns["a"].n_tokens == 2 and cache.constructions == 2
    assert old_model.closed and [e.spec.n_ctx for e in cache.entries()] == [8192]
    _, out = run(ip, "%llm status")
    header, _, *lines = out.strip().splitlines()
    assert header.split()[:3] == ["model", "options", "state"]
    assert [line.split()[:3] for line in lines] == [["tiny.gguf", "n_ctx=8192", "ready"]]  # one row, one copy


def test_load_without_wait_returns_at_once(ip, tiny_model_b):
    _, out = run(ip, f"%llm load {tiny_model_b}")
    assert out.strip() == "loading in the background: tiny-b.gguf"
    [entry] = runtime.get().cache.find("tiny-b.gguf")
    runtime.get().cache.get(entry.spec)  # it does load
    assert entry.state == "ready"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%llm unload nothing-loaded", "no loaded model named 'nothing-loaded' (loaded: "),
        ("%llm unload", "usage: %llm unload NAME | --all"),
        ("%llm unload a b", "usage: %llm unload NAME"),
        ("%llm load", "usage: %llm load NAME"),
        ("%llm load --now x", "usage: %llm load NAME"),
        ("%llm load /no/such.gguf", "model file not found: /no/such.gguf"),
        ("%llm load 'unclosed", "No closing quotation"),
    ],
)
def test_model_command_errors(ip, line, message):
    error, out = run_error(ip, line)
    assert isinstance(error, UsageError) and message in str(error) and "Traceback" not in out


def test_alias_commands(ip, tiny_model, tmp_path):
    spaced = tmp_path / "my models" / "tiny copy.gguf"
    spaced.parent.mkdir()
    shutil.copy(tiny_model, spaced)
    _, out = run(ip, "%llm aliases")
    assert out.strip() == "no aliases (set AskMagics.models, or %llm alias NAME PATH)"
    _, out = run(ip, f'%llm alias mine "{spaced}" --n-ctx 512 --n-batch 64 --no-mlock')
    assert out.strip() == f"alias mine -> {spaced} n_ctx=512 n_batch=64 use_mlock=False"
    _, out = run(ip, "%llm aliases")
    assert "mine" in out and "tiny copy.gguf" in out and "n_ctx=512" in out and "(session)" in out
    run(ip, "%%ask -m mine -n 3 -o a\nhi")
    assert ip.user_ns["a"].model == "mine"
    info = next(m for m in llm_magic.models() if m["name"] == "mine")
    assert info["n_ctx"] == 512 and info["mlock"] == "off"


def test_config_and_session_aliases_are_listed_with_their_source(ip, tiny_model):
    run(ip, f"%config AskMagics.models = {{'conf': {{'path': {tiny_model!r}}}}}")
    run(ip, f"%llm alias sess {tiny_model}")
    _, out = run(ip, "%llm aliases")
    lines = out.strip().splitlines()
    assert lines[0].startswith("conf ") and lines[0].endswith("(config)")
    assert lines[1].startswith("sess ") and lines[1].endswith("(session)")


def test_alias_line_is_not_var_expanded(ip, tiny_model):
    ip.user_ns["x"] = "EXPANDED"
    _, out = run(ip, f"%llm alias $x {tiny_model}")
    assert out.startswith("alias $x -> ")
    assert "$x" in llm_magic.current_settings().session_aliases
    assert "EXPANDED" not in llm_magic.current_settings().aliases()
    run(ip, "%%ask -m $x -n 2 -o a\nhi")  # and -m takes the name as written too
    assert ip.user_ns["a"].model == "$x"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%llm alias x /no/such.gguf", "model file not found"),
        ("%llm alias x", "needs a 'path'"),
        ("%llm alias x {model} --n-cxt 5", "unrecognized arguments"),
        ("%llm alias x {model} --n-ctx -5", "n_ctx must be positive"),
        ("%llm alias x {model} --base-url http://h/v1", "either 'path' or 'base_url'"),
    ],
)
def test_alias_errors(ip, tiny_model, line, message):
    error, out = run_error(ip, line.format(model=tiny_model))
    assert isinstance(error, UsageError), out
    assert message in str(error)
    assert "x" not in llm_magic.current_settings().aliases()
