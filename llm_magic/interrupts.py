"""Ctrl-C and the kernel's stop button while an answer streams on the main thread: the first
SIGINT asks the request to stop at the next token (llama.cpp is never interrupted half-way, the
model stays usable); a second one raises as usual."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol


class Stoppable(Protocol):
    def stop(self, reason: str = "cancelled") -> None: ...


@contextlib.contextmanager
def sigint_stops(stream: Stoppable) -> Iterator[None]:
    """While consuming on the main thread, turn the first SIGINT into ``stream.stop()``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except (ValueError, OSError):  # not the main interpreter
        yield
        return
    pressed = []

    def handler(signum: int, frame: Any) -> None:
        pressed.append(time.monotonic())
        if len(pressed) == 1:
            stream.stop("cancelled")
        elif callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, handler)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
