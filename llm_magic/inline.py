"""Inline completions (JupyterLab's ghost text, issue 16), without IPython: the requests of the
``llm_magic.inline`` comm, answered on the kernel's own loaded model.

``InlineServer.handle`` takes a message on whatever thread receives comm messages and returns at
once: the completion runs on a worker thread, one at a time, and a newer request or a ``cancel``
stops the running one within one token. Every request ends with exactly one ``{"id", "text": …,
"done": true}``; a bad message, a model not ready, a remote model or any failure gives a quiet
``done`` with no text and a DEBUG log line, never an exception.

A completion never gets in an ask's way: it does not wait for a busy model (it gives up at once),
and it stops after the current token as soon as another request joins the model's queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import runtime
from . import settings as settings_mod
from .cache_entry import READY
from .engines import llama_private
from .engines.base import Prepared, StreamStats
from .inline_prompt import MODES, LineEnd, prompt_tokens, stable_tail
from .specs import resolve

log = logging.getLogger("llm_magic.inline")

PREFIX_CHARS = 32_000  # text kept of a huge prefix (its end) and suffix (its start), before tokens
SUFFIX_CHARS = 8_000
TRIM_STEP_CHARS = 4_096  # a huge prefix loses its start in steps this long (inline_prompt.stable_tail)
MAX_TOKENS = 256  # the most a request may ask for
TIME_LIMIT_S = 10.0  # a completion ends after this long, whatever it asked
# The notebook prefix's KV state is kept under this name, as a conversation's is: an ask between two
# keystrokes saves it (under AskMagics.kv_cache_budget) and the next keystroke restores it instead
# of reading the whole prefix again.
KV_OWNER = "\0inline"  # a name no `%%ask -c NAME` can give a conversation
PROMPT_BATCH = 32  # prompt tokens per decode: an ask that comes while a completion reads waits one such batch

Send = Callable[[dict[str, Any]], None]


class BadRequest(ValueError):
    """A comm message that is not a request we know."""


@dataclass(frozen=True)
class Request:
    id: int
    prefix: str
    suffix: str = ""
    max_tokens: int = 32
    stops: tuple[str, ...] = ("\n",)


def parse(data: Any) -> tuple[str, int, Request | None]:
    """(action, id, request) of a comm message's data; ``BadRequest`` if it is malformed."""
    if not isinstance(data, dict):
        raise BadRequest(f"not a JSON object: {type(data).__name__}")
    action, rid = data.get("action"), data.get("id")
    if type(rid) is not int:
        raise BadRequest(f"id must be an integer, got {rid!r}")
    if action == "cancel":
        return "cancel", rid, None
    if action != "complete":
        raise BadRequest(f"unknown action {action!r}")
    prefix, suffix = data.get("prefix", ""), data.get("suffix", "")
    n = data.get("max_tokens", 32)
    mode, stop = data.get("mode", "line"), data.get("stop", [])
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise BadRequest("prefix and suffix must be strings")
    if type(n) is not int or n < 1:
        raise BadRequest(f"max_tokens must be a positive integer, got {n!r}")
    if mode not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(stop, list) or not all(isinstance(s, str) and 0 < len(s) <= 64 for s in stop) or len(stop) > 8:
        raise BadRequest("stop must be a list of at most 8 short strings")
    stops = tuple(MODES[mode]) + tuple(stop)
    prefix = str(stable_tail(prefix, PREFIX_CHARS, TRIM_STEP_CHARS))
    return "complete", rid, Request(rid, prefix, suffix[:SUFFIX_CHARS], min(n, MAX_TOKENS), stops)


@dataclass
class Outcome:
    """How a completion went (the DEBUG line; tests read the counts)."""

    id: int
    reason: str  # "stop", "length", "cancelled", "yielded", "busy", "loading", "off", "error: …" …
    shape: str = ""  # "fim" or "continue"
    n_prompt_tokens: int = 0
    n_prompt_evaluated: int = 0  # prompt tokens not reused from the KV cache
    n_tokens: int = 0
    text: str = ""
    seconds: float = 0.0


@dataclass(eq=False)
class _Job:
    """One request, as the model's queue sees it (a ``QueueUser``), and how its replies go out."""

    request: Request
    send: Send = field(default=lambda data: None)  # where its replies go (the comm, in its context)
    stopped: threading.Event = field(default_factory=threading.Event)
    gives_way = True  # ModelQueue.others_waiting: another completion does not make this one stop

    def stop(self, reason: str = "cancelled") -> None:
        self.stopped.set()

    def stale(self) -> bool:
        return self.stopped.is_set()

    def suspended(self) -> bool:
        return False  # always iterated by its worker

    def abandon(self) -> bool:
        return False


def complete(job: _Job, emit: Callable[[str], None]) -> Outcome:
    """Run one completion on the calling thread, calling ``emit`` per piece of text."""
    started = time.monotonic()
    out = Outcome(job.request.id, "")
    try:
        out.reason = _complete(job, emit, out)
    except Exception as exc:  # never an exception in the kernel: a quiet done
        log.debug("llm_magic: inline completion %s failed", job.request.id, exc_info=True)
        out.reason = f"error: {type(exc).__name__}: {exc}"
    out.seconds = time.monotonic() - started
    return out


def _complete(job: _Job, emit: Callable[[str], None], out: Outcome) -> str:
    settings = settings_mod.current()
    if not settings.inline_completion:
        return "off"
    if job.stopped.is_set():
        return "cancelled"
    spec = resolve(settings.completion_model or None)
    cache = runtime.get().cache
    entry = cache.entry(spec)
    if entry is None:  # typing never loads a model: %load_ext and %llm complete on preload it
        return "not loaded"
    model = entry.model
    if entry.state != READY or model is None:
        return entry.state
    if model.kind != "local":
        return f"not a local model ({model.kind})"
    queue = cache.begin_use(entry, model, job)
    if queue is None:
        return "unloaded"
    try:
        if not queue.acquire(job, lambda: True):  # an ask holds the model: do not wait for it
            return "busy"
        try:
            if model.closed:
                return "unloaded"
            return _generate(model, queue, job, emit, out)
        finally:
            queue.release(job)
    finally:
        cache.end_use(entry, queue, job, used=True)


def _generate(model: Any, queue: Any, job: _Job, emit: Callable[[str], None], out: Outcome) -> str:
    request = job.request
    llm = model.llm
    tokens, out.shape = prompt_tokens(
        llm, llama_private.add_bos(llm), model.n_ctx, request.prefix, request.suffix, request.max_tokens
    )
    if not tokens:
        return "empty prompt"
    deadline = time.monotonic() + TIME_LIMIT_S
    yielded = False

    def should_stop() -> bool:
        nonlocal yielded
        if queue.others_waiting(job):  # an ask (or the panel) wants the model: give way now
            yielded = True
        return yielded or job.stopped.is_set() or time.monotonic() >= deadline

    stats = StreamStats()
    end = LineEnd(request.stops)
    pieces: list[str] = []
    chunks = model.stream(
        Prepared(mode="raw", tokens=tokens, session=KV_OWNER),
        max_tokens=request.max_tokens,
        should_stop=should_stop,
        stats=stats,
        temperature=0.0,
        prompt_batch=PROMPT_BATCH,
    )
    try:
        for chunk in chunks:
            text = end.feed(chunk)
            if text:
                pieces.append(text)
                emit(text)
            if end.hit:
                break
    finally:
        chunks.close()
    if not end.hit and not job.stopped.is_set() and not yielded:
        rest = end.rest()
        if rest:
            pieces.append(rest)
            emit(rest)
    out.n_prompt_tokens, out.n_prompt_evaluated = stats.n_prompt_tokens, stats.n_prompt_evaluated
    out.n_tokens, out.text = stats.n_tokens, "".join(pieces)
    if end.hit:
        return "stop"
    if yielded:
        return "yielded"
    if job.stopped.is_set():
        return "cancelled"
    return stats.finish_reason or "timeout"


class InlineServer:
    """The requests of one comm: the newest runs, older ones are stopped or dropped."""

    def __init__(self, send: Send):
        self._send = send
        self._lock = threading.Lock()
        self._latest: _Job | None = None
        self._serving = threading.Lock()  # one completion at a time (the previous one stops first)
        self.outcomes: list[Outcome] = []  # the last few, newest last (for tests and %llm status)

    def handle(self, data: Any, send: Send | None = None) -> None:
        """A comm message (on the thread that receives them): never raises, never waits. Its replies
        go out through ``send`` (default: the server's)."""
        send = send or self._send
        try:
            action, rid, request = parse(data)
        except BadRequest as e:
            bad_id = data.get("id") if isinstance(data, dict) else None
            log.debug("llm_magic: inline: ignoring a bad message (%s)", e)
            _done(send, bad_id if type(bad_id) is int else None)
            return
        with self._lock:
            previous = self._latest
            if action == "cancel":
                if previous is not None and previous.request.id == rid:
                    previous.stop()
                return  # the cancelled request answers its own done
            job = self._latest = _Job(request, send)  # type: ignore[arg-type]  # parse gives one for "complete"
        if previous is not None:
            previous.stop()
        try:
            runtime.get().submit(lambda: self._serve(job))
        except Exception:  # a pool shutting down: still a quiet done
            log.debug("llm_magic: inline: cannot start completion %s", rid, exc_info=True)
            _done(send, rid)

    def close(self) -> None:
        """Stop the running request (the comm closed or the extension unloads)."""
        with self._lock:
            job, self._latest = self._latest, None
        if job is not None:
            job.stop()

    def _serve(self, job: _Job) -> None:
        rid = job.request.id
        with self._serving:
            if job.stopped.is_set():  # a newer request came while this one waited: dropped
                outcome = Outcome(rid, "dropped")
            else:
                outcome = complete(job, lambda text: _reply(job.send, rid, text, False))
        with self._lock:
            self.outcomes = [*self.outcomes[-9:], outcome]
        log.debug(
            "llm_magic: inline %s: %s, %s prompt %d (%d evaluated), %d tokens, %.3f s",
            rid,
            outcome.reason,
            outcome.shape or "-",
            outcome.n_prompt_tokens,
            outcome.n_prompt_evaluated,
            outcome.n_tokens,
            outcome.seconds,
        )
        _done(job.send, rid)


def _done(send: Send, rid: int | None) -> None:
    _reply(send, rid, "", True)


def _reply(send: Send, rid: int | None, text: str, done: bool) -> None:
    try:
        send({"id": rid, "text": text, "done": done})
    except Exception:  # the comm or the kernel is going away
        log.debug("llm_magic: inline: cannot send a reply", exc_info=True)
