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

from . import config
from .config import ModelSpec
from .errors import CacheClosed, LLMMagicError, ModelLoadError
from .workers import WorkerPool

log = logging.getLogger("llm_magic")

LOADING, READY, FAILED, UNLOADED = "loading", "ready", "failed", "unloaded"


class LoadTimeout(LLMMagicError, TimeoutError):
    """The deadline passed while the model was still loading (the load goes on in the background)."""


_loading = threading.local()  # the abort event of the load running on this thread


def _default_loader(spec: ModelSpec):
    if spec.remote:
        from .engines import openai

        return openai.load(spec, abort=getattr(_loading, "abort", None))
    from .engines import llama

    return llama.load(spec, abort=getattr(_loading, "abort", None))


def _file_id(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def budget_bytes(value: Any) -> int:
    """``memory_budget``: bytes (int), "8GB"/"512MB", or "50%" of physical RAM; 0/""/None = none."""
    if value in (None, "", 0):
        return 0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip().upper().replace(" ", "")
    if text.endswith("%"):
        import psutil

        return int(psutil.virtual_memory().total * float(text[:-1]) / 100)
    for unit, factor in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(float(text))


def keep_alive_seconds(value: Any) -> float | None:
    """``keep_alive``: seconds, or "forever"/None/negative for never."""
    if value in (None, "") or (isinstance(value, str) and value.strip().lower() == "forever"):
        return None
    seconds = float(value)
    return None if seconds < 0 else seconds


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
    abort: threading.Event = field(default_factory=threading.Event)  # set: a running load gives up
    file_id: tuple | None = None  # (size, mtime_ns, inode) of the file when it was loaded
    idle_since: float = 0.0  # time.monotonic() when it last became idle (for keep_alive and LRU)
    note: str | None = None  # e.g. "evicted (LRU) at 12:01:02" or "reloaded: the file changed"

    @property
    def name(self) -> str:
        return self.spec.display_name

    def loading_for(self) -> float:
        return time.monotonic() - self.load_started if self.state == LOADING else 0.0

    def info(self) -> dict[str, Any]:
        remote = self.spec.remote
        return {
            "name": self.name,
            "path": self.spec.base_url if remote else self.spec.path,
            "state": "remote" if remote and self.state == READY else self.state,
            "kind": "remote" if remote else ("vision" if self.spec.mmproj else "local"),
            "mmproj": self.spec.mmproj or None,
            "chat_handler": getattr(self.model, "vision", None),
            "latency_s": getattr(self.model, "latency_s", None),
            "server_models": getattr(self.model, "available", None),
            "size_bytes": self.size_bytes,
            "load_s": self.load_s,
            "uses": self.uses,
            "last_used": self.last_used,
            "error": self.error,
            "note": self.note,
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
            entry.abort = threading.Event()
            try:
                entry.size_bytes = 0 if spec.remote else os.path.getsize(spec.path)
            except OSError:
                entry.size_bytes = 0
            victims = [] if spec.remote else self._make_room(entry)
            entry.future = self._pool.submit(self._load, entry)
        for victim, reason in victims:
            self._evict(victim, reason)
        return entry

    # ---- memory budget, LRU eviction, keep_alive ----------------------------------------------

    def _resident(self) -> list[Entry]:
        """Local models in memory (a remote model costs no local memory: not counted)."""
        return [e for e in self._entries.values() if e.state in (LOADING, READY) and not e.spec.remote]

    def _make_room(self, incoming: Entry) -> list[tuple[Entry, str]]:
        """Pick least recently used idle models to evict so that ``incoming`` fits the limits.

        A model that is generating or has a request queued (``active``) is never picked; if only
        such models remain, the load goes ahead over the limit (and says so) rather than fail."""
        max_models = config.settings.max_loaded_models
        budget = budget_bytes(config.settings.memory_budget)
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
        for victim, _ in victims:
            victim.state = UNLOADED  # claimed under the lock: nobody starts a new use of it now
        return victims

    def _evict(self, entry: Entry, reason: str) -> None:
        model, entry.model = entry.model, None
        entry.note = f"evicted ({reason}) at {time.strftime('%H:%M:%S')}"
        log.warning("llm_magic: evicted %s, idle since %.0f s (%s); it reloads when needed",
                    entry.name, time.monotonic() - entry.idle_since, reason)
        if model is not None:
            with model.lock:  # idle: free at once (a late waiter sees model.closed and reloads)
                model.close()

    def expire_idle(self, keep_alive: float) -> int:
        """Unload models idle for longer than ``keep_alive`` seconds (Ollama's keep_alive)."""
        now = time.monotonic()
        with self._lock:
            expired = [e for e in self._entries.values()
                       if e.state == READY and e.active == 0 and now - e.idle_since >= keep_alive]
            for e in expired:
                e.state = UNLOADED
        for e in expired:
            self._evict(e, f"keep_alive={keep_alive:g} s")
        return len(expired)

    def _watch_keep_alive(self) -> None:
        while not self.closed:
            keep = keep_alive_seconds(config.settings.keep_alive)
            period = 5.0 if keep is None else max(0.05, min(keep / 4, 5.0))
            if self._stop_watch.wait(period):
                return
            if keep is not None:
                self.expire_idle(keep)

    def _load(self, entry: Entry) -> Any:
        started = time.monotonic()
        try:
            file_id = None if entry.spec.remote else _file_id(entry.spec.path)
            _loading.abort = entry.abort
            model = (self._loader or _default_loader)(entry.spec)
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
            entry.file_id = file_id
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
        changed = None
        with self._lock:
            entry = self._entries.get(spec.key)
            if entry is not None and entry.state == FAILED and not entry.error_reported:
                entry.error_reported = True
                raise ModelLoadError(entry.error)
            if (entry is not None and entry.state == READY and entry.file_id is not None
                    and _file_id(spec.path) != entry.file_id):
                changed, entry.state = entry, UNLOADED  # replaced on disk: reload before using it
        if changed is not None:
            log.warning("llm_magic: %s changed on disk since it was loaded; reloading it", changed.name)
            self._retire(changed)
            changed.note = f"reloaded at {time.strftime('%H:%M:%S')}: the file changed on disk"
        with self._lock:
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
            if entry.active == 0:
                entry.idle_since = time.monotonic()

    # ---- unloading -------------------------------------------------------------------------

    def unload(self, entry: Entry, timeout: float = 10.0) -> bool:
        """Stop generations on ``entry``, wait for its lock, close the model. True when closed."""
        with self._lock:
            users = list(entry.users)
            model = entry.model
            if entry.state == LOADING:
                entry.state = UNLOADED  # the load is aborted (or the loader closes what it built)
                entry.abort.set()
                if self._entries.get(entry.spec.key) is entry:
                    del self._entries[entry.spec.key]
                return True
            entry.state = UNLOADED
            entry.model = None
            self._entries.pop(entry.spec.key, None)
        return self._close_model(entry, model, users, timeout)

    def _retire(self, entry: Entry, timeout: float = 10.0) -> bool:
        """Close an entry's model but keep the entry (for its status line and a reload)."""
        with self._lock:
            users, model, entry.model = list(entry.users), entry.model, None
        return self._close_model(entry, model, users, timeout)

    def _close_model(self, entry: Entry, model: Any, users: list, timeout: float) -> bool:
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
        self._stop_watch.set()
        for entry in entries:
            entry.abort.set()  # loads in progress give up at their next progress callback
        _stop_users([u for e in entries for u in e.users])
        for entry in entries:
            self.unload(entry, timeout=max(0.05, deadline - time.monotonic()))
        self._pool.shutdown(timeout=max(0.05, deadline - time.monotonic()))
        self._watcher.join(0.5)

    def threads(self) -> list[threading.Thread]:
        return self._pool.threads() + ([self._watcher] if self._watcher.is_alive() else [])


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
