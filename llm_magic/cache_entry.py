"""One model in the cache: its state (loading/ready/failed/unloaded, or closing once replaced), its
engine and queue once ready, and the bookkeeping shown in ``%llm status`` and used for eviction."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from . import model_options
from .engines.base import Engine
from .model_queue import ModelQueue
from .specs import ModelSpec, physical_cores

LOADING, READY, FAILED, UNLOADED = "loading", "ready", "failed", "unloaded"
CLOSING = "closing"  # replaced by another spec of the same model: closes when its last request ends

LOCAL_OPTIONS = (
    "n_ctx",
    "n_batch",
    "n_threads",
    "n_threads_batch",
    "use_mlock",
    "use_mmap",
    "chat",
    "chat_handler",
    *model_options.DEFAULTS,  # flash attention, KV cache types, GPU offload
)
REMOTE_OPTIONS = ("endpoint",)
_STOCK = ModelSpec(path="")  # the stock load options (the settings' own defaults)


def model_identity(spec: ModelSpec) -> tuple[str, ...]:
    """What makes two specs the same model, whatever their load options: the file (and the
    projector of a vision pair), or the server and its model name."""
    if spec.remote:
        return ("remote", spec.base_url, spec.remote_model)
    return ("local", spec.path, spec.mmproj)


def load_options(spec: ModelSpec, siblings: Sequence[ModelSpec] = ()) -> str:
    """``key=value`` for the load options of ``spec`` that are not the stock defaults, or that
    differ from a ``sibling`` (another spec of the same model), e.g. ``"n_ctx=8192 n_batch=64"``."""
    names = REMOTE_OPTIONS if spec.remote else LOCAL_OPTIONS
    cores = physical_cores()
    stock = {n: getattr(_STOCK, n) for n in names}
    if not spec.remote:
        stock["n_threads"] = cores  # 0 (the default) means one thread per physical core
        stock["n_threads_batch"] = spec.n_threads  # by default the same as n_threads
    shown = [
        n
        for n in names
        if getattr(spec, n) != stock[n] or any(getattr(spec, n) != getattr(other, n) for other in siblings)
    ]
    return " ".join(f"{n}={_shown(getattr(spec, n))}" for n in shown)


def _shown(value: Any) -> str:
    """An option's value as ``%llm alias`` takes it (tensor_split: ``3,1``)."""
    return ",".join(f"{x:g}" for x in value) if isinstance(value, tuple) else str(value)


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
    memory_bytes: int = 0  # the memory estimate of a local model (memory_estimate), once known
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
    replaced_by: str | None = None  # the load options of the spec that replaced it, e.g. "n_ctx=8192"

    @property
    def name(self) -> str:
        return self.spec.display_name

    @property
    def memory(self) -> int:
        """Bytes it takes loaded, for the memory budget: the estimate, else the file's size."""
        return self.memory_bytes or self.size_bytes

    def loading_for(self) -> float:
        return time.monotonic() - self.load_started if self.state == LOADING else 0.0

    def info(self, siblings: Sequence[ModelSpec] = ()) -> dict[str, Any]:
        """One row of ``llm_magic.models()``: the cache's bookkeeping plus the engine's own fields.
        ``siblings``: the specs of other entries of the same model (their differing options are shown)."""
        remote = self.spec.remote
        row: dict[str, Any] = {
            "name": self.name,
            "options": load_options(self.spec, siblings),
            "path": self.spec.base_url if remote else self.spec.path,
            "state": "remote" if remote and self.state == READY else self.state,
            "kind": "remote" if remote else ("vision" if self.spec.mmproj else "local"),
            "mmproj": self.spec.mmproj or None,
            "size_bytes": self.size_bytes,
            "memory_bytes": self.memory_bytes or None,
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


Victim = tuple[Entry, Engine | None, ModelQueue | None, str]  # an entry, what it held, and why


def claim(entry: Entry, reason: str) -> Victim:
    """Take an entry's model and queue for closing (caller holds the cache lock): from now on no
    request starts on it, and a reload of the entry builds a new model beside, never into, these."""
    victim = (entry, entry.model, entry.queue, reason)
    entry.state, entry.model, entry.queue = UNLOADED, None, None
    return victim
