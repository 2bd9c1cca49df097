"""llm_magic.background: ``run_in_background`` consumes a request on a named worker thread
(``llm_magic-gen-N``) — ``on_chunk`` per chunk, ``on_done`` once with the ``Answer``, a future that
resolves to it; an error reaches ``on_done`` and the future; ``cleanup_models()`` stops it."""

from __future__ import annotations

import threading
import time

import pytest

import llm_magic
from llm_magic import runtime
from llm_magic.answer import Answer
from llm_magic.background import run_in_background
from llm_magic.errors import ModelLoadError

from conftest import llm_threads


class Recorder:
    """What the callbacks saw, and on which threads."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.chunk_threads: set[str] = set()
        self.done: list[tuple[Answer | None, BaseException | None, str]] = []
        self.first_chunk = threading.Event()
        self.finished = threading.Event()

    def on_chunk(self, chunk: str) -> None:
        self.chunks.append(chunk)
        self.chunk_threads.add(threading.current_thread().name)
        self.first_chunk.set()

    def on_done(self, answer: Answer | None, error: BaseException | None) -> None:
        self.done.append((answer, error, threading.current_thread().name))
        self.finished.set()


def test_a_request_runs_on_a_named_worker_thread(tiny_model):
    rec = Recorder()
    request = llm_magic.stream("Tell me", model=tiny_model, max_tokens=12, temperature=0)
    future = run_in_background(request, on_chunk=rec.on_chunk, on_done=rec.on_done)
    answer = future.result(timeout=60)
    assert isinstance(answer, Answer) and answer is request.answer
    assert answer.finish_reason == "length" and answer.n_tokens == 12
    assert "".join(rec.chunks) == answer and len(rec.chunks) == 12
    [thread] = rec.chunk_threads
    assert thread.startswith("llm_magic-gen-") and thread != threading.main_thread().name
    assert rec.finished.wait(10)
    assert len(rec.done) == 1
    [(done_answer, error, done_thread)] = rec.done
    assert done_answer is answer and error is None and done_thread == thread
    assert llm_magic.last_answer() is answer


def test_the_caller_is_not_blocked(tiny_model):
    llm_magic.ask("warm up", model=tiny_model, max_tokens=1)
    rec = Recorder()
    request = llm_magic.stream("go", model=tiny_model, max_tokens=100_000, timeout=60)
    t0 = time.monotonic()
    future = run_in_background(request, on_chunk=rec.on_chunk, on_done=rec.on_done)
    assert time.monotonic() - t0 < 1 and not future.done()
    assert rec.first_chunk.wait(30)
    request.stop()
    answer = future.result(timeout=30)
    assert answer.finish_reason == "cancelled" and answer.n_tokens >= 1
    assert "".join(rec.chunks) == answer
    assert rec.done[0][0] is answer


def test_without_callbacks(tiny_model):
    future = run_in_background(llm_magic.stream("x", model=tiny_model, max_tokens=3))
    assert future.result(timeout=60).n_tokens == 3


def test_a_load_error_reaches_on_done_and_the_future(corrupt_files):
    rec = Recorder()
    future = run_in_background(
        llm_magic.stream("x", model=str(corrupt_files["not_gguf"])), on_chunk=rec.on_chunk, on_done=rec.on_done
    )
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        future.result(timeout=60)
    assert rec.finished.wait(10) and len(rec.done) == 1
    [(answer, error, thread)] = rec.done
    assert isinstance(error, ModelLoadError) and error is future.exception()
    assert answer is not None and answer.finish_reason == "error" and "not a GGUF file" in answer.error
    assert answer == "" and rec.chunks == [] and thread.startswith("llm_magic-gen-")


def test_an_error_in_on_chunk_reaches_on_done_and_the_future(tiny_model):
    rec = Recorder()

    def failing(chunk: str) -> None:
        rec.on_chunk(chunk)
        raise RuntimeError("the widget is gone")

    future = run_in_background(
        llm_magic.stream("x", model=tiny_model, max_tokens=50, timeout=60), on_chunk=failing, on_done=rec.on_done
    )
    with pytest.raises(RuntimeError, match="the widget is gone"):
        future.result(timeout=60)
    assert rec.finished.wait(10) and len(rec.done) == 1
    assert rec.done[0][1] is future.exception() and len(rec.chunks) == 1


def test_an_error_in_on_chunk_frees_the_model(tiny_model):
    rec = Recorder()

    def failing(chunk: str) -> None:
        raise RuntimeError("the widget is gone")

    future = run_in_background(
        llm_magic.stream("x", model=tiny_model, max_tokens=50, timeout=120), on_chunk=failing, on_done=rec.on_done
    )
    assert isinstance(future.exception(timeout=60), RuntimeError) and rec.finished.wait(10)
    answer = rec.done[0][0]
    assert answer is not None and answer.partial  # the partial answer, not None
    nxt = llm_magic.ask("next", model=tiny_model, max_tokens=2, timeout=10)
    assert nxt.finish_reason == "length"  # not a 10 s timeout waiting for the abandoned request


def test_cleanup_models_stops_a_background_request(tiny_model):
    rec = Recorder()
    future = run_in_background(
        llm_magic.stream("go on", model=tiny_model, max_tokens=100_000, timeout=120),
        on_chunk=rec.on_chunk,
        on_done=rec.on_done,
    )
    assert rec.first_chunk.wait(30)
    t0 = time.monotonic()
    llm_magic.cleanup_models()
    assert time.monotonic() - t0 < 10
    answer = future.result(timeout=10)
    assert answer.finish_reason == "cancelled" and len(answer) > 0 and answer.n_tokens >= len(rec.chunks) >= 1
    assert rec.finished.is_set() and rec.done[0][0] is answer and rec.done[0][1] is None
    assert llm_threads() == [] and runtime.get().requests() == []
