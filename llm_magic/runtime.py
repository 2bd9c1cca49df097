"""The one owner of process-wide state: the model cache, the background worker pool, the running
requests, the conversations and the last answer.

``close()`` stops every request, closes every model and ends every worker thread; it is
``llm_magic.cleanup_models()``, runs at interpreter exit (registered once) and on
``%unload_ext``. It is idempotent and bounded in time (a kernel restart may not wait). After a
``close()`` the next use starts a fresh cache and pool; conversations and settings survive.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .cache import ModelCache
from .conversation import Conversations
from .model_queue import stop_and_close
from .workers import WorkerPool

if TYPE_CHECKING:
    from .answer import Answer
    from .request import Stream

log = logging.getLogger("llm_magic")


class Runtime:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cache: ModelCache | None = None
        self._pool: WorkerPool | None = None
        self._requests: weakref.WeakSet[Stream] = weakref.WeakSet()  # weak: a dropped stream can be collected
        self._atexit = False
        self.conversations = Conversations()
        self.last_answer: Answer | None = None
        self.mlock_warned = False  # "loaded without mlock" is said once per process
        self.gpu_warned = False  # "GPU layers asked for, but this build has no GPU backend": once too

    # ---- parts, created on first use --------------------------------------------------------

    @property
    def cache(self) -> ModelCache:
        with self._lock:
            if self._cache is None or self._cache.closed:
                self._cache = ModelCache()
                self._register_atexit()
            return self._cache

    def cache_if_open(self) -> ModelCache | None:
        with self._lock:
            return self._cache if self._cache is not None and not self._cache.closed else None

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on a named daemon worker (``llm_magic-gen-N``)."""
        with self._lock:
            if self._pool is None:
                self._pool = WorkerPool("llm_magic-gen", max_workers=8)
                self._register_atexit()
            pool = self._pool
        return pool.submit(fn)

    # ---- running requests -----------------------------------------------------------------

    def track(self, request: Stream) -> None:
        with self._lock:
            self._requests.add(request)

    def untrack(self, request: Stream) -> None:
        with self._lock:
            self._requests.discard(request)

    def requests(self) -> list[Stream]:
        with self._lock:
            return list(self._requests)

    def stop_all(self, reason: str = "cancelled") -> None:
        """Stop every running request (each ends within a token); close the suspended ones."""
        stop_and_close(list(self.requests()), reason)

    # ---- the end ----------------------------------------------------------------------------

    def close(self, timeout: float = 3.0) -> None:
        """Stop requests, close every model, end the worker threads. Idempotent and bounded."""
        deadline = time.monotonic() + timeout  # one budget for everything: a restart may not wait
        self.stop_all()
        with self._lock:
            cache, self._cache = self._cache, None
            pool, self._pool = self._pool, None
        if cache is not None:
            cache.close_all(timeout=max(0.05, deadline - time.monotonic()))
        if pool is not None:
            pool.shutdown(timeout=max(0.05, deadline - time.monotonic()))
        from . import ask_log
        from .provenance import HASHES  # the model files' background hashes (issue 15)

        HASHES.stop(timeout=max(0.05, deadline - time.monotonic()))
        ask_log.close_all()  # the log's connection (reopened by the next ask)

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            cache, pool = self._cache, self._pool
        return (cache.threads() if cache is not None else []) + (pool.threads() if pool is not None else [])

    def _register_atexit(self) -> None:
        if not self._atexit:
            atexit.register(self._close_at_exit)
            self._atexit = True

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception:  # never raise at interpreter exit
            log.debug("llm_magic: cleanup at exit failed", exc_info=True)


_runtime = Runtime()


def get() -> Runtime:
    """The process's runtime (this module survives ``%reload_ext``, so there is only ever one)."""
    return _runtime
