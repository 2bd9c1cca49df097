"""The cache's eviction policy, as pure functions of the entries: which idle models to unload so
that a new one fits ``max_loaded_models`` and ``memory_budget`` (least recently used first), which
have been idle past ``keep_alive``, and which a new spec of the same model replaces (one instance
per model). The cache claims and closes what these pick."""

from __future__ import annotations

from collections.abc import Iterable

from .cache_entry import READY, Entry, model_identity
from .specs import ModelSpec


def lru_victims(
    resident: list[Entry], incoming: Entry, max_models: int, budget: int, free: int | None = None
) -> tuple[list[tuple[Entry, str]], str | None]:
    """Least recently used idle models to evict so that ``incoming`` fits the limits, each with the
    limit it was evicted for; and the limit still exceeded after them (None: ``incoming`` fits).
    Sizes are ``Entry.memory`` (the memory estimate). ``free``: the RAM available now (None: not
    checked); idle models are also evicted until ``incoming`` fits in it.

    A model that is generating or has a request queued (``active``) is never picked; if only such
    models remain, the load goes ahead over the limit rather than fail."""
    resident = [e for e in resident if e is not incoming]
    idle = sorted((e for e in resident if e.state == READY and e.active == 0), key=lambda e: e.idle_since)
    victims: list[tuple[Entry, str]] = []

    def over() -> str | None:
        kept = [e for e in resident if all(e is not v for v, _ in victims)]
        if max_models and len(kept) + 1 > max_models:
            return f"max_loaded_models={max_models}"
        if budget and sum(e.memory for e in kept) + incoming.memory > budget:
            return f"memory_budget={budget} bytes"
        if free is not None and incoming.memory > free + sum(v.memory for v, _ in victims):
            return "the memory available"
        return None

    while (reason := over()) is not None and idle:
        victims.append((idle.pop(0), reason))
    return victims, reason


def expired(entries: Iterable[Entry], keep_alive: float, now: float) -> list[Entry]:
    """Ready models idle for at least ``keep_alive`` seconds (``now``: time.monotonic())."""
    return [e for e in entries if e.state == READY and e.active == 0 and now - e.idle_since >= keep_alive]


def same_model(entries: Iterable[Entry], spec: ModelSpec) -> list[Entry]:
    """The entries that ``spec`` replaces: the same model (file and projector, or server and model
    name) loaded with other options. Two aliases of one file with different options, used in turn,
    therefore reload in turn."""
    identity = model_identity(spec)
    return [e for e in entries if e.spec.key != spec.key and model_identity(e.spec) == identity]
