"""The kernel-global model cache.

One ``Entry`` per ``ModelSpec`` key (resolved path + load options): a model is loaded at most once
per kernel, whichever front end asks. Loads run on a bounded pool of named daemon threads;
callers wait with a deadline; two requests for a model that is still loading share one load.
A failed background load keeps its error: it is shown in the status, raised at first use, and
the next load retries. Nothing here imports IPython.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from . import settings as settings_mod
from .cache_entry import FAILED, LOADING, READY, UNLOADED, Entry, file_id
from .engines import load_engine
from .engines.base import Engine, Loader
from .errors import CacheClosed, LLMMagicError, LoadTimeout, ModelLoadError
from .model_queue import ModelQueue, QueueUser
from .specs import ModelSpec
from .workers import WorkerPool

log = logging.getLogger("llm_magic")

Victim = tuple[Entry, "Engine | None", "ModelQueue | None", str]  # an entry, what it held, and why


def _claim(entry: Entry, reason: str) -> Victim:
    """Take an entry's model and queue for closing (caller holds the cache lock): from now on no
    request starts on it, and a reload of the entry builds a new model beside, never into, these."""
    victim = (entry, entry.model, entry.queue, reason)
    entry.state, entry.model, entry.queue = UNLOADED, None, None
    return victim


class ModelCache:
    def __init__(self, loader: Loader | None = None, max_workers: int = 2):
        self._loader: Loader = loader or load_engine
        self._entries: dict[tuple[Any, ...], Entry] = {}
        self._lock = threading.RLock()
        self._pool = WorkerPool("llm_magic-load", max_workers)
        self.closed = False
        self.constructions = 0  # models built by this cache (a hit builds none)
        self._stop_watch = threading.Event()
        self._watcher = threading.Thread(target=self._watch_keep_alive, name="llm_magic-keepalive", daemon=True)
        self._watcher.start()

    # ---- lookups -------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def entry(self, spec: ModelSpec) -> Entry | None:
        with self._lock:
            return self._entries.get(spec.key)

    def find(self, name: str) -> list[Entry]:
        """Entries whose alias, file name or path is ``name``."""
        with self._lock:
            return [
                e
                for e in self._entries.values()
                if name in (e.spec.name, e.spec.path, os.path.basename(e.spec.path), e.name)
            ]

    # ---- loading -------------------------------------------------------------------------

    def load(self, spec: ModelSpec, *, retry_failed: bool = True) -> Entry:
        """Start loading ``spec`` in the background unless it is loaded or loading. Never blocks."""
        with self._lock:
            if self.closed:
                raise CacheClosed("the model cache is shut down")
            entry = self._entries.get(spec.key)
            if entry is not None and entry.state in (LOADING, READY):
                return entry
            if entry is not None and entry.state == FAILED and not retry_failed:
                return entry
            if entry is None:
                entry = Entry(spec=spec)
                self._entries[spec.key] = entry
            entry.state, entry.error, entry.model, entry.load_s = LOADING, None, None, None
            entry.error_reported = False
            entry.load_started = time.monotonic()
            entry.abort = threading.Event()
            try:
                entry.size_bytes = 0 if spec.remote else os.path.getsize(spec.path)
            except OSError:
                entry.size_bytes = 0
            victims = [] if spec.remote else self._make_room(entry)
            entry.future = self._pool.submit(self._load, entry)
        for victim in victims:
            self._evict(victim)
        return entry

    # ---- memory budget, LRU eviction, keep_alive ----------------------------------------------

    def _resident(self) -> list[Entry]:
        """Local models in memory (a remote model costs no local memory: not counted)."""
        return [e for e in self._entries.values() if e.state in (LOADING, READY) and not e.spec.remote]

    def _make_room(self, incoming: Entry) -> list[Victim]:
        """Pick least recently used idle models to evict so that ``incoming`` fits the limits.

        A model that is generating or has a request queued (``active``) is never picked; if only
        such models remain, the load goes ahead over the limit (and says so) rather than fail."""
        settings = settings_mod.current()
        max_models = settings.max_loaded_models
        budget = settings.memory_budget_bytes
        resident = [e for e in self._resident() if e is not incoming]
        idle = sorted((e for e in resident if e.state == READY and e.active == 0), key=lambda e: e.idle_since)
        victims: list[tuple[Entry, str]] = []

        def over() -> str | None:
            kept = [e for e in resident if all(e is not v for v, _ in victims)]
            if max_models and len(kept) + 1 > max_models:
                return f"max_loaded_models={max_models}"
            if budget and sum(e.size_bytes for e in kept) + incoming.size_bytes > budget:
                return f"memory_budget={budget} bytes"
            return None

        while (reason := over()) is not None and idle:
            victims.append((idle.pop(0), reason))
        if reason is not None:
            log.warning("llm_magic: loading %s goes over %s: every loaded model is busy", incoming.name, reason)
        return [_claim(victim, reason) for victim, reason in victims]

    def _evict(self, victim: Victim) -> None:
        entry, model, queue, reason = victim
        entry.note = f"evicted ({reason}) at {time.strftime('%H:%M:%S')}"
        log.warning(
            "llm_magic: evicted %s, idle since %.0f s (%s); it reloads when needed",
            entry.name,
            time.monotonic() - entry.idle_since,
            reason,
        )
        self._close_model(entry, model, queue, timeout=10.0)

    def expire_idle(self, keep_alive: float) -> int:
        """Unload models idle for longer than ``keep_alive`` seconds (Ollama's keep_alive)."""
        now = time.monotonic()
        with self._lock:
            expired = [
                e
                for e in self._entries.values()
                if e.state == READY and e.active == 0 and now - e.idle_since >= keep_alive
            ]
            victims = [_claim(e, f"keep_alive={keep_alive:g} s") for e in expired]
        for victim in victims:
            self._evict(victim)
        return len(victims)

    def _watch_keep_alive(self) -> None:
        while not self.closed:
            keep = settings_mod.current().keep_alive_s
            period = 5.0 if keep is None else max(0.05, min(keep / 4, 5.0))
            if self._stop_watch.wait(period):
                return
            if keep is not None:
                self.expire_idle(keep)

    def _load(self, entry: Entry) -> Any:
        started = time.monotonic()
        try:
            loaded_id = None if entry.spec.remote else file_id(entry.spec.path)
            model = self._loader(entry.spec, entry.abort)
        except BaseException as exc:
            with self._lock:
                entry.state = FAILED
                entry.error = str(exc) if isinstance(exc, LLMMagicError) else f"{type(exc).__name__}: {exc}"
                entry.load_s = time.monotonic() - started
            # no output from a worker thread: the error is kept, shown in %llm status, raised at first use
            log.debug("llm_magic: loading %s failed: %s", entry.name, entry.error)
            raise
        with self._lock:
            self.constructions += 1
            if self.closed or entry.state != LOADING or self._entries.get(entry.spec.key) is not entry:
                # unloaded or shut down while it loaded: don't keep it
                model.close()
                entry.state = UNLOADED
                raise CacheClosed(f"{entry.name} was unloaded while it loaded")
            entry.model = model
            entry.queue = ModelQueue(model.concurrency)
            entry.state = READY
            entry.file_id = loaded_id
            entry.idle_since = time.monotonic()
            entry.load_s = time.monotonic() - started
            try:
                entry.size_bytes = 0 if entry.spec.remote else os.path.getsize(entry.spec.path)
            except OSError:
                pass
        log.info("llm_magic: loaded %s in %.2f s", entry.name, entry.load_s)
        return model

    def get(self, spec: ModelSpec, deadline: float | None = None) -> Entry:
        """The ready entry for ``spec``, loading it if needed and waiting until ``deadline`` (monotonic).

        Raises ``LoadTimeout`` if the deadline passes first (the load continues), or
        ``ModelLoadError`` if the load failed. A failure from a *background* load is raised once;
        the next call retries the load.
        """
        changed: Victim | None = None
        with self._lock:
            entry = self._entries.get(spec.key)
            if entry is not None and entry.state == FAILED and not entry.error_reported:
                entry.error_reported = True
                raise ModelLoadError(entry.error)
            if (
                entry is not None
                and entry.state == READY
                and entry.file_id is not None
                and file_id(spec.path) != entry.file_id
            ):
                changed = _claim(entry, "changed on disk")  # replaced on disk: reload before using it
        if changed is not None:
            entry, model, queue, _ = changed
            log.warning("llm_magic: %s changed on disk since it was loaded; reloading it", entry.name)
            self._close_model(entry, model, queue, timeout=10.0)
            entry.note = f"reloaded at {time.strftime('%H:%M:%S')}: the file changed on disk"
        with self._lock:
            entry = self.load(spec)
            future = entry.future
        if entry.state == READY or future is None:
            return entry
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            future.result(timeout=remaining)
        except FutureTimeout:
            raise LoadTimeout(f"{entry.name} is still loading ({entry.loading_for():.1f} s so far)") from None
        except CacheClosed:
            if self.closed:
                raise
            return self.get(spec, deadline)  # unloaded while loading: load it afresh
        except LLMMagicError as exc:
            entry.error_reported = True
            raise type(exc)(str(exc)) from None
        except BaseException as exc:
            entry.error_reported = True
            raise ModelLoadError(f"loading {entry.name} failed: {type(exc).__name__}: {exc}") from exc
        return entry

    def wait(self, spec: ModelSpec, deadline: float | None, should_stop: Callable[[], bool]) -> Entry | None:
        """``get`` in short slices, so a caller's Stop and KeyboardInterrupt act during a load.
        None if ``should_stop()`` turned true; ``LoadTimeout`` once ``deadline`` passes."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise LoadTimeout("deadline passed while loading")
            if should_stop():
                return None
            try:
                return self.get(spec, deadline=time.monotonic() + (0.1 if remaining is None else min(0.1, remaining)))
            except LoadTimeout:
                continue

    # ---- use bookkeeping -------------------------------------------------------------------

    def begin_use(self, entry: Entry, model: Engine, user: QueueUser) -> ModelQueue | None:
        """Count ``user`` on ``entry`` (it is not evicted while counted, and an unload stops it) and
        return the model's queue; None if ``model`` is no longer the entry's loaded model."""
        with self._lock:
            if entry.state != READY or entry.model is not model or entry.queue is None:
                return None
            entry.active += 1
            entry.queue.join(user)  # under the lock: an unload from now on sees and stops it
            return entry.queue

    def end_use(self, entry: Entry, queue: ModelQueue, user: QueueUser, used: bool = True) -> None:
        with self._lock:
            queue.leave(user)
            entry.active -= 1
            if used:
                entry.uses += 1
                entry.last_used = time.time()
            if entry.active == 0:
                entry.idle_since = time.monotonic()

    # ---- unloading -------------------------------------------------------------------------

    def unload(self, entry: Entry, timeout: float = 10.0) -> bool:
        """Stop generations on ``entry``, wait until none streams, close the model. True when closed."""
        with self._lock:
            if entry.state == LOADING:
                entry.state = UNLOADED  # the load is aborted (or the loader closes what it built)
                entry.abort.set()
                if self._entries.get(entry.spec.key) is entry:
                    del self._entries[entry.spec.key]
                return True
            _, model, queue, _ = _claim(entry, "unloaded")
            self._entries.pop(entry.spec.key, None)
        return self._close_model(entry, model, queue, timeout)

    def _close_model(self, entry: Entry, model: Engine | None, queue: ModelQueue | None, timeout: float) -> bool:
        """Stop the model's requests and close it once none streams. If one does not stop within
        ``timeout``, the model closes when that one releases it (never leaked, never twice)."""
        if queue is not None:
            queue.stop_all()
        if model is None:
            return True
        if queue is None:
            model.close()
            return True
        with queue.exclusive(timeout) as idle:  # a late waiter sees model.closed and reloads
            if idle:
                model.close()
                return True
        log.warning("llm_magic: %s is still busy; it closes when its generation ends", entry.name)
        queue.close_when_idle(model.close)
        return False

    def close_all(self, timeout: float = 3.0) -> None:
        """Cancel running generations, close every model, stop the load threads. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            entries = list(self._entries.values())
        deadline = time.monotonic() + timeout
        self._stop_watch.set()
        for entry in entries:
            entry.abort.set()  # loads in progress give up at their next progress callback
        for entry in entries:
            if entry.queue is not None:
                entry.queue.stop_all()
        for entry in entries:
            self.unload(entry, timeout=max(0.05, deadline - time.monotonic()))
        self._pool.shutdown(timeout=max(0.05, deadline - time.monotonic()))
        self._watcher.join(0.5)

    def threads(self) -> list[threading.Thread]:
        return self._pool.threads() + ([self._watcher] if self._watcher.is_alive() else [])
