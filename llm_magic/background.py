"""Consuming a request on a worker thread, so a front end (the panel) keeps the kernel free."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

from . import runtime
from .answer import Answer
from .request import Stream


def run_in_background(
    request: Stream,
    on_chunk: Callable[[str], None] | None = None,
    on_done: Callable[[Answer | None, BaseException | None], None] | None = None,
) -> Future[Answer]:
    """Consume ``request`` on a named worker thread (``llm_magic-gen-N``) so the kernel stays free.

    ``on_chunk`` runs on that thread for every chunk (set widget traits there; never print);
    ``on_done(answer, error)`` runs once at the end. The future resolves to the ``Answer``.
    ``cleanup_models()`` stops the request and the worker threads."""

    def work() -> Answer:
        answer, error = None, None
        try:
            answer = request.consume(on_chunk)
            return answer
        except BaseException as exc:  # reported through on_done and the future
            error = exc
            raise
        finally:
            if on_done is not None:
                on_done(request.answer if answer is None else answer, error)

    return runtime.get().submit(work)
