"""One model in the cache: its state (loading/ready/failed/unloaded), its engine and queue once
ready, and the bookkeeping shown in ``%llm status`` and used for eviction."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .engines.base import Engine
from .model_queue import ModelQueue
from .specs import ModelSpec

LOADING, READY, FAILED, UNLOADED = "loading", "ready", "failed", "unloaded"


def file_id(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass
class Entry:
    spec: ModelSpec
    state: str = LOADING
    size_bytes: int = 0
    load_s: float | None = None
    uses: int = 0
    last_used: float | None = None  # time.time()
    error: str | None = None
    model: Engine | None = None
    queue: ModelQueue | None = None  # who holds the model and who waits (set when it is ready)
    future: Future[Engine] | None = None
    load_started: float = 0.0  # time.monotonic()
    error_reported: bool = True
    active: int = 0  # generations running or queued on this model
    abort: threading.Event = field(default_factory=threading.Event)  # set: a running load gives up
    file_id: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) of the file when it was loaded
    idle_since: float = 0.0  # time.monotonic() when it last became idle (for keep_alive and LRU)
    note: str | None = None  # e.g. "evicted (LRU) at 12:01:02" or "reloaded: the file changed"

    @property
    def name(self) -> str:
        return self.spec.display_name

    def loading_for(self) -> float:
        return time.monotonic() - self.load_started if self.state == LOADING else 0.0

    def info(self) -> dict[str, Any]:
        """One row of ``llm_magic.models()``: the cache's bookkeeping plus the engine's own fields."""
        remote = self.spec.remote
        row: dict[str, Any] = {
            "name": self.name,
            "path": self.spec.base_url if remote else self.spec.path,
            "state": "remote" if remote and self.state == READY else self.state,
            "kind": "remote" if remote else ("vision" if self.spec.mmproj else "local"),
            "mmproj": self.spec.mmproj or None,
            "size_bytes": self.size_bytes,
            "load_s": self.load_s,
            "uses": self.uses,
            "last_used": self.last_used,
            "error": self.error,
            "note": self.note,
            "n_threads": None if remote else self.spec.n_threads,
            "loading_s": self.loading_for() if self.state == LOADING else None,
        }
        model = self.model
        if model is not None:
            row["kind"] = model.kind
            row.update(model.info())
        return row
