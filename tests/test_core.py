"""The core without IPython: cache, engine and generation on real tiny GGUF models."""

from __future__ import annotations

import threading
import time
import types

import pytest

import llm_magic
from llm_magic import cache as cache_mod
from llm_magic import config
from llm_magic.cache import ModelCache
from llm_magic.errors import ConfigError, ModelLoadError, ModelNotFound, PromptTooLong
from llm_magic.gguf_header import diagnose, read_header

from conftest import llm_threads


def test_ask_streams_chunks_and_returns_answer(tiny_model):
    s = llm_magic.stream("What is the capital of France?", model=tiny_model, max_tokens=40, temperature=0)
    chunks = list(s)
    answer = s.answer
    assert len(chunks) > 5
    assert "".join(chunks) == answer
    assert isinstance(answer, str) and isinstance(answer, llm_magic.Answer)
    assert answer.finish_reason == "length"
    assert answer.n_tokens == 40
    assert answer.ttft_s is not None and 0 < answer.ttft_s <= answer.total_s
    assert answer.tokens_per_s and answer.tokens_per_s > 0
    assert answer.model == "tiny.gguf"
    assert llm_magic.last_answer() is answer


def test_same_seed_same_answer(tiny_model):
    a = llm_magic.ask("hello", model=tiny_model, max_tokens=30, temperature=0.8, seed=42)
    b = llm_magic.ask("hello", model=tiny_model, max_tokens=30, temperature=0.8, seed=42)
    assert a == b and len(a) > 0


def test_model_is_built_once_per_spec(tiny_model, llama_constructions):
    for _ in range(3):
        llm_magic.ask("hi", model=tiny_model, max_tokens=5)
    assert llama_constructions["n"] == 1
    [info] = llm_magic.models()
    assert info["uses"] == 3 and info["state"] == "ready" and info["load_s"] > 0
    assert set(info) >= {"name", "path", "state", "size_bytes", "load_s", "uses", "last_used", "error"}


def test_concurrent_loads_share_one_load(tiny_model, llama_constructions, monkeypatch):
    real = cache_mod._default_loader

    def slow_loader(spec):
        time.sleep(0.5)
        return real(spec)

    monkeypatch.setattr(cache_mod, "_default_loader", slow_loader)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(llm_magic.ask("x", model=tiny_model, max_tokens=3)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 4 and all(a.finish_reason == "length" for a in answers)
    assert llama_constructions["n"] == 1


def test_timeout_gives_partial_answer_and_model_stays_usable(tiny_model, caplog):
    a = llm_magic.ask("Tell me a long story", model=tiny_model, max_tokens=100_000, timeout=3.0, temperature=0)
    assert a.finish_reason == "timeout", a.timings()
    assert a.n_tokens > 0 and len(a) > 0
    assert 2.9 < a.total_s < 8
    assert "timed out after 3 s — partial answer" in a.marker()
    assert any("timed out" in r.message and "generation" in r.message for r in caplog.records)
    b = llm_magic.ask("again", model=tiny_model, max_tokens=10)
    assert b.finish_reason == "length" and b.n_tokens == 10


def test_timeout_while_loading_says_no_token_came(tiny_model, monkeypatch):
    real = cache_mod._default_loader
    monkeypatch.setattr(cache_mod, "_default_loader", lambda spec: (time.sleep(1.0), real(spec))[1])
    a = llm_magic.ask("x", model=tiny_model, timeout=0.2)
    assert a.finish_reason == "timeout" and a == "" and a.n_tokens == 0
    assert "no token came" in a.marker() and "loading" in a.marker()
    # the load was not thrown away: it finishes and the next ask uses it
    b = llm_magic.ask("x", model=tiny_model, max_tokens=3, timeout=30)
    assert b.finish_reason == "length"


def test_stop_from_another_thread_cancels(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000)
    got = []
    for chunk in s:
        got.append(chunk)
        if len(got) == 20:
            threading.Thread(target=s.stop).start()
    assert s.answer.finish_reason == "cancelled"
    assert 20 <= len(got) < 200  # stopped within a few tokens, not at max_tokens


def test_keyboard_interrupt_keeps_partial_text(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000)
    seen = []

    def on_chunk(chunk):
        seen.append(chunk)
        if len(seen) == 10:
            raise KeyboardInterrupt

    answer = s.consume(on_chunk)
    assert answer.finish_reason == "cancelled"
    assert len(seen) >= 10 and answer.startswith("".join(seen[:10]))
    assert llm_magic.ask("next", model=tiny_model, max_tokens=5).n_tokens == 5


def test_two_models_generate_at_once(tiny_model, tiny_model_b):
    results = {}

    def go(path):
        results[path] = llm_magic.ask("hi", model=path, max_tokens=200, temperature=0)

    threads = [threading.Thread(target=go, args=(p,)) for p in (tiny_model, tiny_model_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {a.finish_reason for a in results.values()} == {"length"}
    solo = llm_magic.ask("hi", model=tiny_model, max_tokens=200, temperature=0)
    assert solo == results[tiny_model]  # no interleaving: same text as alone


def test_same_model_requests_are_serialized(tiny_model):
    solo = llm_magic.ask("alpha", model=tiny_model, max_tokens=100, temperature=0)
    out = []
    threads = [threading.Thread(target=lambda: out.append(llm_magic.ask("alpha", model=tiny_model, max_tokens=100,
                                                                         temperature=0))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == 3 and all(a == solo for a in out)


def test_chat_model_uses_its_template(chat_model):
    s = llm_magic.stream("hello", model=chat_model, max_tokens=10, temperature=0)
    s.consume()
    from llm_magic.cache import get_cache

    [entry] = get_cache().entries()
    prepared = entry.model.prepare("hello")
    assert prepared.mode == "chat"
    text = entry.model.llm.detokenize(prepared.tokens, special=True).decode()
    assert "<|im_start|>user\nhello<|im_end|>" in text.replace(" ", "")  # SPM detokenizing adds spaces
    raw = entry.model.prepare("hello", raw=True)
    assert raw.mode == "raw" and len(raw.tokens) < len(prepared.tokens)


def test_base_model_gets_qa_prompt(tiny_model):
    llm_magic.ask("hello", model=tiny_model, max_tokens=2)
    from llm_magic.cache import get_cache

    [entry] = get_cache().entries()
    prepared = entry.model.prepare("What is it?")
    assert prepared.mode == "completion"
    assert entry.model.llm.detokenize(prepared.tokens).decode().strip().startswith("Q: What is it?\nA:")


def test_threads_default_to_physical_cores(tiny_model):
    spec = config.resolve(tiny_model)
    assert spec.n_threads == config.physical_cores() == spec.n_threads_batch
    llm_magic.ask("x", model=tiny_model, max_tokens=1)
    entry = llm_magic.models()[0]
    assert entry["n_threads"] == config.physical_cores()


def test_n_ctx_is_capped_at_trained_length(tiny_model):
    config.settings.n_ctx = 1_000_000
    llm_magic.ask("x", model=tiny_model, max_tokens=1)
    trained = read_header(tiny_model).context_length
    assert llm_magic.models()[0]["n_ctx"] == trained


# ---- bad input ------------------------------------------------------------------------------

def test_missing_model_file(tmp_path):
    with pytest.raises(ModelNotFound, match="not found.*nope.gguf"):
        llm_magic.ask("x", model=str(tmp_path / "nope.gguf"))


def test_no_model_configured(monkeypatch):
    monkeypatch.setattr("llm_magic.default_model.is_installed", lambda: False)
    with pytest.raises(ModelNotFound, match="LLM_MAGIC_MODEL.*AskMagics.model.*default-model"):
        llm_magic.ask("x")


@pytest.mark.parametrize("kind, reason", [("not_gguf", "not a GGUF file"), ("truncated", "truncated")])
def test_corrupt_files_fail_clearly_and_others_keep_working(kind, reason, corrupt_files, tiny_model):
    path = str(corrupt_files[kind])
    assert reason in diagnose(path)
    with pytest.raises(ModelLoadError, match=reason):
        llm_magic.ask("x", model=path)
    [bad] = [m for m in llm_magic.models() if m["path"] == path]
    assert bad["state"] == "failed" and reason in bad["error"]
    assert llm_magic.ask("x", model=tiny_model, max_tokens=3).n_tokens == 3


def test_background_failure_is_kept_raised_once_then_retried(corrupt_files):
    path = str(corrupt_files["not_gguf"])
    [entry] = llm_magic.preload(path)
    entry.future.exception(timeout=10)
    assert entry.state == "failed" and "not a GGUF" in entry.error
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        llm_magic.ask("x", model=path)
    # asking again retries the load (and fails again, the same clear way)
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        llm_magic.ask("x", model=path)


@pytest.mark.parametrize("kwargs, match", [
    (dict(timeout=0), "timeout must be a positive"),
    (dict(timeout=-1), "timeout must be a positive"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(temperature=-1), "temperature"),
    (dict(bogus=1), "unknown option"),
])
def test_bad_options(tiny_model, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        llm_magic.ask("x", model=tiny_model, **kwargs)


def test_empty_prompt(tiny_model):
    with pytest.raises(ConfigError, match="empty"):
        llm_magic.ask("   \n", model=tiny_model)


def test_prompt_longer_than_context(tiny_model):
    config.settings.models = {"small": {"path": tiny_model, "n_ctx": 64}}
    with pytest.raises(PromptTooLong, match=r"the prompt is \d+ tokens but the context window .* is 64"):
        llm_magic.ask("word " * 200, model="small")
    assert llm_magic.ask("short", model="small", max_tokens=5).n_tokens == 5


def test_alias_with_unknown_key(tiny_model):
    config.settings.models = {"bad": {"path": tiny_model, "n_cxt": 64}}
    with pytest.raises(ConfigError, match="n_cxt.*valid keys"):
        llm_magic.ask("x", model="bad")


# ---- cleanup --------------------------------------------------------------------------------

def test_cleanup_closes_models_and_stops_threads(tiny_model, tiny_model_b):
    llm_magic.ask("x", model=tiny_model, max_tokens=2)
    llm_magic.ask("x", model=tiny_model_b, max_tokens=2)
    models = [e.model for e in cache_mod.get_cache().entries()]
    assert len(models) == 2 and llm_threads()
    llm_magic.cleanup_models()
    assert all(m.closed for m in models)
    assert all(m.llm._ctx is None or getattr(m.llm._ctx, "ctx", None) is None for m in models)
    assert llm_threads() == []
    llm_magic.cleanup_models()  # idempotent


def test_cleanup_during_generation_stops_it(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000)
    next(iter(s))
    t0 = time.monotonic()
    llm_magic.cleanup_models()
    answer = s.consume()
    assert answer.finish_reason == "cancelled"
    assert time.monotonic() - t0 < 3
    assert llm_threads() == []


def test_unload_one_model(tiny_model, tiny_model_b):
    llm_magic.ask("x", model=tiny_model, max_tokens=2)
    llm_magic.ask("x", model=tiny_model_b, max_tokens=2)
    assert llm_magic.unload("tiny.gguf") == 1
    assert [m["name"] for m in llm_magic.models()] == ["tiny-b.gguf"]
    with pytest.raises(ConfigError, match="no loaded model"):
        llm_magic.unload("tiny.gguf")
    assert llm_magic.ask("x", model=tiny_model, max_tokens=2).n_tokens == 2  # reloads on demand


def test_cache_close_all_is_bounded_even_when_a_load_hangs(tiny_model):
    gate = threading.Event()
    c = ModelCache(loader=lambda spec: (gate.wait(30), types.SimpleNamespace(close=lambda: None))[1])
    c.load(config.resolve(tiny_model))
    t0 = time.monotonic()
    c.close_all(timeout=0.5)
    assert time.monotonic() - t0 < 2
    gate.set()


# ---- robustness (from review) -----------------------------------------------------------------

def test_unload_while_another_thread_streams_is_safe(tiny_model):
    result = {}

    def long_ask():
        result["a"] = llm_magic.ask("go", model=tiny_model, max_tokens=100_000, timeout=60)

    t = threading.Thread(target=long_ask)
    t.start()
    time.sleep(0.3)
    assert llm_magic.unload(tiny_model) == 1
    t.join(10)
    assert not t.is_alive() and result["a"].finish_reason == "cancelled"
    assert llm_magic.ask("again", model=tiny_model, max_tokens=3).n_tokens == 3  # reloaded


def test_a_stream_nobody_reads_is_reclaimed_after_its_deadline(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000, timeout=0.5)
    next(s)  # holds the model's lock, suspended
    b = llm_magic.ask("next", model=tiny_model, max_tokens=3, timeout=30)
    assert b.n_tokens == 3 and b.total_s < 20
    assert s.answer is not None and s.answer.finish_reason in ("timeout", "cancelled")


def test_a_dropped_stream_frees_its_model(tiny_model):
    for chunk in llm_magic.stream("go", model=tiny_model, max_tokens=100_000, timeout=300):
        break  # nothing references the stream any more
    b = llm_magic.ask("next", model=tiny_model, max_tokens=3, timeout=30)
    assert b.n_tokens == 3 and b.total_s < 20


def test_timeout_waiting_for_a_busy_model_says_so(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000, timeout=60)
    next(s)
    b = llm_magic.ask("next", model=tiny_model, max_tokens=3, timeout=0.3)
    assert b.finish_reason == "timeout" and "busy with another request" in b.marker()
    s.close()
    assert s.answer.finish_reason == "cancelled"


def test_stop_strings_cut_the_text_and_count_tokens_exactly(tiny_model):
    # the tiny model emits one ASCII token per chunk: chunk k is token k
    chunks = list(llm_magic.stream("hello", model=tiny_model, max_tokens=60, temperature=0, raw=True))
    text = "".join(chunks)
    stop = text[100:104] if len(text) > 110 else text[len(text) // 2:len(text) // 2 + 3]
    cut = text.index(stop)
    k = next(i for i in range(len(chunks)) if len("".join(chunks[:i + 1])) > cut + len(stop) - 1)
    for stop_arg in (stop, [stop]):  # a plain string is one stop string, not a list of characters
        a = llm_magic.ask("hello", model=tiny_model, max_tokens=60, temperature=0, raw=True, stop=stop_arg)
        assert a == text[:cut] and a.finish_reason == "stop"
        assert a.n_tokens == k + 1


def test_long_prompt_is_evaluated_batch_by_batch_and_can_stop_between_batches(tiny_model):
    config.settings.models = {"big": {"path": tiny_model, "n_ctx": 2048, "n_batch": 32}}
    prompt = "the capital of France is Paris " * 250
    full = llm_magic.ask(prompt, model="big", timeout=60, max_tokens=5, temperature=0)
    assert full.n_tokens == 5 and full.n_prompt_tokens > 1000
    model = cache_mod.get_cache().entries()[0].model
    prepared = model.prepare(prompt + " and more")
    seen = []

    def should_stop():
        seen.append(model.llm.n_tokens)
        return len(seen) > 3

    with model.lock:
        reuse = model._reusable_prefix(prepared.tokens)
        assert reuse > 1000  # the earlier prompt is a shared prefix
        model.llm.n_tokens = 0  # force a full evaluation
        assert model._evaluate_prompt(prepared.tokens, 0, should_stop) is False
    assert seen == [0, 32, 64, 96]  # checked before every batch of n_batch tokens
    again = llm_magic.ask(prompt, model="big", timeout=60, max_tokens=5, temperature=0)
    assert again == full  # the model state stayed consistent
