"""Conversations: ``%%ask -c NAME`` / ``--chat`` continue one, kept per model.

Besides the turns (for the prompt and ``%llm history``), a conversation keeps the exact tokens
llama.cpp holds in its KV cache after the last turn (prompt + generated tokens) and their text.
The next prompt is built as *those tokens* + the tokens of the new text, so llama.cpp reuses the
whole shared prefix and evaluates only the new turn — re-tokenizing the generated text would
not always give the same tokens back, and the reuse would stop there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

DEFAULT = "default"


@dataclass
class Turn:
    user: str
    answer: str
    finish_reason: str
    thinking: str = ""  # the reasoning before the answer (the chat template decides whether it stays)


@dataclass
class Conversation:
    name: str
    model_key: tuple[Any, ...]
    model_name: str
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)
    ctx_tokens: list[int] = field(default_factory=list)  # what the model's KV cache holds after the last turn
    ctx_text: str = ""  # the text those tokens stand for
    trimmed: int = 0  # turns dropped (oldest first) to fit the context

    def record(
        self,
        user: str,
        answer: str,
        finish_reason: str,
        turns_used: int,
        ctx_tokens: list[int] | None,
        ctx_text: str | None,
        system: str | None,
        thinking: str = "",
    ) -> None:
        """Add a finished (or partial) turn. ``turns_used``: how many earlier turns the prompt kept."""
        dropped = len(self.turns) - turns_used
        if dropped > 0:
            del self.turns[:dropped]
            self.trimmed += dropped
        self.turns.append(Turn(user, answer, finish_reason, thinking))
        self.system = system
        if ctx_tokens is not None and ctx_text is not None:
            self.ctx_tokens, self.ctx_text = ctx_tokens, ctx_text
        else:  # the prompt never finished: the next turn re-tokenizes everything
            self.ctx_tokens, self.ctx_text = [], ""


class Conversations:
    """Every conversation of the process, by (model key, name); owned by the runtime."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[tuple[Any, ...], str], Conversation] = {}
        self._lock = threading.Lock()

    def get(self, name: str, model_key: tuple[Any, ...], model_name: str) -> Conversation:
        with self._lock:
            key = (model_key, name)
            if key not in self._by_key:
                self._by_key[key] = Conversation(name=name, model_key=model_key, model_name=model_name)
            return self._by_key[key]

    def find(self, name: str | None = None) -> list[Conversation]:
        with self._lock:
            return [c for (_, n), c in self._by_key.items() if name is None or n == name]

    def reset(self, name: str | None = None) -> int:
        """Forget conversation ``name`` on every model (all conversations if ``None``). Returns how many."""
        with self._lock:
            keys = [k for k in self._by_key if name is None or k[1] == name]
            for k in keys:
                del self._by_key[k]
            return len(keys)
