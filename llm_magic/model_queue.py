"""Who holds a model and who waits for it: one ``ModelQueue`` per loaded model.

A ``llama_cpp.Llama`` runs one generation at a time, so a local model has one slot; a remote
server schedules for itself, so it gets several. Requests ``acquire`` a slot (honouring their
own stop and deadline while they wait) and ``release`` it. The cache calls ``stop_all`` and
``exclusive`` before it closes a model. Nothing outside this module touches the lock or the
holders.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Protocol


class QueueUser(Protocol):
    """What the queue needs of a request."""

    def stop(self, reason: str = "cancelled") -> None:
        """End within one token (from any thread)."""

    def stale(self) -> bool:
        """Stopped or past its deadline."""

    def suspended(self) -> bool:
        """Holding a slot while nobody iterates it (a generator left half-read)."""

    def abandon(self) -> bool:
        """Close it now if nobody is iterating it; True when closed."""


def stop_and_close(users: list[QueueUser], reason: str = "cancelled") -> None:
    """Stop every request first (each ends within a token), then close the ones nobody iterates."""
    for user in users:
        user.stop(reason)
    for user in users:
        user.abandon()


class ModelQueue:
    def __init__(self, slots: int = 1):
        self.slots = max(1, slots)
        self._free = threading.Semaphore(self.slots)
        self._lock = threading.Lock()
        self._holders: list[weakref.ref[QueueUser]] = []
        self._users: weakref.WeakSet[QueueUser] = weakref.WeakSet()  # holding or waiting
        self._on_idle: Callable[[], None] | None = None  # run once when the last holder releases

    # ---- requests ------------------------------------------------------------------------------

    def join(self, user: QueueUser) -> None:
        """Register a request on this model (it may be stopped by ``stop_all`` from now on)."""
        with self._lock:
            self._users.add(user)

    def leave(self, user: QueueUser) -> None:
        with self._lock:
            self._users.discard(user)

    def acquire(self, user: QueueUser, should_stop: Callable[[], bool]) -> bool:
        """Wait for a slot; False if ``should_stop()`` turns true first.

        While waiting, a holder that is stale and suspended (a stream its reader dropped or
        forgot) is closed, and an unreferenced suspended holder is collected, so an abandoned
        request cannot keep a model busy forever."""
        last_gc = time.monotonic()
        while True:
            if self._free.acquire(timeout=0.05):
                with self._lock:
                    self._holders.append(weakref.ref(user))
                return True
            if should_stop():
                return False
            if self._reclaim(user) and time.monotonic() - last_gc > 1.0:
                # ``for chunk in stream(...): break`` leaves a suspended generator: once nothing
                # references it, a collection finalizes it, which closes it and frees the slot
                gc.collect()
                last_gc = time.monotonic()

    def _reclaim(self, waiter: QueueUser) -> bool:
        """Close stale suspended holders; True if a suspended one remains (worth a collection).
        A function of its own so no reference to a holder outlives it."""
        suspended = False
        for holder in self.holders():
            if holder is waiter:
                continue
            if holder.stale():
                holder.abandon()
            elif holder.suspended():
                suspended = True
        return suspended

    def end_suspended(self) -> None:
        """Stop and close the holders nobody is iterating (the model is to be closed)."""
        stop_and_close([holder for holder in self.holders() if holder.suspended()])

    def release(self, user: QueueUser) -> None:
        with self._lock:
            self._holders = [r for r in self._holders if r() is not None and r() is not user]
            on_idle = self._on_idle if not self._holders else None
            if on_idle is not None:
                self._on_idle = None
        self._free.release()
        if on_idle is not None:
            on_idle()

    def others_waiting(self, user: QueueUser) -> bool:
        """Whether a request other than ``user`` has joined this model without holding a slot (it
        waits, or is about to): a request that gives way (an inline completion) stops then. Requests
        that give way themselves (``gives_way`` true) do not count: two never stop each other."""
        with self._lock:
            holding = {id(u) for u in (r() for r in self._holders) if u is not None}
            return any(
                u is not user and id(u) not in holding and not getattr(u, "gives_way", False) for u in self._users
            )

    def holders(self) -> list[QueueUser]:
        with self._lock:
            return [u for u in (r() for r in self._holders) if u is not None]

    # ---- the cache's side ----------------------------------------------------------------------

    def stop_all(self) -> None:
        """Stop every request on this model; close the suspended ones so their slots free at once."""
        with self._lock:
            users = list(self._users)
        stop_and_close(users)

    def close_when_idle(self, close: Callable[[], None]) -> None:
        """Run ``close`` once no request holds a slot: now, or when the last holder releases."""
        with self._lock:
            if self._holders:
                self._on_idle = close
                return
        close()

    @contextlib.contextmanager
    def exclusive(self, timeout: float) -> Iterator[bool]:
        """Hold every slot (no request is streaming) for at most ``timeout`` s of waiting.
        Yields False if the slots did not all free in time."""
        deadline = time.monotonic() + timeout
        taken = 0
        try:
            while taken < self.slots and self._free.acquire(timeout=max(0.0, deadline - time.monotonic())):
                taken += 1
            yield taken == self.slots
        finally:
            for _ in range(taken):
                self._free.release()
