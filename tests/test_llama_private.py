"""The private llama-cpp-python names llm_magic relies on (all in ``engines/llama_private.py``)
still exist and still work: a llama-cpp-python upgrade that moves one fails here, by name."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

import llm_magic.engines.llama_private as private
from llm_magic.engines.base import StreamStats
from llm_magic.engines.llama import LocalModel
from llm_magic.errors import ModelLoadError
from llm_magic.specs import ModelSpec

from conftest import held_tokens
from tiny_gguf import CHATML_TEMPLATE, write_tiny_model


def _fail_on(problems: list[str]) -> None:
    if problems:
        pytest.fail("llama-cpp-python changed under llm_magic:\n  " + "\n  ".join(problems), pytrace=False)


def _load(path: Path, **options: Any) -> LocalModel:
    return LocalModel.load(ModelSpec(path=str(path), n_ctx=256, n_threads=1, n_threads_batch=1, **options))


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("private") / "chat.gguf", chat_template=CHATML_TEMPLATE)


def test_every_private_name_exists() -> None:
    _fail_on(private.check())


def test_every_private_name_works_on_a_loaded_model(chat_model: Path) -> None:
    model = _load(chat_model)
    try:
        _fail_on(private.check(model.llm))
        llm = model.llm
        assert private.n_tokens(llm) == 0
        assert isinstance(private.add_bos(llm), bool)
        assert private.token_text(llm, llm.token_bos()) == "<s>"
        assert private.vocab(llm)
        assert private.recurrent_or_hybrid(llm) is False

        prepared = model.prepare("Hello", max_tokens=5)
        assert prepared.mode == "chat" and prepared.text.startswith("<|im_start|>user\nHello<|im_end|>")
        stats = StreamStats()
        list(model.stream(prepared, max_tokens=5, should_stop=lambda: False, stats=stats, temperature=0))
        assert stats.n_tokens == 5
        # the KV cache holds prompt + generated tokens (our loop's record, checked against llama.cpp);
        # llama-cpp-python's own view of it stays empty, so its own calls start afresh
        held = held_tokens(model)
        assert held[: len(prepared.tokens)] == prepared.tokens and stats.context_tokens == held
        assert private.n_tokens(llm) == 0
        llm.eval(prepared.tokens[:3])  # llama-cpp-python's own API takes the context over ...
        assert private.n_tokens(llm) == 3
        model._kv.claim()  # ... and our loop notices: what it recorded is void
        assert model.context_tokens() == [] and private.n_tokens(llm) == 0
    finally:
        model.close()


def test_a_load_can_be_abandoned_through_the_progress_callback(chat_model: Path) -> None:
    private.install_hooks()
    params = llama_cpp.llama_cpp.llama_model_default_params()
    assert params.progress_callback, "llama_model_default_params() no longer carries our progress callback"
    abort = threading.Event()
    abort.set()
    with private.abortable_load(abort), pytest.raises(ValueError):
        llama_cpp.Llama(model_path=str(chat_model), n_ctx=64, verbose=True)
    spec = ModelSpec(path=str(chat_model), n_ctx=64, n_threads=1, n_threads_batch=1, use_mlock=False)
    with pytest.raises(ModelLoadError, match="abandoned"):
        LocalModel.load(spec, abort=abort)
    LocalModel.load(spec, abort=threading.Event()).close()  # not set: loads


def test_native_log_lines_are_captured(chat_model: Path) -> None:
    private.install_hooks()
    with private.capture_native_log() as lines:
        llm = llama_cpp.Llama(model_path=str(chat_model), n_ctx=64, verbose=True)
    try:
        assert any("llama" in line for line in lines), "llama.cpp's log no longer reaches our callback"
    finally:
        llm.close()
    assert private.native_reason(["fine\n", "load: error: bad tensor\n", "ok\n"]) == "load: error: bad tensor"


@pytest.mark.parametrize(
    ("owner", "name", "shown"),
    [
        (llama_cpp.llama_grammar.LlamaGrammar, "from_string", "llama_cpp.LlamaGrammar._grammar"),
        (llama_cpp.llama_cpp, "llama_state_seq_get_data", "llama_cpp.llama_cpp.llama_state_seq_get_data"),
    ],
)
def test_check_names_what_moved(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, shown: str) -> None:
    monkeypatch.delattr(owner, name)
    problems = private.check()
    assert any(
        p.startswith(f"llama-cpp-python {llama_cpp.__version__} moved or removed {shown}")
        and p.endswith("update llm_magic/engines/llama_private.py")
        for p in problems
    ), problems


def test_every_vision_handler_we_name_exists() -> None:
    import llama_cpp.llama_chat_format as chat_format

    from llm_magic.engines.llama_vision import HANDLERS

    missing = sorted({cls for cls in HANDLERS.values() if not hasattr(chat_format, cls)})
    assert not missing, (
        f"llama-cpp-python {llama_cpp.__version__} has no {', '.join(missing)}; "
        "update HANDLERS in llm_magic/engines/llama_vision.py"
    )
