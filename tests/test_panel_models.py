"""llm_magic.panel_models: the panel's model list, model states and status lines."""

from __future__ import annotations

import html
import re
import types

import llm_magic
from llm_magic import runtime, specs
from llm_magic.answer import Answer
from llm_magic.errors import ConfigError
from llm_magic.panel_models import (
    answer_status_html,
    failed_answer,
    model_choices,
    model_status_html,
    request_status_html,
    state_of,
    status_html,
    wait_parts,
)
from llm_magic.request import Progress


def text(status: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", status))


def progress(**kw) -> Progress:
    base = {
        "model": "tiny.gguf",
        "phase": "generate",
        "elapsed_s": 1.0,
        "n_tokens": 0,
        "tokens_per_s": None,
        "ttft_s": None,
        "loading_s": None,
        "stopping": False,
    }
    base.update(kw)
    return Progress(**base)


def test_model_choices_dedupes_default_alias_and_loaded(use_model, tiny_model):
    llm_magic.current_settings().models = {"t": {"path": tiny_model}}
    llm_magic.current_settings().model = "t"
    llm_magic.preload("t")
    values = [v for _, v in model_choices()]
    assert values == ["t"]
    assert model_choices("/some/where.gguf")[0] == ("/some/where.gguf — missing", "/some/where.gguf")


def test_model_choices_labels_and_order(use_model, tiny_model, tiny_model_b, chat_model):
    llm_magic.current_settings().models = {"b": {"path": tiny_model_b}}
    assert model_choices() == [("default · tiny.gguf — not loaded", tiny_model), ("b (tiny-b.gguf) — not loaded", "b")]
    runtime.get().cache.get(specs.resolve(chat_model))
    assert model_choices(chat_model)[0] == ("tiny-chat.gguf — ready", chat_model)
    assert [v for _, v in model_choices()] == [tiny_model, "b", chat_model]  # loaded models are listed too


def test_showing_choices_creates_no_cache(use_model):
    assert runtime.get().cache_if_open() is None
    model_choices()
    state_of(specs.default_model_name())
    assert runtime.get().cache_if_open() is None  # read-only: nothing loads, no thread starts


def test_state_of(use_model, tiny_model, corrupt_files):
    assert state_of("/nowhere.gguf")[0] == "missing" and "model file not found" in state_of("/nowhere.gguf")[2]
    assert state_of(tiny_model) == ("not loaded", None, None)
    entry = runtime.get().cache.get(specs.resolve(tiny_model))
    assert state_of(tiny_model) == ("ready", entry, None)
    bad = str(corrupt_files["not_gguf"])
    llm_magic.preload(bad)
    runtime.get().cache.entry(specs.resolve(bad)).future.exception(timeout=30)
    state, _, error = state_of(bad)
    assert state == "failed" and "not a GGUF file" in error


def test_model_status_lines(use_model, tiny_model):
    assert text(model_status_html(tiny_model)) == f"◌ {tiny_model}: not loaded (loads on the first Ask)"
    runtime.get().cache.get(specs.resolve(tiny_model))
    assert text(model_status_html(tiny_model)) == "● tiny.gguf: ready"
    assert text(model_status_html("/x.gguf")).startswith("✖ model file not found")
    assert text(model_status_html(None)).startswith("✖ no model configured")


def test_request_status_lines():
    stream = types.SimpleNamespace(progress=lambda: progress(phase="load", loading_s=2.4))
    assert text(request_status_html(stream)) == "◌ tiny.gguf: loading (2 s)"
    stream.progress = lambda: progress(phase="queue", elapsed_s=3.2)
    assert "waiting for the model (busy with another request, 3 s)" in text(request_status_html(stream))
    stream.progress = lambda: progress(phase="prompt")
    assert text(request_status_html(stream)) == "◌ tiny.gguf: reading the prompt…"  # not counted yet
    # a long prompt, evaluated batch by batch: the cell's words
    stream.progress = lambda: progress(phase="prompt", prompt_tokens=4461, prompt_done=1024)
    assert text(request_status_html(stream)) == "◌ tiny.gguf: reading the prompt 1,024 / 4,461 tokens"
    stream.progress = lambda: progress(phase="prompt", prompt_tokens=12)  # short: no batches, so no counts
    assert text(request_status_html(stream)) == "◌ tiny.gguf: reading the prompt…"
    # the time to the first token is for the final line (which tells it apart from any wait)
    stream.progress = lambda: progress(n_tokens=40, tokens_per_s=123.4, ttft_s=0.05)
    assert text(request_status_html(stream)) == "◌ tiny.gguf: generating · 40 tokens · 123 tokens/s"
    # a Progress the caller has already is used as it is
    p = progress(n_tokens=41, tokens_per_s=123.4, ttft_s=3.3)
    assert text(request_status_html(None, p=p)) == "◌ tiny.gguf: generating · 41 tokens · 123 tokens/s"
    stream.progress = lambda: progress(n_tokens=40, stopping=True)
    assert text(request_status_html(stream)) == "◌ tiny.gguf: stopping…"
    # a stream-like object without progress(), or one whose progress() fails
    crafted = types.SimpleNamespace(model_name="crafted")
    assert text(request_status_html(crafted)) == "◌ crafted: generating…"
    assert text(request_status_html(crafted, n_pieces=3)) == "◌ crafted: generating · 3 chunks"
    broken = types.SimpleNamespace(model_name="b", progress=lambda: 1 / 0)
    assert text(request_status_html(broken)) == "◌ b: generating…"


def test_answer_status_and_failed_answer():
    done = Answer("hi", model="tiny.gguf", n_tokens=2, tokens_per_s=50.0, ttft_s=0.1, finish_reason="length")
    assert (
        text(answer_status_html(done)) == "● tiny.gguf · 2 tokens · 50 tokens/s · first token 0.10 s · finish: length"
    )
    assert "waited" not in text(answer_status_html(done, queued=True))  # no prompt_s: no decomposition
    failed = failed_answer(None, done, ConfigError("<b>bad</b>"), "ignored")
    assert failed.text == "hi" and failed.finish_reason == "error" and failed.error == "<b>bad</b>"
    assert failed.n_tokens == 2 and done.finish_reason == "length"  # the original is untouched
    status = answer_status_html(failed)
    assert "<b>" not in status and text(status).endswith("finish: error · <b>bad</b>")
    other = failed_answer(types.SimpleNamespace(model_name="m"), None, ValueError("boom"), "partial")
    assert (other.text, other.model, other.error) == ("partial", "m", "ValueError: boom")
    assert failed_answer(None, None, None, "").error == "the generation ended without an answer"


def test_answer_status_shows_the_waits_apart_from_the_first_token():
    # ttft_s (from the start of the request) = load wait + busy-model wait + prompt_s (+ a hair)
    meta = {"model": "m", "n_tokens": 9, "finish_reason": "stop", "prompt_s": 0.04}
    queued = Answer("hi", load_wait_s=0.001, ttft_s=3.25, **meta)
    assert text(answer_status_html(queued, queued=True)) == (
        "● m · 9 tokens · waited 3.2 s for the model · first token 0.04 s · finish: stop"
    )
    assert wait_parts(queued) == ["first token 3.25 s"]  # not seen waiting: nothing to take apart
    loaded = Answer("hi", load_wait_s=2.1, ttft_s=2.16, **meta)
    assert wait_parts(loaded) == ["waited 2.1 s for the load", "first token 0.06 s"]
    both = Answer("hi", load_wait_s=2.0, ttft_s=5.05, **meta)
    assert wait_parts(both, queued=True) == [
        "waited 2.0 s for the load",
        "waited 3.0 s for the model",
        "first token 0.04 s",
    ]
    # a timeout while waiting: no first token, the load wait still shows
    assert wait_parts(Answer("", load_wait_s=1.0, finish_reason="timeout"), queued=True) == [
        "waited 1.0 s for the load"
    ]


def test_status_html_escapes():
    assert status_html("✖", "<script>x</script>", "red") == (
        '<span style="color:red;overflow-wrap:anywhere">✖ &lt;script&gt;x&lt;/script&gt;</span>'
    )
