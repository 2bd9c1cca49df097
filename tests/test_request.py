"""llm_magic.request: ``Stream``, ``ask`` and ``stream`` on real tiny GGUF models — streaming, the
answer's fields, timeouts, stop from another thread, KeyboardInterrupt, concurrency, and streams
that are dropped or left unread."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

import llm_magic
from llm_magic import cache as cache_mod
from llm_magic import request, runtime
from llm_magic.errors import ConfigError

from conftest import LONG_CTX


@pytest.fixture
def slow_load(monkeypatch):
    """Make the runtime's next cache load models ``seconds`` late (the real loader, started late)."""

    def install(seconds: float) -> None:
        assert runtime.get().cache_if_open() is None  # the next cache is built with the patched loader
        real = cache_mod.load_engine

        def late(spec, abort=None):
            time.sleep(seconds)
            return real(spec, abort)

        monkeypatch.setattr(cache_mod, "load_engine", late)

    return install


def test_ask_streams_chunks_and_returns_answer(tiny_model):
    s = llm_magic.stream("What is the capital of France?", model=tiny_model, max_tokens=40, temperature=0)
    assert isinstance(s, request.Stream) and s.answer is None
    chunks = list(s)
    answer = s.answer
    assert len(chunks) > 5
    assert "".join(chunks) == answer
    assert isinstance(answer, str) and isinstance(answer, llm_magic.Answer)
    assert answer.finish_reason == "length" and not answer.partial
    assert answer.n_tokens == 40
    assert answer.n_prompt_tokens > 0 and answer.n_prompt_evaluated == answer.n_prompt_tokens  # nothing cached yet
    assert answer.ttft_s is not None and 0 < answer.ttft_s <= answer.total_s
    assert answer.tokens_per_s and answer.tokens_per_s > 0
    assert answer.model == "tiny.gguf"
    assert llm_magic.last_answer() is answer
    assert s.progress().phase == "done" and s.progress().n_tokens == len(chunks)


def test_the_phases_run_in_order(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=30)
    assert s.phase == "start"
    next(s)
    assert s.phase == "generate"
    s.consume()
    assert s.phase == "done" and request.PHASES == ("start", "load", "queue", "prompt", "generate", "done")


def test_timeout_gives_partial_answer_and_model_stays_usable(tiny_model, caplog):
    caplog.set_level("INFO", logger="llm_magic")  # where the time went: INFO (the cell shows it under the answer)
    # the tiny model streams thousands of tokens a second: a window it cannot fill in 3 s
    llm_magic.current_settings().models = {"long": {"path": tiny_model, "n_ctx": LONG_CTX}}
    a = llm_magic.ask("Tell me a long story", model="long", max_tokens=100_000, timeout=3.0, temperature=0)
    assert a.finish_reason == "timeout", a.timings()
    assert a.n_tokens > 0 and len(a) > 0 and a.partial
    assert 2.9 < a.total_s < 8
    assert "timed out after 3 s — partial answer" in a.marker()
    assert any(r.levelname == "INFO" and "timed out" in r.message and "generation" in r.message for r in caplog.records)
    assert a.time_report is not None and "generation" in a.time_report
    b = llm_magic.ask("again", model="long", max_tokens=10)
    assert b.finish_reason == "length" and b.n_tokens == 10


def test_timeout_while_loading_says_no_token_came(tiny_model, slow_load, llama_constructions):
    slow_load(1.0)
    a = llm_magic.ask("x", model=tiny_model, timeout=0.2)
    assert a.finish_reason == "timeout" and a == "" and a.n_tokens == 0
    assert "no token came" in a.marker() and "loading" in a.marker()
    # the load was not thrown away: it finishes and the next ask uses it
    b = llm_magic.ask("x", model=tiny_model, max_tokens=3, timeout=30)
    assert b.finish_reason == "length"
    assert llama_constructions["n"] == 1


def test_stop_from_another_thread_cancels(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000)
    got = []
    for chunk in s:
        got.append(chunk)
        if len(got) == 20:
            threading.Thread(target=s.stop).start()
    assert s.answer.finish_reason == "cancelled"
    assert 20 <= len(got) < 200  # stopped within a few tokens, not at max_tokens
    assert s.answer == "".join(got)  # every chunk streamed is in the answer, nothing more


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
    assert "cancelled — partial answer" in answer.marker()
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


@pytest.mark.timeout(180)
def test_eight_threads_across_models_get_their_own_complete_answers(tiny_model, tiny_model_b):
    a, b = tiny_model, tiny_model_b
    jobs = [(m, f"prompt number {i}") for i, m in enumerate([a, a, a, a, b, b, b, b])]
    expected = {(m, p): llm_magic.ask(p, model=m, max_tokens=60, temperature=0) for m, p in jobs}
    results: dict = {}
    errors: list = []
    barrier = threading.Barrier(len(jobs))

    def worker(m, p):
        try:
            barrier.wait(30)
            results[(m, p)] = llm_magic.ask(p, model=m, max_tokens=60, temperature=0, timeout=120)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert errors == []
    assert len(set(expected.values())) > 1  # the prompts really give different answers
    for job in jobs:
        got = results[job]
        assert got.finish_reason == "length" and got.n_tokens == 60
        assert got == expected[job]  # complete, and its own prompt's answer: no interleaving


def test_a_stream_nobody_reads_is_reclaimed_after_its_deadline(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000, timeout=0.5)
    next(s)  # holds the model's queue slot, suspended
    b = llm_magic.ask("next", model=tiny_model, max_tokens=3, timeout=30)
    assert b.n_tokens == 3 and b.total_s < 20
    assert s.answer is not None and s.answer.finish_reason in ("timeout", "cancelled")
    assert not s.suspended()


def test_a_dropped_stream_frees_its_model(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000, timeout=300)
    dropped = weakref.ref(s)
    for _chunk in s:
        break
    del s  # nothing references the stream any more, but its generator holds the model
    [entry] = runtime.get().cache.entries()
    assert entry.queue.holders() == [dropped()]
    b = llm_magic.ask("next", model=tiny_model, max_tokens=3, timeout=30)
    assert b.n_tokens == 3 and b.total_s < 20
    gc.collect()
    assert dropped() is None  # collected, and with it its slot
    assert entry.queue.holders() == [] and entry.active == 0
    assert runtime.get().requests() == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 0}, "timeout must be a positive"),
        ({"timeout": -1}, "timeout must be a positive"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"bogus": 1}, "unknown option"),
    ],
)
def test_bad_options(tiny_model, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        llm_magic.ask("x", model=tiny_model, **kwargs)
    assert runtime.get().cache_if_open() is None  # refused before any model was loaded


def test_empty_prompt(tiny_model):
    with pytest.raises(ConfigError, match="empty"):
        llm_magic.ask("   \n", model=tiny_model)
    assert runtime.get().cache_if_open() is None


def test_settings_are_the_request_defaults(tiny_model):
    s = llm_magic.current_settings()
    s.max_tokens, s.temperature, s.seed = 7, 0.9, 123
    a = llm_magic.ask("hello", model=tiny_model)
    b = llm_magic.ask("hello", model=tiny_model)
    assert a.n_tokens == b.n_tokens == 7 and a == b  # the settings' seed makes it repeatable
    assert llm_magic.ask("hello", model=tiny_model, max_tokens=3).n_tokens == 3  # an argument wins


def test_progress_counts_tokens_not_chunks_when_stop_strings_hold_text_back(tiny_model):
    """A stop string that never matches still holds back text that might start it; the live count
    is the engine's token count, and at the end it equals the Answer's."""
    s = llm_magic.stream("hello", model=tiny_model, max_tokens=40, temperature=0, stop=[" zzq", " qqz", "\n\n"])
    seen = []
    for _chunk in s:
        p = s.progress()
        seen.append((p.phase, p.n_tokens))
    answer = s.answer
    assert answer.finish_reason == "length" and answer.n_tokens == 40
    assert all(phase == "generate" for phase, _ in seen)
    counts = [n for _, n in seen]
    assert counts == sorted(counts) and counts[-1] <= 40
    final = s.progress()
    assert final.phase == "done" and final.n_tokens == answer.n_tokens and final.tokens_per_s
