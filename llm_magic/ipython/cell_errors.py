"""Errors of executed cells, collected from IPython's ``post_run_cell`` event.

We only listen: IPython's own exception handling is never replaced (no ``set_custom_exc``).
``{Err[n]}`` in a prompt and ``%llm explain`` read from here.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from typing import Any


@dataclass
class CellError:
    execution_count: int
    source: str
    traceback: str  # "Traceback (most recent call last): ... ValueError: ..."


def _ipython_dir() -> str:
    import IPython  # loaded: this runs inside IPython

    return os.path.dirname(IPython.__file__)


def format_exception(exc: BaseException) -> str:
    """The traceback as the user would read it: IPython's own frames left out."""
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    skip = _ipython_dir()
    if skip:
        te.stack = traceback.StackSummary.from_list([f for f in te.stack if not f.filename.startswith(skip)])
    return "".join(te.format()).rstrip()


class CellErrors:
    """Keeps the error of each failed cell by its execution count (the last ``limit`` of them)."""

    def __init__(self, limit: int = 200):
        self.limit = limit
        self.by_count: dict[int, CellError] = {}

    def post_run_cell(self, result: Any) -> None:
        exc = result.error_in_exec or result.error_before_exec
        if exc is None:
            return
        count = result.execution_count
        if count is None:
            count = max(self.by_count, default=0) + 1
        info = getattr(result, "info", None)
        source = getattr(info, "raw_cell", "") or ""
        if source.lstrip().startswith("%llm "):  # a mistyped %llm command: not the error to explain
            return
        self.by_count[count] = CellError(count, source, format_exception(exc))
        while len(self.by_count) > self.limit:
            self.by_count.pop(min(self.by_count))

    def tracebacks(self) -> dict[int, str]:
        return {n: e.traceback for n, e in self.by_count.items()}

    def last(self) -> CellError | None:
        return self.by_count[max(self.by_count)] if self.by_count else None
