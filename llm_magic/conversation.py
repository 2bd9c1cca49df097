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

DEFAULT = "default"

# Completion prompt for models without a chat template (e.g. base Gemma 3 270M).
QA_TEMPLATE = "Q: {prompt}\nA:"
QA_STOP = ["\nQ:"]


def raw_text(turns: list, prompt: str) -> str:
    """``--raw``: earlier turns and the prompt, concatenated as they are."""
    return "".join(t.user + t.answer for t in turns) + prompt


def qa_text(turns: list, prompt: str, system: str | None) -> str:
    """The Q/A completion prompt: an optional system line, earlier turns, then the question."""
    head = f"{system.strip()}\n\n" if system else ""
    history = "".join(f"{QA_TEMPLATE.format(prompt=t.user.strip())}{t.answer}\n" for t in turns)
    return head + history + QA_TEMPLATE.format(prompt=prompt.strip())


def chat_messages(turns: list, prompt: str, system: str | None, content: object = None) -> list[dict]:
    """OpenAI-style messages: system, earlier turns, then the prompt (``content`` overrides its
    content, e.g. a list of text and image parts)."""
    messages = [{"role": "system", "content": system}] if system else []
    for t in turns:
        messages += [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.answer}]
    messages.append({"role": "user", "content": prompt if content is None else content})
    return messages


@dataclass
class Turn:
    user: str
    answer: str
    finish_reason: str


@dataclass
class Conversation:
    name: str
    model_key: tuple
    model_name: str
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)
    ctx_tokens: list[int] = field(default_factory=list)  # what the model's KV cache holds after the last turn
    ctx_text: str = ""  # the text those tokens stand for
    trimmed: int = 0  # turns dropped (oldest first) to fit the context

    def record(self, user: str, answer: str, finish_reason: str, turns_used: int,
               ctx_tokens: list[int] | None, ctx_text: str | None, system: str | None) -> None:
        """Add a finished (or partial) turn. ``turns_used``: how many earlier turns the prompt kept."""
        dropped = len(self.turns) - turns_used
        if dropped > 0:
            del self.turns[:dropped]
            self.trimmed += dropped
        self.turns.append(Turn(user, answer, finish_reason))
        self.system = system
        if ctx_tokens is not None and ctx_text is not None:
            self.ctx_tokens, self.ctx_text = ctx_tokens, ctx_text
        else:  # the prompt never finished: the next turn re-tokenizes everything
            self.ctx_tokens, self.ctx_text = [], ""


_conversations: dict[tuple[tuple, str], Conversation] = {}
_lock = threading.Lock()


def get(name: str, model_key: tuple, model_name: str) -> Conversation:
    with _lock:
        key = (model_key, name)
        if key not in _conversations:
            _conversations[key] = Conversation(name=name, model_key=model_key, model_name=model_name)
        return _conversations[key]


def find(name: str | None = None) -> list[Conversation]:
    with _lock:
        return [c for (_, n), c in _conversations.items() if name is None or n == name]


def reset(name: str | None = None) -> int:
    """Forget conversation ``name`` on every model (all conversations if ``None``). Returns how many."""
    with _lock:
        keys = [k for k in _conversations if name is None or k[1] == name]
        for k in keys:
            del _conversations[k]
        return len(keys)
