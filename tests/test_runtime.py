"""llm_magic.runtime: the one owner of process-wide state — ``close()`` (``cleanup_models``) closes
models and stops threads, also in the middle of a generation; the runtime is usable again after;
the exit hook is registered once."""

from __future__ import annotations

import contextlib
import time

import llm_magic
from llm_magic import runtime
from llm_magic.engines import llama_private as private

from conftest import llm_threads


def test_cleanup_closes_models_and_stops_threads(tiny_model, tiny_model_b):
    llm_magic.ask("x", model=tiny_model, max_tokens=2)
    llm_magic.ask("x", model=tiny_model_b, max_tokens=2)
    models = [e.model for e in runtime.get().cache.entries()]
    assert len(models) == 2 and llm_threads()
    llm_magic.cleanup_models()
    assert all(m.closed for m in models)
    for m in models:  # llama.cpp's context is freed, not just marked closed
        with contextlib.suppress(AttributeError):
            assert private.native_context(m.llm) is None
    assert llm_threads() == [] and runtime.get().threads() == []
    assert runtime.get().cache_if_open() is None
    assert [m for m in llm_magic.models() if m["state"] != "unloaded"] == []  # (the default model: not loaded)
    llm_magic.cleanup_models()  # idempotent


def test_cleanup_during_generation_stops_it(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000)
    next(iter(s))
    assert runtime.get().requests() == [s]
    t0 = time.monotonic()
    llm_magic.cleanup_models()
    answer = s.consume()
    assert answer.finish_reason == "cancelled" and len(answer) > 0
    assert time.monotonic() - t0 < 3
    assert llm_threads() == [] and runtime.get().requests() == []


def test_stop_all_stops_every_running_request(tiny_model, tiny_model_b):
    a = llm_magic.stream("go", model=tiny_model, max_tokens=100_000, timeout=60)
    b = llm_magic.stream("go", model=tiny_model_b, max_tokens=100_000, timeout=60)
    next(a), next(b)
    runtime.get().stop_all()
    assert a.answer.finish_reason == b.answer.finish_reason == "cancelled"  # suspended ones are closed at once
    assert llm_magic.ask("next", model=tiny_model, max_tokens=3).n_tokens == 3  # the models stay loaded
    assert {m["state"] for m in llm_magic.models() if m.get("note") != "the default model"} == {"ready"}


def test_runtime_is_usable_again_after_close(tiny_model):
    rt = runtime.get()
    first = llm_magic.ask("hello", model=tiny_model, max_tokens=5, temperature=0, conversation="kept")
    old_cache = rt.cache
    llm_magic.cleanup_models()
    assert old_cache.closed
    again = llm_magic.ask("hello", model=tiny_model, max_tokens=5, temperature=0)
    assert again == first and again.n_tokens == 5
    assert rt.cache is not old_cache and not rt.cache.closed  # a fresh cache...
    assert rt.submit(lambda: 41 + 1).result(10) == 42  # ...and a fresh worker pool
    [conv] = rt.conversations.find("kept")  # conversations survive a close
    assert conv.turns[0].user == "hello" and conv.turns[0].answer == first
    assert llm_magic.last_answer() is again


def test_the_exit_hook_is_registered_once(monkeypatch, tiny_model):
    registered = []
    monkeypatch.setattr(runtime.atexit, "register", registered.append)
    rt = runtime.Runtime()
    try:
        assert registered == []  # nothing until the first use
        rt.cache.load(llm_magic.resolve(tiny_model)).future.result(30)
        rt.submit(lambda: None).result(10)
        rt.close()
        entry = rt.cache.load(llm_magic.resolve(tiny_model))  # a fresh cache after close: still one hook
        model = entry.future.result(30)
        rt.submit(lambda: None).result(10)
        assert registered == [rt._close_at_exit]
        registered[0]()  # what runs at interpreter exit: closes everything, raises nothing
        assert model.closed and entry.state == "unloaded"
        assert rt.cache_if_open() is None and rt.threads() == []
        registered[0]()  # twice is harmless
    finally:
        rt.close()
