"""llm_magic.model_queue: who holds a model and who waits. Direct tests of ``ModelQueue`` with small
stand-in requests (the queue only needs stop/stale/suspended/abandon), then real requests on the
tiny model: same-model requests are serialized, a request that waits too long says why."""

from __future__ import annotations

import gc
import threading
import time

import llm_magic
from llm_magic import runtime
from llm_magic.model_queue import ModelQueue


class User:
    """A stand-in request: records what the queue asks of it."""

    def __init__(self, queue: ModelQueue | None = None, *, suspended: bool = False, stale: bool = False):
        self.queue = queue
        self.stopped: str | None = None
        self.abandoned = 0
        self._suspended, self._stale = suspended, stale

    def stop(self, reason: str = "cancelled") -> None:
        self.stopped = reason

    def stale(self) -> bool:
        return self._stale or self.stopped is not None

    def suspended(self) -> bool:
        return self._suspended

    def abandon(self) -> bool:
        self.abandoned += 1
        if self.queue is not None and self in self.queue.holders():
            self.queue.release(self)  # what closing a suspended generator does
        return True


def never() -> bool:
    return False


def after(seconds: float):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


def test_one_slot_is_held_by_one_request_at_a_time():
    q = ModelQueue()
    a, b = User(q), User(q)
    assert q.slots == 1 and ModelQueue(0).slots == 1
    assert q.acquire(a, never) and q.holders() == [a]
    t0 = time.monotonic()
    assert q.acquire(b, after(0.3)) is False  # a holds it; b gives up when its should_stop says so
    assert 0.25 < time.monotonic() - t0 < 10
    got = []
    waiter = threading.Thread(target=lambda: got.append(q.acquire(b, after(30))))
    waiter.start()
    time.sleep(0.2)
    assert got == [] and q.holders() == [a]
    q.release(a)
    waiter.join(10)
    assert got == [True] and q.holders() == [b]
    q.release(b)
    assert q.holders() == []


def test_several_slots_for_a_server():
    q = ModelQueue(3)
    users = [User(q) for _ in range(4)]
    assert all(q.acquire(u, never) for u in users[:3])
    assert q.acquire(users[3], after(0.2)) is False
    q.release(users[0])
    assert q.acquire(users[3], after(5))
    assert sorted(map(id, q.holders())) == sorted(map(id, users[1:]))


def test_a_waiter_reclaims_a_stale_suspended_holder_only():
    q = ModelQueue()
    busy = User(q, suspended=True)  # suspended but within its deadline: it keeps the model
    assert q.acquire(busy, never)
    waiter = User(q)
    assert q.acquire(waiter, after(0.3)) is False
    assert busy.abandoned == 0
    busy._stale = True  # its deadline passed: the next waiter closes it
    assert q.acquire(waiter, after(10))
    assert busy.abandoned >= 1 and q.holders() == [waiter]


def test_an_unreferenced_holder_is_forgotten():
    q = ModelQueue(2)
    gone = User(q)
    assert q.acquire(gone, never)
    del gone
    gc.collect()
    assert q.holders() == []  # weak references: the queue never keeps a request alive


def test_stop_all_stops_and_abandons_everyone_who_joined():
    q = ModelQueue()
    holder, waiter, left = User(q), User(q), User(q)
    for u in (holder, waiter, left):
        q.join(u)
    q.leave(left)
    assert q.acquire(holder, never)
    q.stop_all()
    assert holder.stopped == waiter.stopped == "cancelled" and left.stopped is None
    assert holder.abandoned == 1 and waiter.abandoned == 1 and left.abandoned == 0
    assert q.holders() == []  # the holder's slot is free at once


def test_exclusive_waits_for_every_slot_and_gives_them_back():
    q = ModelQueue(2)
    a = User(q)
    with q.exclusive(1.0) as idle:
        assert idle
        assert q.acquire(a, after(0.2)) is False  # nobody starts while the cache holds every slot
    assert q.acquire(a, after(5))
    t0 = time.monotonic()
    with q.exclusive(0.3) as idle:
        assert idle is False  # a kept its slot
    assert 0.25 < time.monotonic() - t0 < 10
    b = User(q)
    assert q.acquire(b, after(5))  # the slot exclusive() did take was given back
    q.release(a)
    q.release(b)
    with q.exclusive(1.0) as idle:
        assert idle


# ---- real requests on the tiny model ---------------------------------------------------------------


def test_same_model_requests_are_serialized(tiny_model):
    solo = llm_magic.ask("alpha", model=tiny_model, max_tokens=100, temperature=0)
    [entry] = runtime.get().cache.entries()
    assert entry.queue.slots == 1  # a Llama runs one generation at a time
    out = []
    most_holders = 0
    threads = [
        threading.Thread(
            target=lambda: out.append(llm_magic.ask("alpha", model=tiny_model, max_tokens=100, temperature=0))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        most_holders = max(most_holders, len(entry.queue.holders()))
        time.sleep(0.001)
    for t in threads:
        t.join(60)
    assert len(out) == 3 and all(a == solo for a in out)
    assert most_holders == 1  # seen generating, never two at once
    assert entry.uses == 4 and entry.active == 0


def test_timeout_waiting_for_a_busy_model_says_so(tiny_model):
    s = llm_magic.stream("go", model=tiny_model, max_tokens=100_000, timeout=60)
    next(s)
    b = llm_magic.ask("next", model=tiny_model, max_tokens=3, timeout=0.3)
    assert b.finish_reason == "timeout" and b == "" and b.n_tokens == 0
    assert "busy with another request" in b.marker()
    s.close()
    assert s.answer.finish_reason == "cancelled"
    [entry] = runtime.get().cache.entries()
    assert entry.queue.holders() == [] and entry.active == 0
    assert llm_magic.ask("free again", model=tiny_model, max_tokens=3).n_tokens == 3


def test_close_when_idle_runs_now_or_when_the_last_holder_leaves():
    q = ModelQueue(2)
    closed: list[str] = []
    q.close_when_idle(lambda: closed.append("now"))
    assert closed == ["now"]  # nobody held it
    a, b = User(), User()
    assert q.acquire(a, never) and q.acquire(b, never)
    q.close_when_idle(lambda: closed.append("later"))
    q.release(a)
    assert closed == ["now"]  # b still streams
    q.release(b)
    assert closed == ["now", "later"]
    assert q.acquire(a, never)  # a later release runs nothing more
    q.release(a)
    assert closed == ["now", "later"]


def test_a_model_whose_generation_will_not_stop_is_closed_when_it_does(tiny_model):
    """The cache gives up waiting (its timeout), and the model closes once the holder lets go."""
    entry = llm_magic.preload(tiny_model)[0]
    cache = runtime.get().cache
    entry = cache.get(entry.spec)
    model, queue = entry.model, entry.queue
    holder = User()
    assert queue.acquire(holder, never)  # holds the slot and ignores stop()
    cache.unload(entry, timeout=0.2)
    assert not model.closed  # still in use: not closed under it
    queue.release(holder)
    assert model.closed  # closed as soon as it was let go, not leaked


def test_others_waiting_sees_a_request_that_joined_without_a_slot():
    from llm_magic.model_queue import ModelQueue

    class User:
        def stop(self, reason="cancelled"):
            pass

        def stale(self):
            return False

        def suspended(self):
            return False

        def abandon(self):
            return False

    q, holder, waiter = ModelQueue(), User(), User()
    q.join(holder)
    assert q.acquire(holder, lambda: True)
    assert not q.others_waiting(holder)
    q.join(waiter)
    assert q.others_waiting(holder) and q.others_waiting(waiter) is False
    q.leave(waiter)
    assert not q.others_waiting(holder)
    other_completion = User()
    other_completion.gives_way = True  # another inline completion: it does not make the holder stop
    q.join(other_completion)
    assert not q.others_waiting(holder)
    q.leave(other_completion)
    q.release(holder)
