"""llm_magic.interrupts: ``sigint_stops`` — on the main thread the first SIGINT calls
``stop("cancelled")`` and does not raise, the second raises ``KeyboardInterrupt`` (or calls the
previous handler), the previous handler is restored afterwards; off the main thread it is a no-op.
Also end to end: a real SIGINT while a tiny model streams keeps the partial answer."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import llm_magic
from llm_magic.interrupts import sigint_stops


class Recorder:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def stop(self, reason: str = "cancelled") -> None:
        self.reasons.append(reason)


@pytest.fixture
def keep_sigint():
    """Whatever a test installs, pytest's own SIGINT handler comes back."""
    original = signal.getsignal(signal.SIGINT)
    yield original
    signal.signal(signal.SIGINT, original)


def sigint() -> None:
    """A real SIGINT to this process; its Python handler runs on the main thread right after."""
    signal.raise_signal(signal.SIGINT)


def test_the_first_sigint_stops_and_does_not_raise(keep_sigint):
    stream = Recorder()
    with sigint_stops(stream):
        assert signal.getsignal(signal.SIGINT) is not keep_sigint
        sigint()
        assert stream.reasons == ["cancelled"]
    assert signal.getsignal(signal.SIGINT) is keep_sigint


def test_os_kill_works_the_same(keep_sigint):
    stream = Recorder()
    with sigint_stops(stream):
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while not stream.reasons and time.monotonic() < deadline:
            time.sleep(0.001)
        assert stream.reasons == ["cancelled"]


def test_the_second_sigint_raises_keyboard_interrupt(keep_sigint):
    assert keep_sigint is signal.default_int_handler  # pytest runs with Python's default handler
    stream = Recorder()
    with pytest.raises(KeyboardInterrupt), sigint_stops(stream):
        sigint()
        sigint()
    assert stream.reasons == ["cancelled"]  # stop was asked once only
    assert signal.getsignal(signal.SIGINT) is keep_sigint  # restored on the way out of an exception


def test_the_second_sigint_calls_a_previous_python_handler(keep_sigint):
    calls: list[int] = []

    def previous(signum, frame):
        calls.append(signum)

    signal.signal(signal.SIGINT, previous)
    stream = Recorder()
    with sigint_stops(stream):
        sigint()
        assert calls == [] and stream.reasons == ["cancelled"]
        sigint()
        sigint()
        assert calls == [signal.SIGINT, signal.SIGINT]
    assert stream.reasons == ["cancelled"]
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_previous_ignore_is_restored_and_the_second_sigint_still_raises(keep_sigint):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stream = Recorder()
    with pytest.raises(KeyboardInterrupt), sigint_stops(stream):
        sigint()
        sigint()
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    sigint()  # ignored again: nothing happens


def test_each_use_counts_its_own_presses(keep_sigint):
    first, second = Recorder(), Recorder()
    with sigint_stops(first):
        sigint()
    with sigint_stops(second):
        sigint()  # a new context: this is its first press
    assert first.reasons == second.reasons == ["cancelled"]


def test_off_the_main_thread_it_is_a_no_op(keep_sigint):
    stream = Recorder()
    seen: list[object] = []
    errors: list[BaseException] = []

    def work():
        try:
            with sigint_stops(stream):
                seen.append(signal.getsignal(signal.SIGINT))
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert errors == [] and seen == [keep_sigint] and stream.reasons == []
    assert signal.getsignal(signal.SIGINT) is keep_sigint


def test_a_real_sigint_while_streaming_keeps_the_partial_answer(tiny_model, keep_sigint):
    """Ctrl-C while ``consume`` runs on the main thread: the answer is cancelled, not lost."""
    llm_magic.ask("warm up", model=tiny_model, max_tokens=1)
    request = llm_magic.stream("Talk", model=tiny_model, max_tokens=100_000, timeout=120)
    chunks: list[str] = []
    started = threading.Event()

    def on_chunk(chunk: str) -> None:
        chunks.append(chunk)
        if len(chunks) == 5:
            started.set()

    def press() -> None:
        if started.wait(60):
            os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press, daemon=True)
    presser.start()
    t0 = time.monotonic()
    answer = request.consume(on_chunk)
    presser.join(10)
    assert time.monotonic() - t0 < 60  # the interrupt ended it, not the deadline nor max_tokens
    assert answer.finish_reason == "cancelled" and answer.n_tokens >= 5
    assert "".join(chunks) == answer and len(chunks) == answer.n_tokens
    assert signal.getsignal(signal.SIGINT) is keep_sigint
    assert llm_magic.ask("again", model=tiny_model, max_tokens=3).n_tokens == 3  # the model stays usable
