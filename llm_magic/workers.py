"""A small bounded pool of named **daemon** worker threads.

Why not ``concurrent.futures.ThreadPoolExecutor``: its workers are joined at interpreter exit
*before* ``atexit`` handlers run, so a model load or a long generation in flight would hold a
kernel shutdown hostage. Our threads are daemons; ``atexit`` cleanup tells running work to stop
and waits a bounded time for it. Results travel through ordinary ``concurrent.futures.Future``s.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_STOP = object()


class WorkerPool:
    def __init__(self, name: str, max_workers: int):
        self.name = name
        self.max_workers = max_workers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)  # released by each worker that waits for work
        self._lock = threading.Lock()
        self._closed = False
        self._counter = itertools.count(1)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"worker pool {self.name} is shut down")
            self._queue.put((future, fn, args, kwargs))
            # same policy as ThreadPoolExecutor: reuse an idle worker, else start one up to the bound
            if not self._idle.acquire(timeout=0) and len(self._threads) < self.max_workers:
                thread = threading.Thread(target=self._work, name=f"{self.name}-{next(self._counter)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn, args, kwargs = item
            result = None
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                del future, fn, args, kwargs, item, result  # don't keep results alive while idle
            self._idle.release()

    def threads(self) -> list[threading.Thread]:
        return [t for t in self._threads if t.is_alive()]

    def shutdown(self, timeout: float = 2.0) -> bool:
        """Stop accepting work, cancel queued work, and wait up to ``timeout`` s for threads to end.

        Returns True when every worker thread has ended.
        """
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        # cancel what never started
        pending = []
        while True:
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for item in pending:
            if item is not _STOP:
                item[0].cancel()
        for _ in threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)
