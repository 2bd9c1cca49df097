"""The kernel-global model cache.

One ``Entry`` per ``ModelSpec`` key (resolved path + load options): a model is loaded at most once
per kernel, whichever front end asks. Loads run on a bounded pool of named daemon threads;
callers wait with a deadline; two requests for a model that is still loading share one load.
A failed background load keeps its error: it is shown in the status, raised at first use, and
the next load retries. Loading another spec of the same model (say, after ``n_ctx`` changed)
replaces the older one: it closes once its requests end. Nothing here imports IPython.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from . import memory_estimate, model_sources
from . import settings as settings_mod
from .cache_entry import CLOSING, FAILED, LOADING, READY, UNLOADED, Entry, Victim, claim, file_id, load_options
from .engines import load_engine
from .engines.base import Engine, Loader
from .errors import CacheClosed, LLMMagicError, LoadTimeout, ModelLoadError
from .eviction import expired, lru_victims, same_model
from .gguf_header import GGUFError
from .model_queue import ModelQueue, QueueUser
from .specs import ModelSpec
from .workers import WorkerPool

log = logging.getLogger("llm_magic")


class ModelCache:
    def __init__(self, loader: Loader | None = None, max_workers: int = 2):
        self._loader: Loader = loader or load_engine
        self._entries: dict[tuple[Any, ...], Entry] = {}
        self._closing: list[Entry] = []  # replaced, still finishing a request: closed when it ends
        self._replaced: dict[tuple[Any, ...], str] = {}  # retired keys -> the options that replaced them
        self._lock = threading.RLock()
        self._pool = WorkerPool("llm_magic-load", max_workers)
        # hf: models that must download first load on their own threads: a long download never
        # holds a load thread that a local model needs
        self._downloads = WorkerPool("llm_magic-download", max_workers)
        self.closed = False
        self.constructions = 0  # models built by this cache (a hit builds none)
        self._stop_watch = threading.Event()
        self._watcher = threading.Thread(target=self._watch_keep_alive, name="llm_magic-keepalive", daemon=True)
        self._watcher.start()

    # ---- lookups -------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every entry: loaded, loading, failed, unloaded (a note), then replaced ones still closing."""
        with self._lock:
            return [*self._entries.values(), *self._closing]

    def entry(self, spec: ModelSpec) -> Entry | None:
        with self._lock:
            return self._entries.get(spec.key)

    def find(self, name: str) -> list[Entry]:
        """Entries whose alias, file name or path is ``name``."""
        with self._lock:
            return [
                e
                for e in [*self._entries.values(), *self._closing]
                if name in (e.spec.name, e.spec.path, os.path.basename(e.spec.path), e.name)
            ]

    # ---- loading -------------------------------------------------------------------------

    def load(self, spec: ModelSpec, *, retry_failed: bool = True, replace: bool = True) -> Entry:
        """Start loading ``spec`` in the background unless it is loaded or loading. Never blocks.
        Other entries of the same model, loaded with other options, are replaced. ``replace=False``
        (a request already under way, retrying) never replaces a newer instance: if its own was
        replaced meanwhile, that is a ``ModelLoadError`` rather than a reload that evicts the new one."""
        with self._lock:
            if self.closed:
                raise CacheClosed("the model cache is shut down")
            entry = self._entries.get(spec.key)
            newer = self._replaced.get(spec.key) if entry is None else None
            if newer is not None and not replace:
                raise ModelLoadError(f"{spec.display_name} was replaced by {newer} (its options changed): ask again")
            self._replaced.pop(spec.key, None)
            if entry is None and (entry := self._revive(spec)) is not None:
                replaced = self._retire_others(spec)  # switched back while the old one was busy
            elif entry is not None and (
                entry.state in (LOADING, READY) or (entry.state == FAILED and not retry_failed)
            ):
                return entry
            else:
                replaced = self._retire_others(spec)
                entry = self._start_load(spec, entry)
                pool = self._downloads if _downloads_first(spec) else self._pool
                entry.future = pool.submit(self._load, entry)
        for old, model, queue, _ in replaced:
            self._close_model(old, model, queue, timeout=10.0)  # idle: closes now
        return entry

    def _start_load(self, spec: ModelSpec, entry: Entry | None) -> Entry:
        """The entry of ``spec`` (new, failed or unloaded) marked loading (caller holds the lock)."""
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
        return entry

    # ---- replacing: one instance per model --------------------------------------------------------

    def _retire_others(self, spec: ModelSpec) -> list[Victim]:
        """Retire the other entries of ``spec``'s model (same file and projector, or same server and
        model), loaded with other options (caller holds the lock): an idle one is claimed to close
        now, a busy one closes when its last request ends (never under a generation), a loading one
        is abandoned, a failed or unloaded one is forgotten. No request starts on any of them again."""
        now, claimed = load_options(spec) or "default options", list[Victim]()
        for old in same_model(self._entries.values(), spec):
            del self._entries[old.spec.key]
            self._replaced[old.spec.key] = now
            log.info("llm_magic: %s (%s) is replaced by %s", old.name, load_options(old.spec) or "default options", now)
            old.replaced_by = now
            if old.state == LOADING:  # its waiters get a ModelLoadError saying so (no reload ping-pong)
                old.state = UNLOADED
                old.abort.set()
            elif old.state == READY and old.active == 0:
                claimed.append(claim(old, f"replaced by {now}"))
            elif old.state == READY:
                old.state, old.note = CLOSING, f"replaced by {now}: closes when its request ends"
                self._closing.append(old)
        return claimed

    def _revive(self, spec: ModelSpec) -> Entry | None:
        """A replaced entry of ``spec`` that is still finishing a request takes over again (caller
        holds the lock): switching back to the old options while it is busy needs no new load."""
        old = next((e for e in self._closing if e.spec.key == spec.key), None)
        if old is not None:
            self._forget(old)
            old.state, old.note, old.replaced_by = READY, None, None
            self._entries[spec.key] = old
        return old

    # ---- memory budget, LRU eviction, keep_alive ----------------------------------------------

    def _resident(self) -> list[Entry]:
        """Local models in memory (a remote model costs no local memory: not counted)."""
        live = (LOADING, READY, CLOSING)
        return [e for e in [*self._entries.values(), *self._closing] if e.state in live and not e.spec.remote]

    def _make_room(self, incoming: Entry) -> None:
        """Before a local load (on its worker): estimate its memory from the GGUF header, refuse it
        if it cannot fit (``memory_estimate.check_fits``: over ``memory_budget`` on its own, or over
        the RAM available with every idle model evicted), else evict the idle models
        ``eviction.lru_victims`` picks so that it fits the limits. If every other model is busy, the
        load goes over ``max_loaded_models``/``memory_budget`` and says so."""
        try:
            est = memory_estimate.estimate_spec(incoming.spec)
        except (GGUFError, OSError):
            est = None  # an unreadable file: the loader says why
        except Exception:
            log.debug("llm_magic: no memory estimate for %s", incoming.name, exc_info=True)
            est = None
        settings = settings_mod.current()
        budget = settings.memory_budget_bytes
        with self._lock:
            if est is not None:
                incoming.memory_bytes = est.host_bytes
            resident = [e for e in self._resident() if e is not incoming]
            idle = sum(e.memory for e in resident if e.state == READY and e.active == 0)
            free = None
            if est is not None:
                # what other loads under way will take is not allocated yet: count it as taken
                reserved = sum(e.memory_bytes for e in resident if e.state == LOADING)
                free = max(0, memory_estimate.available_memory() - reserved)
                memory_estimate.check_fits(incoming.spec, est, budget=budget, evictable=idle, available=free)
            victims, over = lru_victims(resident, incoming, settings.max_loaded_models, budget, free)
            claimed = [claim(victim, reason) for victim, reason in victims]
        if over is not None:
            log.warning("llm_magic: loading %s goes over %s: every loaded model is busy", incoming.name, over)
        for victim in claimed:
            self._evict(victim)

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
            victims = [
                claim(e, f"keep_alive={keep_alive:g} s") for e in expired(self._entries.values(), keep_alive, now)
            ]
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
            with self._lock:  # a replaced model kept open by a half-read stream: that stream ends
                queues = [e.queue for e in self._closing if e.queue is not None]
            for queue in queues:
                queue.end_suspended()

    def _load(self, entry: Entry) -> Any:
        started = time.monotonic()
        try:
            if not entry.spec.remote:  # an hf: model not in the cache yet downloads here, like a preload
                for path in (entry.spec.path, entry.spec.mmproj):
                    model_sources.fetch(path, entry.abort)
            loaded_id = None if entry.spec.remote else file_id(entry.spec.path)
            if not entry.spec.remote:
                self._make_room(entry)
            model = self._loader(entry.spec, entry.abort)
        except BaseException as exc:
            with self._lock:
                entry.state = FAILED
                entry.error = str(exc) if isinstance(exc, LLMMagicError) else f"{type(exc).__name__}: {exc}"
                entry.load_s = time.monotonic() - started
                if entry.replaced_by is not None:
                    raise ModelLoadError(f"{entry.name} was replaced by {entry.replaced_by} while it loaded") from None
            # no output from a worker thread: the error is kept, shown in %llm status, raised at first use
            log.debug("llm_magic: loading %s failed: %s", entry.name, entry.error)
            raise
        with self._lock:
            self.constructions += 1
            if self.closed or entry.state != LOADING or self._entries.get(entry.spec.key) is not entry:
                # unloaded or shut down while it loaded: don't keep it
                model.close()
                entry.state = UNLOADED
                if entry.replaced_by is not None:
                    raise ModelLoadError(f"{entry.name} was replaced by {entry.replaced_by} while it loaded")
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

    def get(self, spec: ModelSpec, deadline: float | None = None, *, replace: bool = True) -> Entry:
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
                changed = claim(entry, "changed on disk")  # replaced on disk: reload before using it
        if changed is not None:
            entry, model, queue, _ = changed
            log.warning("llm_magic: %s changed on disk since it was loaded; reloading it", entry.name)
            self._close_model(entry, model, queue, timeout=10.0)
            entry.note = f"reloaded at {time.strftime('%H:%M:%S')}: the file changed on disk"
        entry = self.load(spec, replace=replace)  # outside the lock: a replaced model may close here
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
            return self.get(spec, deadline, replace=False)  # unloaded while loading: load it afresh
        except LLMMagicError as exc:
            entry.error_reported = True
            raise type(exc)(str(exc)) from None
        except BaseException as exc:
            entry.error_reported = True
            raise ModelLoadError(f"loading {entry.name} failed: {type(exc).__name__}: {exc}") from exc
        return entry

    def wait(
        self, spec: ModelSpec, deadline: float | None, should_stop: Callable[[], bool], *, replace: bool = True
    ) -> Entry | None:
        """``get`` in short slices, so a caller's Stop and KeyboardInterrupt act during a load.
        None if ``should_stop()`` turned true; ``LoadTimeout`` once ``deadline`` passes. Only the
        first slice may replace another instance of the model (see ``load``)."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise LoadTimeout("deadline passed while loading")
            if should_stop():
                return None
            try:
                slice_end = time.monotonic() + (0.1 if remaining is None else min(0.1, remaining))
                return self.get(spec, deadline=slice_end, replace=replace)
            except LoadTimeout:
                replace = False
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
        """Uncount ``user``; the last request of a replaced (closing) entry closes its model."""
        replaced: Victim | None = None
        with self._lock:
            queue.leave(user)
            entry.active -= 1
            if used:
                entry.uses += 1
                entry.last_used = time.time()
            if entry.active == 0:
                entry.idle_since = time.monotonic()
                if entry.state == CLOSING:
                    self._forget(entry)
                    replaced = claim(entry, "replaced")
        if replaced is not None:
            _, model, old_queue, _ = replaced
            self._close_model(entry, model, old_queue, timeout=10.0)  # no request left on it: closes now

    # ---- unloading -------------------------------------------------------------------------

    def unload(self, entry: Entry, timeout: float = 10.0) -> bool:
        """Stop generations on ``entry``, wait until none streams, close the model. True when closed."""
        with self._lock:
            self._forget(entry)
            if entry.state == LOADING:
                entry.state = UNLOADED  # the load is aborted (or the loader closes what it built)
                entry.abort.set()
                return True
            _, model, queue, _ = claim(entry, "unloaded")
        return self._close_model(entry, model, queue, timeout)

    def _forget(self, entry: Entry) -> None:
        """Drop ``entry`` from the cache (caller holds the lock); another entry of its key stays."""
        if self._entries.get(entry.spec.key) is entry:
            del self._entries[entry.spec.key]
        self._closing = [e for e in self._closing if e is not entry]

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
            entries = [*self._entries.values(), *self._closing]
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
        self._downloads.shutdown(timeout=max(0.05, deadline - time.monotonic()))
        self._watcher.join(0.5)

    def threads(self) -> list[threading.Thread]:
        watcher = [self._watcher] if self._watcher.is_alive() else []
        return self._pool.threads() + self._downloads.threads() + watcher


def _downloads_first(spec: ModelSpec) -> bool:
    """Must this local model (or its projector) download before it loads (an ``hf:`` model not in
    the Hugging Face cache yet)?"""
    return not spec.remote and any(model_sources.needs_download(p) for p in (spec.path, spec.mmproj) if p)
