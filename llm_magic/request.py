"""One request: ``Stream`` iterates the answer's text chunks on the caller's thread, with the
deadline, Stop and interrupts enforced, and leaves an ``Answer`` at the end.

The timeout counts from the start of the request and covers waiting for a model load, waiting for
the model's queue, prompt evaluation and generation. When it fires the engine stops within one
token (or one prompt batch) and the caller gets the partial text with ``finish_reason="timeout"``.
``progress()`` tells a front end where the request stands (phase, tokens, tokens/s) at any time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

from . import answer_record, runtime
from . import settings as settings_mod
from .answer import Answer, build_answer, time_report
from .cache import ModelCache
from .cache_entry import Entry
from .engines.base import Engine, Prepared, StreamStats
from .errors import ConfigError, LLMMagicError, LoadTimeout
from .interrupts import sigint_stops
from .model_queue import ModelQueue
from .progress import PHASES, Progress
from .request_options import resolve_options
from .thinking import ThinkingSplitter, answer_fields, join, split_stream, think_note

__all__ = ["PHASES", "Progress", "Stream", "ask", "stream"]  # PHASES, Progress: from .progress

log = logging.getLogger("llm_magic")


def _message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, LLMMagicError) else f"{type(exc).__name__}: {exc}"


class Stream:
    """An iterator of text chunks for one request; ``.answer`` holds the ``Answer`` once exhausted.

    ``stop()`` (from any thread) ends it within one token with ``finish_reason="cancelled"``.
    A ``KeyboardInterrupt`` while iterating does the same and keeps the partial text.
    """

    def __init__(
        self,
        prompt: str,
        model: str | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
        raw: bool = False,
        system: str | None = None,
        conversation: str | None = None,
        on_status: Callable[[str], None] | None = None,
        cancel_if: Callable[[], bool] | None = None,
        images: Sequence[Any] | None = None,
        think: bool | None = None,
        **sampling: Any,
    ):
        self.started = time.monotonic()
        if not isinstance(prompt, str) or not prompt.strip():  # type: ignore[redundant-expr]  # callers pass anything
            raise ConfigError("the prompt is empty: write the question in the cell (or after %ask)")
        options = resolve_options(model, timeout, max_tokens, system, images, sampling)
        self.spec, self.images = options.spec, options.images
        self.prompt, self.raw, self.system = prompt, raw, options.system
        self.conversation = conversation
        self.think_asked = think is not None  # --think/--no-think: say so when the model cannot
        self.think = think if think is not None else settings_mod.current().think
        self.timeout, self.max_tokens, self.sampling = options.timeout, options.max_tokens, options.sampling
        self.deadline = self.started + self.timeout if self.timeout else None
        self.on_status = on_status
        self.cancel_if = cancel_if  # polled with the deadline: True cancels (e.g. a kernel shutdown)
        self.answer: Answer | None = None
        self.entry: Entry | None = None
        self.phase = "start"  # start -> load -> queue -> prompt -> generate -> done
        self.defer_log = False  # front ends that show the answer first call log_timeout() after
        self._stop_reason: str | None = None
        self._stop_event = threading.Event()
        self._iter_lock = threading.Lock()  # next() vs abandon() from another thread
        self._stats: StreamStats | None = None
        self._times: dict[str, float] = {}
        self._n_chunks = 0
        self.prepared: Prepared | None = None  # the prompt as the engine built it (Answer.prompt)
        self._splitter: ThinkingSplitter | None = None  # a reasoning model: thinking apart from the answer
        self._notes: list[str] = []  # short notes for under the answer
        self._iter: Generator[str, None, None] = self._run()

    # ---- control, from any thread -------------------------------------------------------------

    def stop(self, reason: str = "cancelled") -> None:
        """Ask the generation to end; it does within one token."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop_event.set()
        cancel = self._stats.cancel if self._stats is not None else None
        if cancel is not None:  # a remote stream: close the connection now, the server stops too
            try:
                cancel()
            except Exception:  # best effort; the engine also checks once per chunk
                log.debug("llm_magic: cancelling a remote stream failed", exc_info=True)

    @property
    def model_name(self) -> str:
        return self.spec.display_name

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        with self._iter_lock:
            return next(self._iter)

    def close(self) -> None:
        """Stop and release the model now. A stream you stop reading keeps its model busy until you
        close it, or until its deadline passes and another request on that model reclaims it."""
        self.stop()
        with self._iter_lock:
            self._iter.close()

    def abandon(self) -> bool:
        """Close the stream unless a thread is iterating it right now (that one stops by itself)."""
        if not self._iter_lock.acquire(blocking=False):
            return False
        try:
            self._iter.close()
            return True
        finally:
            self._iter_lock.release()

    def stale(self) -> bool:
        """Stopped or past its deadline: a suspended stale stream may be closed by others."""
        return self._stop_event.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline)

    def suspended(self) -> bool:
        """Started, not finished, and nobody is iterating it right now."""
        gen: Any = self._iter  # a generator object: gi_frame/gi_running are not on the Generator ABC
        return gen.gi_frame is not None and not gen.gi_running

    def progress(self) -> Progress:
        """A snapshot for status lines (safe from any thread)."""
        now = time.monotonic()
        stats = self._stats  # the engine's token count; text chunks only where it has none
        times, n = self._times, (stats.n_tokens if stats is not None and stats.n_tokens else self._n_chunks)
        first, last = times.get("first"), times.get("last")
        tps = (n - 1) / (last - first) if first is not None and last is not None and last > first and n > 1 else None
        loading = None
        if self.phase in ("start", "load"):
            cache = runtime.get().cache_if_open()
            entry = cache.entry(self.spec) if cache is not None else None
            loading = entry.loading_for() if entry is not None and entry.state == "loading" else now - self.started
        return Progress(
            model=self.model_name,
            phase=self.phase,
            elapsed_s=now - self.started,
            n_tokens=n,
            tokens_per_s=tps,
            ttft_s=first - self.started if first is not None else None,
            loading_s=loading,
            stopping=self._stop_event.is_set() and self.phase != "done",
            prompt_tokens=stats.n_prompt_evaluated if stats is not None else 0,
            prompt_done=stats.n_prompt_done if stats is not None else 0,
        )

    def consume(self, on_chunk: Callable[[str], None] | None = None) -> Answer:
        """Iterate to the end, calling ``on_chunk`` per chunk, and return the ``Answer``.

        An interrupt (Ctrl-C, the kernel's stop button) cancels the generation and keeps the
        partial answer (see ``interrupts``)."""
        with sigint_stops(self):
            try:
                for chunk in self:
                    if on_chunk is not None:
                        on_chunk(chunk)
            except KeyboardInterrupt:
                self.stop("cancelled")
                for chunk in self:  # the engine stops within a token; collect what it already made
                    if on_chunk is not None:
                        on_chunk(chunk)
            except BaseException:  # on_chunk failed: free the model now, keep the partial answer
                self.close()
                raise
        assert self.answer is not None  # set by _run's finally
        return self.answer

    def log_timeout(self) -> None:
        """One log record (INFO) saying where the time of a timed-out request went; front ends show
        the same words, subdued, under the answer (``Answer.time_report``)."""
        answer = self.answer
        if answer is not None and answer.finish_reason == "timeout":
            log.info("llm_magic: %s timed out after %g s: %s", answer.model, self.timeout, answer.time_report)

    # ---- the work -------------------------------------------------------------------------------

    def _should_stop(self) -> bool:
        if self._stop_event.is_set():
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop("timeout")
            return True
        if self.cancel_if is not None and self.cancel_if():
            self.stop("cancelled")
            return True
        return False

    def _run(self) -> Generator[str, None, None]:
        rt = runtime.get()
        rt.track(self)
        pieces: list[str] = []
        meta: dict[str, Any] = {"model": self.model_name, "timeout": self.timeout}
        try:
            yield from self._attempts(rt.cache, pieces, meta)
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):  # the answer records why there is none
                meta.setdefault("error", _message(exc))
            raise
        finally:
            meta.setdefault("phase", self.phase)
            self.phase = "done"
            rt.untrack(self)
            self.answer = self._finish(pieces, meta)
            if self.answer.finish_reason == "timeout":
                self.answer.time_report = time_report(self.answer, self.started, self._times)
            answer_record.record(self)  # Answer.prompt first: %llm last --prompt may read it at once
            rt.last_answer = self.answer
            if self.answer.finish_reason == "timeout" and not self.defer_log:
                self.log_timeout()

    def _attempts(self, cache: ModelCache, pieces: list[str], meta: dict[str, Any]) -> Generator[str, None, None]:
        for attempt in range(3):  # a model unloaded under us is loaded again
            self.phase = "load"
            entry = cache.entry(self.spec)
            if self.on_status and (entry is None or entry.state != "ready"):
                self.on_status(f"waiting for {self.model_name} to load")
            found: Entry | None = None
            try:
                found = cache.wait(self.spec, self.deadline, self._should_stop, replace=attempt == 0)
            except LoadTimeout:
                self.stop("timeout")
            except KeyboardInterrupt:
                self.stop("cancelled")
            except LLMMagicError:
                if not self._stop_event.is_set():  # stopped meanwhile (a download Stop ended): cancelled
                    raise
            meta["load_wait_s"] = time.monotonic() - self.started
            if found is None or self._stop_event.is_set():
                return
            self.entry = found
            _warn_mlock_once(found)
            gone = yield from self._generate(cache, found, pieces, meta)
            if not gone:
                return

    def _generate(
        self, cache: ModelCache, entry: Entry, pieces: list[str], meta: dict[str, Any]
    ) -> Generator[str, None, bool]:
        """Generate on the calling thread; returns True if the model was unloaded before we began.

        Measured on 2 cores: handing tokens over from a worker thread costs ~18% of the tokens/s
        (wake-ups compete with llama.cpp's threads); inline costs ~1%. The panel keeps the kernel
        free by consuming the whole stream on a worker thread instead."""
        stats = StreamStats()
        if self.on_status is not None:  # a long prompt: "reading the prompt 1,024 / 4,461 tokens" per batch
            on_status = self.on_status
            stats.on_prompt = lambda done, total: on_status(f"reading the prompt {done:,} / {total:,} tokens")
        self._stats = stats
        times = self._times
        model = entry.model
        queue = cache.begin_use(entry, model, self) if model is not None else None
        if model is None or queue is None:
            return True  # unloaded between the wait and now
        acquired = False
        try:
            self.phase = "queue"
            acquired = queue.acquire(self, self._should_stop)
            if not acquired or self._should_stop():
                return False
            if model.closed:  # the cache closes a model only while it holds every slot: race-free
                return True
            times["locked"] = time.monotonic()
            yield from self._stream_model(model, entry, stats, pieces)
        except KeyboardInterrupt:  # raised inside the engine: its state stays consistent (llama-cpp
            self.stop("cancelled")  # trims the KV cache to n_tokens before every eval)
        except GeneratorExit:
            self.stop("cancelled")
            raise
        except Exception as exc:
            meta["error"] = _message(exc)
            if not pieces:
                raise
        finally:
            self._release(cache, entry, queue, acquired)
            meta["stats"] = stats
            meta["phase"] = self.phase
        return False

    def _stream_model(
        self, model: Engine, entry: Entry, stats: StreamStats, pieces: list[str]
    ) -> Generator[str, None, None]:
        times = self._times
        self.phase = "prompt"
        conv = None
        if self.conversation:
            conv = runtime.get().conversations.get(self.conversation, entry.spec.key, entry.name)
        self.prepared = prepared = model.prepare(
            self.prompt,
            raw=self.raw,
            system=self.system,
            conversation=conv,
            max_tokens=self.max_tokens,
            images=self.images or None,
            think=self.think,
        )
        if self.think_asked and not prepared.think_switch:
            self._notes.append(think_note(self.model_name, self.think))
        times["gen_start"] = time.monotonic()
        chunks = model.stream(
            prepared,
            max_tokens=self.max_tokens,
            should_stop=self._should_stop,
            stats=stats,
            deadline=self.deadline,
            **self.sampling,
        )
        source, splitter = split_stream(prepared.thinking, prepared.thinking_open, chunks, lambda: stats.n_tokens)
        self._splitter = splitter
        try:
            for piece in source:
                now = time.monotonic()
                if "first" not in times:
                    times["first"] = now
                    self.phase = "generate"
                times["last"] = now
                self._n_chunks += 1
                pieces.append(piece)
                yield piece
        finally:
            chunks.close()
            if splitter is not None:
                pieces.extend(splitter.flush())  # held back for a marker that never came
            answer, thinking = join(pieces)
            if conv is not None:  # partial answers too: the user saw them
                conv.record(
                    self.prompt,
                    answer,
                    self._stop_reason or stats.finish_reason or "stop",
                    prepared.turns_used,
                    stats.context_tokens,
                    stats.context_text,
                    prepared.system,
                    thinking=thinking,
                )

    def _release(self, cache: ModelCache, entry: Entry, queue: ModelQueue, acquired: bool) -> None:
        if acquired:
            queue.release(self)
        cache.end_use(entry, queue, self, used="gen_start" in self._times)
        self._times["end"] = time.monotonic()

    def _finish(self, pieces: list[str], meta: dict[str, Any]) -> Answer:
        stats: StreamStats | None = meta.pop("stats", None)
        meta["n_chunks"] = len(pieces)
        text, fields = answer_fields(self._splitter, pieces)
        meta.update(fields, **({"notes": list(self._notes)} if self._notes else {}))
        return build_answer(text, stats, self._times, self._stop_reason, self.started, meta)


def stream(
    prompt: str,
    model: str | None = None,
    timeout: float | None = None,
    max_tokens: int | None = None,
    raw: bool = False,
    **options: Any,
) -> Stream:
    """Start a request; iterate the result for text chunks, then read ``.answer``."""
    return Stream(prompt, model=model, timeout=timeout, max_tokens=max_tokens, raw=raw, **options)


def ask(
    prompt: str,
    model: str | None = None,
    timeout: float | None = None,
    max_tokens: int | None = None,
    raw: bool = False,
    **options: Any,
) -> Answer:
    """Ask and wait for the whole ``Answer`` (a partial one on timeout or interrupt)."""
    return stream(prompt, model=model, timeout=timeout, max_tokens=max_tokens, raw=raw, **options).consume()


def _warn_mlock_once(entry: Entry) -> None:
    """Say once per process that mlock was refused; only from the main thread (the load thread
    and the panel's worker must not print into whatever cell happens to run)."""
    rt = runtime.get()
    mlock = str(entry.model.info().get("mlock") or "") if entry.model is not None else ""
    if (
        not rt.mlock_warned
        and mlock.startswith("off (fallback")
        and threading.current_thread() is threading.main_thread()
    ):
        rt.mlock_warned = True
        log.warning("llm_magic: %s is loaded without mlock (%s)", entry.name, mlock[len("off (fallback: ") : -1])
