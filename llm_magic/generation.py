"""Running one generation: on a worker thread, chunks handed to the caller, deadline/stop/interrupt
enforced, and an ``Answer`` at the end.

The timeout counts from the start of the request and covers waiting for a model load, waiting for
the model's lock, prompt evaluation and generation. When it fires the engine stops within one
token (or one prompt batch) and the caller gets the partial text with ``finish_reason="timeout"``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Any, Callable, Iterator

from . import config
from . import conversation as conversations
from .cache import Entry, LoadTimeout, get_cache
from .errors import ConfigError, LLMMagicError
from .images import Image, load_image
from .workers import WorkerPool

log = logging.getLogger("llm_magic")

FINISH_REASONS = ("stop", "length", "timeout", "cancelled", "error")
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "stop", "grammar")


class Answer(str):
    """The model's text, with what happened attached.

    ``finish_reason``: ``stop`` (the model ended), ``length`` (max_tokens), ``timeout``,
    ``cancelled`` (Stop, interrupt or cleanup) or ``error`` (``error`` holds the message).
    Times are seconds from the start of the request.
    """

    finish_reason: str
    n_tokens: int
    n_prompt_tokens: int
    n_prompt_evaluated: int
    load_wait_s: float
    prompt_s: float | None
    ttft_s: float | None
    total_s: float
    tokens_per_s: float | None
    model: str
    error: str | None
    timeout: float | None

    def __new__(cls, text: str = "", **meta: Any) -> "Answer":
        self = super().__new__(cls, text)
        defaults = dict(finish_reason="stop", n_tokens=0, n_prompt_tokens=0, n_prompt_evaluated=0,
                        load_wait_s=0.0, prompt_s=None, ttft_s=None, total_s=0.0, tokens_per_s=None,
                        model="", error=None, timeout=None)
        defaults.update(meta)
        for key, value in defaults.items():
            setattr(self, key, value)
        return self

    @property
    def text(self) -> str:
        return str.__str__(self)

    @property
    def partial(self) -> bool:
        return self.finish_reason in ("timeout", "cancelled", "error")

    def timings(self) -> dict[str, Any]:
        keys = ("finish_reason", "n_tokens", "n_prompt_tokens", "n_prompt_evaluated", "load_wait_s",
                "prompt_s", "ttft_s", "total_s", "tokens_per_s", "model")
        return {k: getattr(self, k) for k in keys}

    def marker(self) -> str | None:
        """The line shown under a partial answer, or None for a complete one."""
        n = self.n_tokens
        tokens = f"{n} token{'s' if n != 1 else ''}"
        if self.finish_reason == "timeout":
            limit = f"{self.timeout:g} s" if self.timeout is not None else "the time limit"
            if n == 0 and not self.text:
                why = {
                    "load": f"the model was still loading after {self.load_wait_s:.1f} s",
                    "lock": "the model was busy with another request the whole time",
                    "prompt": f"the prompt ({self.n_prompt_evaluated} tokens) was still being evaluated",
                }.get(getattr(self, "phase", ""), "nothing was generated")
                return f"⏱ timed out after {limit} — no token came: {why}"
            return f"⏱ timed out after {limit} — partial answer, {tokens}"
        if self.finish_reason == "cancelled":
            return f"⏹ cancelled — partial answer, {tokens}"
        if self.finish_reason == "error":
            return f"⚠ error — partial answer, {tokens}: {self.error}"
        if self.finish_reason == "length":
            return f"… stopped at max_tokens ({tokens})"
        return None

    def __repr__(self) -> str:
        return f"Answer({str.__repr__(self)}, finish_reason={self.finish_reason!r}, n_tokens={self.n_tokens})"

    def __reduce__(self):
        return (Answer, (self.text,), self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


_last_answer: Answer | None = None
_active: "weakref.WeakSet[Stream]" = weakref.WeakSet()  # weak: a dropped stream can be collected


def last_answer() -> Answer | None:
    return _last_answer


def validate_options(timeout: float | None, max_tokens: int | None, sampling: dict[str, Any]) -> None:
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(SAMPLING_KEYS)}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout}")
    if max_tokens is not None and max_tokens <= 0:
        raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens}")
    checks = {
        "temperature": (lambda v: v >= 0, ">= 0"),
        "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
        "top_k": (lambda v: v >= 0, ">= 0 (0 = off)"),
        "repeat_penalty": (lambda v: v > 0, "> 0"),
        "min_p": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    }
    for key, (ok, rule) in checks.items():
        if sampling.get(key) is not None and not ok(sampling[key]):
            raise ConfigError(f"{key} must be {rule}, got {sampling[key]}")
    stop = sampling.get("stop")
    if stop is not None and not (isinstance(stop, str) or all(isinstance(x, str) and x for x in stop)):
        raise ConfigError(f"stop must be a string or a list of non-empty strings, got {stop!r}")


class Stream:
    """An iterator of text chunks for one request; ``.answer`` holds the ``Answer`` once exhausted.

    ``stop()`` (from any thread) ends it within one token with ``finish_reason="cancelled"``.
    A ``KeyboardInterrupt`` while iterating does the same and keeps the partial text.
    """

    def __init__(self, prompt: str, model: str | None = None, timeout: float | None = None,
                 max_tokens: int | None = None, raw: bool = False, system: str | None = None,
                 conversation: str | None = None, on_status: Callable[[str], None] | None = None,
                 cancel_if: Callable[[], bool] | None = None, images: list | None = None, **sampling: Any):
        self.started = time.monotonic()
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("the prompt is empty: write the question in the cell (or after %ask)")
        s = config.settings
        timeout = s.timeout if timeout is None else timeout
        max_tokens = s.max_tokens if max_tokens is None else max_tokens
        for key in ("temperature", "top_p", "top_k", "repeat_penalty"):
            if sampling.get(key) is None:
                sampling[key] = getattr(s, key)
        if sampling.get("seed") is None and s.seed is not None and s.seed >= 0:
            sampling["seed"] = s.seed
        if not sampling.get("stop") and s.stop:
            sampling["stop"] = list(s.stop)
        if isinstance(sampling.get("stop"), str):
            sampling["stop"] = [sampling["stop"]]
        system = system if system is not None else (s.system or None)
        sampling = {k: v for k, v in sampling.items() if v is not None}
        validate_options(timeout, max_tokens, sampling)
        if images and not model:
            model = s.vision_model or None
        self.spec = config.resolve(model)
        self.images = [img if isinstance(img, Image) else load_image(img) for img in (images or [])]
        if self.images and not self.spec.mmproj and not self.spec.remote:
            vision = [n for n, o in s.models.items() if o.get("mmproj")]
            raise ConfigError(f"{self.spec.display_name} is a text-only model and cannot take images; "
                              f"vision models configured: {', '.join(vision) or 'none'} "
                              f"(a vision alias has 'path' and 'mmproj'; set AskMagics.vision_model)")
        self.prompt, self.raw, self.system = prompt, raw, system
        self.conversation = conversation
        self.timeout, self.max_tokens, self.sampling = timeout, max_tokens, sampling
        self.deadline = self.started + timeout if timeout else None
        self.on_status = on_status
        self.cancel_if = cancel_if  # polled with the deadline: True cancels (e.g. a kernel shutdown)
        self.answer: Answer | None = None
        self.entry: Entry | None = None
        self._stop_reason: str | None = None
        self._stop_event = threading.Event()
        self._iter_lock = threading.Lock()  # next() vs abandon() from another thread
        self._iter = self._run()
        self.phase = "start"  # load -> lock -> prompt -> generate -> done: where the time goes
        self.defer_log = False
        self._stats = None

    # public control ---------------------------------------------------------------------------

    def stop(self, reason: str = "cancelled") -> None:
        """Ask the generation to end (from any thread); it does within one token."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop_event.set()
        cancel = getattr(self._stats, "cancel", None)
        if cancel is not None:  # a remote stream: close the connection now, the server stops too
            try:
                cancel()
            except Exception:  # noqa: BLE001 - best effort; the stream also checks per chunk
                pass

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

    def consume(self, on_chunk: Callable[[str], None] | None = None) -> Answer:
        """Iterate to the end, calling ``on_chunk`` per chunk, and return the ``Answer``.

        An interrupt (Ctrl-C, the kernel's stop button) cancels the generation and keeps the
        partial answer. On the main thread the first SIGINT only asks the engine to stop at the
        next token (so llama.cpp is never interrupted half-way); a second one raises as usual.
        """
        with _sigint_stops(self):
            try:
                for chunk in self:
                    if on_chunk is not None:
                        on_chunk(chunk)
            except KeyboardInterrupt:
                self.stop("cancelled")
                for chunk in self:  # the engine stops within a token; collect what it already made
                    if on_chunk is not None:
                        on_chunk(chunk)
        return self.answer

    # the work ---------------------------------------------------------------------------------

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

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _run(self) -> Iterator[str]:
        global _last_answer
        _active.add(self)
        pieces: list[str] = []
        meta: dict[str, Any] = {"model": self.model_name, "timeout": self.timeout}
        times: dict[str, float] = {}
        try:
            cache = get_cache()
            yield from self._attempts(cache, pieces, meta, times)
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):  # the answer records why there is none
                meta.setdefault("error", str(exc) if isinstance(exc, LLMMagicError) else f"{type(exc).__name__}: {exc}")
            raise
        finally:
            meta.setdefault("phase", self.phase)
            self.phase = "done"
            _active.discard(self)
            self.answer = self._finish(pieces, meta, times)
            _last_answer = self.answer
            self._times = times
            if self.answer.finish_reason == "timeout" and not self.defer_log:
                self.log_timeout()

    def _attempts(self, cache, pieces: list, meta: dict, times: dict) -> Iterator[str]:
        for _attempt in range(3):  # a model unloaded under us is loaded again
            self.phase = "load"
            entry = cache.entry(self.spec)
            if self.on_status and (entry is None or entry.state != "ready"):
                self.on_status(f"waiting for {self.model_name} to load")
            try:
                entry = self._wait_for_model(cache)
            except LoadTimeout:
                self.stop("timeout")
            except KeyboardInterrupt:
                self.stop("cancelled")
            meta["load_wait_s"] = time.monotonic() - self.started
            if entry is None or self._stop_event.is_set():
                return
            self.entry = entry
            _warn_mlock_once(entry)
            gone = yield from self._generate(cache, entry, pieces, meta, times)
            if not gone:
                return

    def _wait_for_model(self, cache) -> Entry | None:
        # Wait in short slices so stop() and KeyboardInterrupt are honoured during a load.
        while True:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                raise LoadTimeout("deadline passed while loading")
            if self._should_stop():
                return None
            slice_end = time.monotonic() + (0.1 if remaining is None else min(0.1, remaining))
            try:
                return cache.get(self.spec, deadline=slice_end)
            except LoadTimeout:
                continue

    def _acquire(self, model) -> bool:
        """Wait for the model's lock (one generation at a time per model), honouring stop and the
        deadline. A holder that is suspended (nobody iterating it) and stale is closed, so an
        abandoned stream cannot keep a model busy forever."""
        self.phase = "lock"
        last_gc = time.monotonic()
        while True:
            if model.lock.acquire(timeout=0.05):
                return True
            if self._should_stop():
                return False
            holder = model.holder() if model.holder is not None else None
            if holder is None or holder is self:
                continue
            if holder.stale():
                holder.abandon()
            elif not holder._iter.gi_running and time.monotonic() - last_gc > 1.0:
                # suspended: if nothing references it any more (``for c in stream(...): break``),
                # a collection finalizes it, which closes it and frees the model
                holder = None
                gc.collect()
                last_gc = time.monotonic()

    def _generate(self, cache, entry: Entry, pieces: list[str], meta: dict, times: dict):
        """Generate on the calling thread; returns True if the model was unloaded before we began.

        Measured on 2 cores: handing tokens over from a worker thread costs ~18% of the tokens/s
        (wake-ups compete with llama.cpp's threads); inline costs ~1%. The panel keeps the kernel
        free by consuming the whole stream on a worker thread instead."""
        from .engines.llama import StreamStats

        stats = StreamStats()
        self._stats = stats
        model = entry.model
        if model is None or not cache.begin_use(entry, self, model):
            return True  # unloaded between the wait and now
        acquired = False
        try:
            acquired = self._acquire(model)
            if not acquired or self._should_stop():
                return False
            if model.closed:  # unload() closes under this lock: checking here is race-free
                return True
            model.holder = weakref.ref(self)
            times["locked"] = time.monotonic()
            self.phase = "prompt"
            conv = None
            if self.conversation:
                conv = conversations.get(self.conversation, entry.spec.key, entry.name)
            prepared = model.prepare(self.prompt, raw=self.raw, system=self.system, conversation=conv,
                                     max_tokens=self.max_tokens, **({"images": self.images} if self.images else {}))
            times["gen_start"] = time.monotonic()
            engine = model.stream(prepared, max_tokens=self.max_tokens, should_stop=self._should_stop,
                                  stats=stats, deadline=self.deadline, **dict(self.sampling))
            try:
                for piece in engine:
                    now = time.monotonic()
                    if "first" not in times:
                        times["first"] = now
                        self.phase = "generate"
                    times["last"] = now
                    pieces.append(piece)
                    yield piece
            finally:
                engine.close()
                if conv is not None:  # partial answers too: the user saw them
                    conv.record(self.prompt, "".join(pieces), self._stop_reason or stats.finish_reason or "stop",
                                prepared.turns_used, stats.context_tokens, stats.context_text, prepared.system)
        except KeyboardInterrupt:  # raised inside the engine: its state stays consistent (llama-cpp
            self.stop("cancelled")  # trims the KV cache to n_tokens before every eval)
        except GeneratorExit:
            self.stop("cancelled")
            raise
        except Exception as exc:
            meta["error"] = str(exc) if isinstance(exc, LLMMagicError) else f"{type(exc).__name__}: {exc}"
            if not pieces:
                raise
        finally:
            if acquired:
                model.holder = None
                model.lock.release()
            cache.end_use(entry, self, used="gen_start" in times)
            times["end"] = time.monotonic()
            meta["stats"] = stats
            meta["phase"] = self.phase
        return False

    def _finish(self, pieces: list[str], meta: dict, times: dict) -> Answer:
        stats = meta.pop("stats", None)
        text = "".join(pieces)
        end = times.get("end", time.monotonic())
        if meta.get("error"):
            finish = "error"
        elif self._stop_reason is not None:
            finish = self._stop_reason
        else:
            finish = (stats.finish_reason if stats and stats.finish_reason else "stop")
            if finish not in FINISH_REASONS:
                finish = "stop"
        n_tokens = stats.n_tokens if stats else 0
        if finish in ("timeout", "cancelled") and stats is not None and stats.finish_reason is None:
            # stopped by us: the count is what was generated so far
            n_tokens = max(n_tokens, len(pieces))
        first = times.get("first")
        tps = None
        if first is not None and n_tokens >= 2 and times.get("last", first) > first:
            tps = (n_tokens - 1) / (times["last"] - first)
        locked = times.get("locked")  # prompt time counts from getting the model: tokenizing + evaluation
        prompt_s = (stats.first_sample_at - locked) if stats and stats.first_sample_at and locked else None
        return Answer(
            text,
            finish_reason=finish,
            n_tokens=n_tokens,
            n_prompt_tokens=stats.n_prompt_tokens if stats else 0,
            n_prompt_evaluated=stats.n_prompt_evaluated if stats else 0,
            prompt_s=prompt_s,
            ttft_s=(first - self.started) if first is not None else None,
            total_s=end - self.started,
            tokens_per_s=tps,
            **meta,
        )

    def log_timeout(self) -> None:
        """One log record saying where the time went (front ends that show the answer first set
        ``defer_log`` and call this after)."""
        answer, times = self.answer, getattr(self, "_times", {})
        if answer is None or answer.finish_reason != "timeout":
            return
        end = times.get("end", self.started + answer.total_s)
        gen_start = times.get("locked")
        load = answer.load_wait_s
        lock = (times.get("locked", end) - self.started - load) if "end" in times else 0.0
        parts = [f"waiting for the model load {load:.2f} s"]
        if lock > 0.005:
            parts.append(f"waiting for the model to be free {lock:.2f} s")
        if gen_start is not None:
            first_sample = answer.prompt_s
            if first_sample is None:
                parts.append(f"prompt evaluation {end - gen_start:.2f} s, unfinished ({answer.n_prompt_evaluated} tokens)")
            else:
                parts.append(f"prompt evaluation {first_sample:.2f} s ({answer.n_prompt_evaluated} tokens)")
                parts.append(f"generation {max(end - gen_start - first_sample, 0):.2f} s ({answer.n_tokens} tokens)")
        log.warning("llm_magic: %s timed out after %g s: %s", answer.model, self.timeout, "; ".join(parts))


def stream(prompt: str, model: str | None = None, timeout: float | None = None,
           max_tokens: int | None = None, raw: bool = False, **sampling: Any) -> Stream:
    """Start a request; iterate the result for text chunks, then read ``.answer``."""
    return Stream(prompt, model=model, timeout=timeout, max_tokens=max_tokens, raw=raw, **sampling)


def ask(prompt: str, model: str | None = None, timeout: float | None = None,
        max_tokens: int | None = None, raw: bool = False, **sampling: Any) -> Answer:
    """Ask and wait for the whole ``Answer`` (a partial one on timeout or interrupt)."""
    return stream(prompt, model=model, timeout=timeout, max_tokens=max_tokens, raw=raw, **sampling).consume()


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def run_in_background(stream: Stream, on_chunk: Callable[[str], None] | None = None,
                      on_done: Callable[[Answer | None, BaseException | None], None] | None = None) -> Future:
    """Consume ``stream`` on a named worker thread (``llm_magic-gen-N``) so the kernel stays free.

    ``on_chunk`` runs on that thread for every chunk (set widget traits there; never print);
    ``on_done(answer, error)`` runs once at the end. The future resolves to the ``Answer``.
    ``cleanup_models()`` stops the stream and the worker threads.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = WorkerPool("llm_magic-gen", max_workers=8)
        pool = _pool

    def work() -> Answer:
        answer, error = None, None
        try:
            answer = stream.consume(on_chunk)
            return answer
        except BaseException as exc:  # noqa: BLE001 - reported through on_done and the future
            error = exc
            raise
        finally:
            if on_done is not None:
                on_done(stream.answer if answer is None else answer, error)

    return pool.submit(work)


def shutdown(timeout: float = 2.0) -> None:
    """Stop every running generation and the background worker threads."""
    global _pool
    stop_all()
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(timeout=timeout)




def stop_all(reason: str = "cancelled") -> None:
    streams = list(_active)
    for s in streams:
        s.stop(reason)
    for s in streams:
        s.abandon()


_mlock_warned = False


def _warn_mlock_once(entry: Entry) -> None:
    """Say once per process that mlock was refused; only from the main thread (the load thread
    and the panel's worker must not print into whatever cell happens to run)."""
    global _mlock_warned
    mlock = getattr(entry.model, "mlock", "") or ""
    if not _mlock_warned and mlock.startswith("off (fallback") and threading.current_thread() is threading.main_thread():
        _mlock_warned = True
        log.warning("llm_magic: %s is loaded without mlock (%s)", entry.name, mlock[len("off (fallback: "):-1])


@contextlib.contextmanager
def _sigint_stops(stream: "Stream"):
    """While consuming on the main thread, turn the first SIGINT into ``stream.stop()``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except (ValueError, OSError):  # not the main interpreter
        yield
        return
    pressed = []

    def handler(signum, frame):
        pressed.append(time.monotonic())
        if len(pressed) == 1:
            stream.stop("cancelled")
        elif callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, handler)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
