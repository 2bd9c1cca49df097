"""The prompt shapes shared by every engine: raw text, the Q/A completion prompt for models
without a chat template, and OpenAI-style chat messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class ImageLike(Protocol):
    def data_uri(self) -> str: ...


class TurnLike(Protocol):
    user: str
    answer: str


# Completion prompt for models without a chat template (e.g. base Gemma 3 270M).
QA_TEMPLATE = "Q: {prompt}\nA:"
QA_STOP = ["\nQ:"]


def raw_text(turns: Sequence[TurnLike], prompt: str) -> str:
    """``--raw``: earlier turns and the prompt, concatenated as they are."""
    return "".join(t.user + t.answer for t in turns) + prompt


def qa_text(turns: Sequence[TurnLike], prompt: str, system: str | None) -> str:
    """The Q/A completion prompt: an optional system line, earlier turns, then the question."""
    head = f"{system.strip()}\n\n" if system else ""
    history = "".join(f"{QA_TEMPLATE.format(prompt=t.user.strip())}{t.answer}\n" for t in turns)
    return head + history + QA_TEMPLATE.format(prompt=prompt.strip())


def chat_messages(
    turns: Sequence[TurnLike], prompt: str, system: str | None, content: Any = None
) -> list[dict[str, Any]]:
    """OpenAI-style messages: system, earlier turns, then the prompt (``content`` overrides its
    content, e.g. a list of text and image parts)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for t in turns:
        reply: dict[str, Any] = {"role": "assistant", "content": t.answer}
        thinking = getattr(t, "thinking", "")
        if thinking:  # the chat template decides whether earlier reasoning stays (Qwen3's drops it)
            reply["reasoning_content"] = thinking
        messages += [{"role": "user", "content": t.user}, reply]
    messages.append({"role": "user", "content": prompt if content is None else content})
    return messages


def image_messages(
    turns: Sequence[TurnLike], prompt: str, system: str | None, images: Sequence[ImageLike]
) -> list[dict[str, Any]]:
    """Chat messages whose last one holds the prompt and the images (OpenAI vision format)."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    parts += [{"type": "image_url", "image_url": {"url": image.data_uri()}} for image in images]
    return chat_messages(turns, prompt, system, content=parts)
