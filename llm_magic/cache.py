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
import weakref
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import ModelSpec
from .errors import CacheClosed, LLMMagicError, ModelLoadError
from .workers import WorkerPool

log = logging.getLogger("llm_magic")

LOADING, READY, FAILED, UNLOADED = "loading", "ready", "failed", "unloaded"


class LoadTimeout(LLMMagicError, TimeoutError):
    """The deadline passed while the model was still loading (the load goes on in the background)."""


def _default_loader(spec: ModelSpec):
    from .engines import llama

    return llama.load(spec)


@dataclass
class Entry:
    spec: ModelSpec
    state: str = LOADING
    size_bytes: int = 0
    load_s: float | None = None
    uses: int = 0
    last_used: float | None = None  # time.time()
    error: str | None = None
    model: Any = None
    future: Future | None = None
    load_started: float = 0.0  # time.monotonic()
    error_reported: bool = True
    active: int = 0  # generations running or queued on this model
    users: weakref.WeakSet = field(default_factory=weakref.WeakSet)  # running requests (stop(), abandon())

    @property
    def name(self) -> str:
        return self.spec.display_name

    def loading_for(self) -> float:
        return time.monotonic() - self.load_started if self.state == LOADING else 0.0

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.spec.path,
            "state": self.state,
            "size_bytes": self.size_bytes,
            "load_s": self.load_s,
            "uses": self.uses,
            "last_used": self.last_used,
            "error": self.error,
            "mlock": getattr(self.model, "mlock", None),
            "n_ctx": getattr(self.model, "n_ctx", None),
            "n_threads": self.spec.n_threads,
        }


class ModelCache:
    def __init__(self, loader: Callable[[ModelSpec], Any] | None = None, max_workers: int = 2):
        self._loader = loader
        self._entries: dict[tuple, Entry] = {}
        self._lock = threading.RLock()
        self._pool = WorkerPool("llm_magic-load", max_workers)
        self.closed = False
        self.constructions = 0  # models built by this cache (a hit builds none)

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
            return [e for e in self._entries.values()
                    if name in (e.spec.name, e.spec.path, os.path.basename(e.spec.path), e.name)]

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
            try:
                entry.size_bytes = os.path.getsize(spec.path)
            except OSError:
                entry.size_bytes = 0
            entry.future = self._pool.submit(self._load, entry)
            return entry

    def _load(self, entry: Entry) -> Any:
        started = time.monotonic()
        loader = self._loader or _default_loader
        try:
            model = loader(entry.spec)
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
            entry.state = READY
            entry.load_s = time.monotonic() - started
            try:
                entry.size_bytes = os.path.getsize(entry.spec.path)
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
        with self._lock:
            entry = self._entries.get(spec.key)
            if entry is not None and entry.state == FAILED and not entry.error_reported:
                entry.error_reported = True
                raise ModelLoadError(entry.error)
            entry = self.load(spec)
            future = entry.future
        if entry.state == READY:
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

    # ---- use bookkeeping -------------------------------------------------------------------

    def begin_use(self, entry: Entry, user: Any, model: Any) -> bool:
        """Register a request on ``entry``; False if ``model`` is no longer the entry's loaded model."""
        with self._lock:
            if entry.state != READY or entry.model is not model:
                return False
            entry.active += 1
            entry.users.add(user)
            return True

    def end_use(self, entry: Entry, user: Any, used: bool = True) -> None:
        with self._lock:
            entry.active -= 1
            entry.users.discard(user)
            if used:
                entry.uses += 1
                entry.last_used = time.time()

    # ---- unloading -------------------------------------------------------------------------

    def unload(self, entry: Entry, timeout: float = 10.0) -> bool:
        """Stop generations on ``entry``, wait for its lock, close the model. True when closed."""
        with self._lock:
            users = list(entry.users)
            model = entry.model
            if entry.state == LOADING:
                entry.state = UNLOADED  # the loader closes the model when it finishes
                if self._entries.get(entry.spec.key) is entry:
                    del self._entries[entry.spec.key]
                return True
            entry.state = UNLOADED
            entry.model = None
            self._entries.pop(entry.spec.key, None)
        _stop_users(users)
        if model is None:
            return True
        lock = getattr(model, "lock", None)
        if lock is not None and not lock.acquire(timeout=timeout):
            log.warning("llm_magic: %s is still busy; not closing it (its generation did not stop)", entry.name)
            return False
        try:
            model.close()
        finally:
            if lock is not None:
                lock.release()
        return True

    def close_all(self, timeout: float = 3.0) -> None:
        """Cancel running generations, close every model, stop the load threads. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            entries = list(self._entries.values())
        deadline = time.monotonic() + timeout
        _stop_users([u for e in entries for u in e.users])
        for entry in entries:
            self.unload(entry, timeout=max(0.05, deadline - time.monotonic()))
        self._pool.shutdown(timeout=max(0.05, deadline - time.monotonic()))

    def threads(self) -> list[threading.Thread]:
        return self._pool.threads()


def _stop_users(users: list) -> None:
    """Stop running requests: each ends within a token; one whose consumer is not iterating it
    right now (a suspended stream) is closed here, so it releases its model at once."""
    for user in users:
        user.stop()
    for user in users:
        user.abandon()


_cache: ModelCache | None = None
_cache_lock = threading.Lock()


def get_cache() -> ModelCache:
    """The kernel-global cache (created on first use, and anew after ``close_cache()``)."""
    global _cache
    with _cache_lock:
        if _cache is None or _cache.closed:
            _cache = ModelCache()
            register_atexit()
        return _cache


def close_cache(timeout: float = 3.0) -> None:
    global _cache
    with _cache_lock:
        cache, _cache = _cache, None
    if cache is not None:
        cache.close_all(timeout=timeout)


_atexit_registered = False
_cleanup: Callable[[], None] | None = None


def register_atexit(cleanup: Callable[[], None] | None = None) -> None:
    """Run cleanup at interpreter exit, once per process (this module survives ``%reload_ext``).

    ``cleanup`` replaces the default (closing this cache): the package passes ``cleanup_models``."""
    global _atexit_registered, _cleanup
    if cleanup is not None:
        _cleanup = cleanup
    if not _atexit_registered:
        import atexit

        atexit.register(cleanup_hook)
        _atexit_registered = True


def cleanup_hook() -> None:
    try:
        (_cleanup or close_cache)()
    except Exception:  # never raise at interpreter exit
        log.debug("llm_magic: cleanup at exit failed", exc_info=True)
