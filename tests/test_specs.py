"""llm_magic.specs: turning a model name (alias, path, or nothing for the default model) into a
``ModelSpec`` — missing files, no model configured, bad aliases, the default model's order,
threads defaulting to physical cores, n_ctx capped at the trained length."""

from __future__ import annotations

import os

import pytest
from traitlets import TraitError

import llm_magic
from llm_magic import runtime
from llm_magic.errors import ConfigError, ModelNotFound
from llm_magic.gguf_header import read_header
from llm_magic.specs import ENV_MODEL, ModelSpec, default_model_name, physical_cores, resolve


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelNotFound, match=r"not found.*nope.gguf"):
        llm_magic.ask("x", model=str(tmp_path / "nope.gguf"))
    llm_magic.current_settings().models = {"other": {"path": str(tmp_path / "x.gguf")}}
    with pytest.raises(ModelNotFound, match=r"configured aliases: other.*LLM_MAGIC_MODEL"):
        resolve(str(tmp_path / "nope.gguf"))
    assert runtime.get().cache_if_open() is None  # nothing was loaded


def test_a_directory_is_not_a_model(tmp_path):
    (tmp_path / "dir.gguf").mkdir()
    with pytest.raises(ModelNotFound, match="is a directory"):
        llm_magic.ask("x", model=str(tmp_path / "dir.gguf"))


def test_no_model_configured(monkeypatch):
    monkeypatch.setattr("llm_magic.default_model.is_installed", lambda: False)
    assert default_model_name() is None
    with pytest.raises(ModelNotFound, match=r"LLM_MAGIC_MODEL.*AskMagics.model.*default-model"):
        llm_magic.ask("x")


def test_the_default_model_comes_from_settings_then_the_environment(monkeypatch, tiny_model, tiny_model_b):
    monkeypatch.setattr("llm_magic.default_model.is_installed", lambda: False)
    monkeypatch.setenv(ENV_MODEL, tiny_model)
    assert default_model_name() == tiny_model and resolve().path == os.path.realpath(tiny_model)
    llm_magic.current_settings().model = tiny_model_b
    assert resolve().path == os.path.realpath(tiny_model_b)
    assert llm_magic.ask("x", max_tokens=2).model == "tiny-b.gguf"


def test_alias_with_unknown_key(tiny_model):
    settings = llm_magic.current_settings()
    with pytest.raises(TraitError, match=r"n_cxt.*valid keys"):
        settings.models = {"bad": {"path": tiny_model, "n_cxt": 64}}
    # a dict changed in place is not validated by traitlets: resolve checks again
    settings.models["bad"] = {"path": tiny_model, "n_cxt": 64}
    with pytest.raises(ConfigError, match=r"n_cxt.*valid keys"):
        llm_magic.ask("x", model="bad")


def test_an_alias_and_its_path_are_one_model(tiny_model, llama_constructions):
    llm_magic.current_settings().models = {"t": {"path": tiny_model}}
    by_alias, by_path = resolve("t"), resolve(tiny_model)
    assert by_alias.key == by_path.key and by_alias.display_name == "t" and by_path.display_name == "tiny.gguf"
    assert llm_magic.ask("x", model="t", max_tokens=2).model == "t"
    llm_magic.ask("x", model=tiny_model, max_tokens=2)
    assert llama_constructions["n"] == 1


def test_alias_options_and_paths(tiny_model, monkeypatch):
    monkeypatch.setenv("MODELS_HERE", os.path.dirname(tiny_model))
    llm_magic.current_settings().models = {
        "small": {"path": "$MODELS_HERE/tiny.gguf", "n_ctx": 64, "n_batch": 16, "chat": "completion"},
        "srv": {"base_url": "http://127.0.0.1:9/v1/", "model": "m"},
    }
    small = resolve("small")
    assert small.path == os.path.realpath(tiny_model) and (small.n_ctx, small.n_batch, small.chat) == (
        64,
        16,
        "completion",
    )
    srv = resolve("srv")  # a remote alias: nothing on disk to check
    assert srv.remote and srv.base_url == "http://127.0.0.1:9/v1" and srv.remote_model == "m" and srv.path == ""
    assert isinstance(srv, ModelSpec) and srv.display_name == "srv"


def test_threads_default_to_physical_cores(tiny_model):
    spec = resolve(tiny_model)
    assert spec.n_threads == physical_cores() == spec.n_threads_batch
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
    llm_magic.ask("x", model=tiny_model, max_tokens=1)
    entry = llm_magic.models()[0]
    assert entry["n_threads"] == physical_cores()
    llm_magic.current_settings().n_threads = 1
    assert resolve(tiny_model).n_threads == resolve(tiny_model).n_threads_batch == 1


def test_n_ctx_is_capped_at_trained_length(tiny_model):
    llm_magic.current_settings().n_ctx = 1_000_000
    assert resolve(tiny_model).n_ctx == 1_000_000  # the spec asks; the engine caps at load time
    llm_magic.ask("x", model=tiny_model, max_tokens=1)
    trained = read_header(tiny_model).context_length
    assert llm_magic.models()[0]["n_ctx"] == trained
