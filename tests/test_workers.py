"""llm_magic.workers: ``WorkerPool`` — idle workers are reused, the number of threads is bounded,
threads are named daemons, a job's exception reaches its future, ``shutdown`` cancels queued work
and joins within its timeout, and nothing is submitted after it."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from llm_magic.workers import WorkerPool


@pytest.fixture
def pool():
    p = WorkerPool("llm_magic-test", max_workers=2)
    yield p
    p.shutdown(timeout=5)


def wait_until(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def current_name() -> str:
    return threading.current_thread().name


def test_a_job_runs_on_a_named_daemon_thread(pool):
    future = pool.submit(lambda a, b=0: (a + b, current_name(), threading.current_thread().daemon), 40, b=2)
    value, name, daemon = future.result(timeout=10)
    assert value == 42 and name == "llm_magic-test-1" and daemon is True
    [thread] = pool.threads()
    assert thread.name == "llm_magic-test-1" and thread.daemon


def test_an_idle_worker_is_reused(pool):
    names = []
    for _ in range(5):
        names.append(pool.submit(current_name).result(timeout=10))
        time.sleep(0.3)  # let the worker mark itself idle after handing over the result
    assert names == ["llm_magic-test-1"] * 5
    assert len(pool.threads()) == 1


def test_the_number_of_threads_is_bounded(pool):
    gate = threading.Event()
    running: list[str] = []
    lock = threading.Lock()

    def job(i):
        with lock:
            running.append(current_name())
        gate.wait(30)
        return i

    futures = [pool.submit(job, i) for i in range(6)]
    assert wait_until(lambda: len(running) == 2)
    time.sleep(0.2)
    assert len(running) == 2  # the other four wait in the queue
    assert sorted(t.name for t in pool.threads()) == ["llm_magic-test-1", "llm_magic-test-2"]
    assert sum(f.running() for f in futures) == 2 and not any(f.done() for f in futures)
    gate.set()
    assert [f.result(timeout=10) for f in futures] == list(range(6))
    assert set(running) == {"llm_magic-test-1", "llm_magic-test-2"} and len(pool.threads()) == 2


class Boom(BaseException):
    pass


def test_exceptions_reach_the_future_and_the_worker_survives(pool):
    def fail(exc):
        raise exc

    with pytest.raises(ValueError, match="bad value"):
        pool.submit(fail, ValueError("bad value")).result(timeout=10)
    future = pool.submit(fail, Boom("not an Exception"))
    assert isinstance(future.exception(timeout=10), Boom)
    time.sleep(0.3)
    assert pool.submit(current_name).result(timeout=10) == "llm_magic-test-1"  # the same worker goes on
    assert len(pool.threads()) == 1


def test_an_idle_worker_keeps_no_job_alive(pool):
    class Thing:
        pass

    arg = Thing()
    arg_ref = weakref.ref(arg)
    future = pool.submit(lambda x: Thing(), arg)
    result_ref = weakref.ref(future.result(timeout=10))
    del arg, future
    assert wait_until(lambda: gc.collect() is not None and arg_ref() is None and result_ref() is None)
    assert len(pool.threads()) == 1  # the worker is alive, idle, and holds neither


def test_shutdown_cancels_queued_work_and_waits_within_its_timeout():
    pool = WorkerPool("llm_magic-test", max_workers=1)
    started, gate = threading.Event(), threading.Event()

    def blocking():
        started.set()
        gate.wait(30)
        return "finished"

    first = pool.submit(blocking)
    queued = [pool.submit(lambda i=i: i) for i in range(3)]
    assert started.wait(10)
    t0 = time.monotonic()
    assert pool.shutdown(timeout=0.5) is False  # the running job is still running
    elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 5
    assert all(f.cancelled() for f in queued)
    assert not first.done()
    gate.set()
    assert first.result(timeout=10) == "finished"  # running work is not cut off
    assert wait_until(lambda: pool.threads() == [])


def test_shutdown_of_idle_workers_is_quick_and_complete(pool):
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 30) for _ in range(2)]
    gate.set()
    assert all(f.result(timeout=10) for f in futures)
    threads = pool.threads()
    assert len(threads) == 2
    t0 = time.monotonic()
    assert pool.shutdown(timeout=10) is True
    assert time.monotonic() - t0 < 5
    assert not any(t.is_alive() for t in threads) and pool.threads() == []
    assert pool.shutdown() is True  # again: nothing left


def test_submit_after_shutdown_raises(pool):
    pool.submit(int).result(timeout=10)
    pool.shutdown(timeout=5)
    with pytest.raises(RuntimeError, match="worker pool llm_magic-test is shut down"):
        pool.submit(int)
    empty = WorkerPool("llm_magic-never", max_workers=1)
    assert empty.shutdown(timeout=1) is True and empty.threads() == []
    with pytest.raises(RuntimeError, match="is shut down"):
        empty.submit(int)


def test_a_job_can_shut_its_own_pool_down(pool):
    t0 = time.monotonic()
    assert pool.submit(lambda: pool.shutdown(timeout=5)).result(timeout=10) is False  # its own thread lives on
    assert time.monotonic() - t0 < 5  # it did not wait for itself
    assert wait_until(lambda: pool.threads() == [])
