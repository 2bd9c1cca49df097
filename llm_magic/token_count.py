"""Counting prompt tokens for a summary's budget with the model's own tokenizer (tokenizing needs
only the vocabulary, which llama.cpp never changes, so it is safe while another request generates);
with ``summaries.estimate_tokens`` for remote models, or when the model cannot be loaded.

The same request must always give the same summary (``%%ask --cache`` replays by the final prompt),
so a local model's count never falls back to the estimate just because the model is still loading:
``TokenCounter.resolve()`` waits for the load (the ask needs the model anyway). Call it on the
cell's thread before summarising; it is only needed when something is large enough to count.
"""

from __future__ import annotations

import time
from typing import Any

from . import runtime
from . import settings as settings_mod
from .errors import LLMMagicError
from .specs import resolve
from .summaries import Counter, estimate_tokens


class TokenCounter:
    """``count(text)`` for ``model`` (an alias, a path or None for the default)."""

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.exact = False
        self._count: Counter | None = None

    def resolve(self) -> Counter:
        if self._count is None:
            self._count = self._tokenizer() or estimate_tokens
        return self._count

    def __call__(self, text: str) -> int:
        return self.resolve()(text)

    def _tokenizer(self) -> Counter | None:
        try:
            spec = resolve(self.model)
            if spec.remote:
                return None
            deadline = time.monotonic() + settings_mod.current().timeout
            entry = runtime.get().cache.get(spec, deadline)
        except (LLMMagicError, OSError):  # the ask itself reports why the model is not there
            return None
        llm: Any = getattr(entry.model, "llm", None)
        tokenize = getattr(llm, "tokenize", None)
        if tokenize is None:
            return None
        self.exact = True

        def count(text: str) -> int:
            try:
                return len(tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False))
            except Exception:  # noqa: BLE001 - the model closed under us: estimate instead
                return estimate_tokens(text)

        return count
