"""Conversations' KV state kept in host memory while another conversation uses the model.

A model has one llama.cpp context. When conversation B's turn comes while the context holds A's
history, A's sequence state (``llama_state_seq_get_data``) is saved here, and restored when A's
next turn comes — so alternating conversations each evaluate only their new tokens. The states
are bounded by ``AskMagics.kv_cache_budget`` bytes per model; the least recently used go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass
class SavedState:
    tokens: list[int]  # what the sequence held
    data: Any  # the ctypes byte buffer llama.cpp wrote
    nbytes: int


class SavedStates:
    """Saved sequence states by conversation name, least recently used first."""

    def __init__(self) -> None:
        self._states: OrderedDict[str, SavedState] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, state: SavedState, budget: int) -> None:
        """Keep ``state`` for ``key`` (replacing an older one), then drop the least recently used
        states until all fit in ``budget`` bytes. A state larger than the budget is not kept."""
        with self._lock:
            self._states.pop(key, None)
            if state.nbytes > budget:
                return
            self._states[key] = state
            total = sum(s.nbytes for s in self._states.values())
            while total > budget:
                _, dropped = self._states.popitem(last=False)
                total -= dropped.nbytes

    def take(self, key: str) -> SavedState | None:
        """Remove and return ``key``'s state (it goes back into the context)."""
        with self._lock:
            return self._states.pop(key, None)

    def drop(self, key: str | None = None) -> None:
        """Forget ``key``'s state, or every state."""
        with self._lock:
            if key is None:
                self._states.clear()
            else:
                self._states.pop(key, None)

    def summary(self) -> tuple[int, int]:
        """(number of states, their bytes)."""
        with self._lock:
            return len(self._states), sum(s.nbytes for s in self._states.values())

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._states)
