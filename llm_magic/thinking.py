"""Reasoning kept apart from the answer: which markers a model thinks between, and a splitter
that tells the thinking from the answer in a stream of text pieces as they come.

The markers are found from the chat template and the tokenizer (``find_tags``): ``<think>…</think>``
(Qwen3, DeepSeek R1, GLM, …) and its variants, or gpt-oss's analysis channel, whose final answer
comes after a ``<|start|>assistant<|channel|>final<|message|>`` header that is dropped. An alias
overrides them with ``thinking_tags``. A model thinks at the start of its answer only: once answer
text came, markers are plain text (an answer about HTML may well write ``<think>``).

The splitter looks only at the new piece and the few characters held back that may begin a
marker, never at the whole answer, so a long answer costs the same per token as a short one.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


class Thinking(str):
    """A piece of the model's reasoning in a stream (plain ``str`` pieces are the answer)."""

    __slots__ = ()


@dataclass(frozen=True)
class ThinkingTags:
    """What the model writes around its reasoning, and headers to drop before the final answer."""

    open: str
    close: str
    drop: tuple[str, ...] = ()

    def starts_open(self, prompt_tail: str) -> bool:
        """Does a prompt ending with ``prompt_tail`` leave the model inside its thinking (the
        template wrote the opening marker, e.g. ``<think>\\n`` after ``assistant``)?"""
        return prompt_tail.rfind(self.open) > prompt_tail.rfind(self.close)

    @property
    def tokens(self) -> tuple[str, ...]:
        """The marker strings (their special tokens must be rendered as text to be seen)."""
        return (self.open, self.close, *self.drop)


THINK = ThinkingTags("<think>", "</think>")  # the usual markers (what a server passes through as text)
GPT_OSS = ThinkingTags(
    "<|channel|>analysis<|message|>", "<|end|>", drop=("<|start|>assistant", "<|channel|>final<|message|>")
)
KNOWN_TAGS: tuple[ThinkingTags, ...] = (
    GPT_OSS,
    ThinkingTags("<seed:think>", "</seed:think>"),
    THINK,
    ThinkingTags("[THINK]", "[/THINK]"),
    ThinkingTags("<|START_THINKING|>", "<|END_THINKING|>"),
    ThinkingTags("<|channel>thought", "<channel|>"),
    ThinkingTags("<thinking>", "</thinking>"),
    ThinkingTags("<|inner_prefix|>", "<|inner_suffix|>"),  # Apertus
)
# templates that build their markers from pieces: what identifies them, and the markers they write
BUILT_TAGS = {
    "open_tag('think')": ThinkingTags(  # Kimi K3: <|open|>TAG<|sep|> … <|close|>TAG<|sep|>
        "<|open|>think<|sep|>", "<|close|>think<|sep|>", drop=("<|open|>response<|sep|>",)
    ),
}


def find_tags(template: str | None, is_token: Callable[[str], bool] | None = None) -> ThinkingTags | None:
    """The thinking markers of a model: a known pair its chat template writes, else one its
    tokenizer has as single tokens (None: the model does not think in markers)."""
    if template:
        for tags in KNOWN_TAGS:
            if tags.open in template and tags.close in template:
                return tags
        for hint, tags in BUILT_TAGS.items():
            if hint in template:
                return tags
    if is_token is not None:
        for tags in KNOWN_TAGS[1:]:  # gpt-oss's markers are several tokens
            if is_token(tags.open) and is_token(tags.close):
                return tags
    return None


def tags_from_option(value: object, where: str = "") -> ThinkingTags | None:
    """An alias's ``thinking_tags``: ``[open, close]`` (or ``[open, close, header, …]`` with headers
    to drop before the answer); ``[]`` turns thinking detection off."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}thinking_tags must be a list [open, close] of non-empty strings, got {value!r}")
    if not value:
        return None
    if len(value) < 2:
        raise ConfigError(f"{where}thinking_tags needs an opening and a closing marker, got {value!r}")
    return ThinkingTags(value[0], value[1], tuple(value[2:]))


def _held(text: str, markers: Iterable[str]) -> int:
    """Length of the longest tail of ``text`` that may be the start of one of ``markers``."""
    longest = 0
    for m in markers:
        if m[0] not in text[1 - len(m) :]:  # the usual case: not even the marker's first character
            continue
        for k in range(min(len(m) - 1, len(text)), longest, -1):
            if text.endswith(m[:k]):
                longest = k
                break
    return longest


class ThinkingSplitter:
    """Splits a stream of text pieces into ``Thinking`` pieces and answer pieces.

    ``thinking`` is True while inside the reasoning; ``n_thinking`` counts the tokens of the
    reasoning (markers included) when fed with the engine's token count."""

    def __init__(self, tags: ThinkingTags, thinking: bool = False):
        self.tags = tags
        self.thinking = thinking
        self.answered = False  # answer text came: markers are plain text from now on
        self.n_thinking = 0
        self._pending = ""
        self._strip = True  # drop whitespace at the start of the thinking / of the answer after it
        self._opening = (tags.open, *tags.drop)

    def feed(self, piece: str) -> list[str]:
        """The pieces to emit now (``Thinking`` or ``str``), in order."""
        if self.answered:
            return [piece] if piece else []
        out: list[str] = []
        text = self._pending + piece
        self._pending = ""
        while text:
            if self.thinking:
                cut = text.find(self.tags.close)
                if cut == -1:
                    keep = _held(text, (self.tags.close,))
                    self._emit(out, text[: len(text) - keep], True)
                    self._pending = text[len(text) - keep :]
                    break
                self._emit(out, text[:cut], True)
                self.thinking, self._strip = False, True
                text = text[cut + len(self.tags.close) :]
                continue
            found = [(i, m) for m in self._opening if (i := text.find(m)) != -1]
            if not found:
                keep = _held(text, self._opening)
                self._emit(out, text[: len(text) - keep], False)
                if self._after_answer():  # a marker can no longer begin here: the tail is answer text
                    if keep:
                        out.append(text[len(text) - keep :])
                else:
                    self._pending = text[len(text) - keep :]
                break
            cut, marker = min(found)
            self._emit(out, text[:cut], False)
            if self._after_answer():  # answer text came before the marker: it is plain text
                out.append(text[cut:])
                break
            if marker == self.tags.open:
                self.thinking, self._strip = True, True
            text = text[cut + len(marker) :]
        return out

    def _after_answer(self) -> bool:
        return self.answered

    def _emit(self, out: list[str], text: str, thinking: bool) -> None:
        if self._strip:
            text = text.lstrip()
            if not text:
                return
            self._strip = False
        if not text:
            return
        if thinking:
            out.append(Thinking(text))
        else:
            out.append(text)
            self.answered = True

    def flush(self) -> list[str]:
        """What was held back, when the stream ends."""
        rest, self._pending = self._pending, ""
        out: list[str] = []
        if rest:
            self._emit(out, rest, self.thinking)
        return out

    def wrap(self, pieces: Iterable[str], n_tokens: Callable[[], int]) -> Generator[str, None, None]:
        """Split a stream; ``n_tokens()`` is the engine's count of tokens generated so far."""
        seen = 0
        for piece in pieces:
            if type(piece) is Thinking:  # a server that sends the reasoning apart (reasoning_content)
                n = n_tokens()
                self.n_thinking, seen = self.n_thinking + n - seen, n
                yield piece
                continue
            before = self.thinking
            parts = self.feed(piece)
            n = n_tokens()
            if before or self.thinking or (parts and type(parts[0]) is Thinking):
                self.n_thinking += n - seen
            seen = n
            yield from parts
        yield from self.flush()


def split_stream(
    tags: ThinkingTags | None, opened: bool, chunks: Iterator[str], n_tokens: Callable[[], int]
) -> tuple[Iterator[str], ThinkingSplitter | None]:
    """A request's stream with the thinking split off (as it is, for a model without markers)."""
    if tags is None:
        return chunks, None
    splitter = ThinkingSplitter(tags, opened)
    return splitter.wrap(chunks, n_tokens), splitter


def answer_fields(splitter: ThinkingSplitter | None, pieces: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """The answer's text and its ``Answer`` fields about the thinking."""
    text, thinking = join(pieces)
    if splitter is None:
        return text, {"thinking": thinking} if thinking else {}
    return text, {"thinking": thinking, "thinking_tokens": splitter.n_thinking, "in_thinking": splitter.thinking}


def think_note(model: str, think: bool | None) -> str:
    """The note under an answer whose ``--think``/``--no-think`` the model's template cannot honour."""
    return f"{model} cannot switch its thinking on or off: {'--think' if think else '--no-think'} changed nothing"


def join(pieces: Iterable[str]) -> tuple[str, str]:
    """(answer, thinking) of the pieces a splitter emitted."""
    answer: list[str] = []
    thinking: list[str] = []
    for p in pieces:
        (thinking if type(p) is Thinking else answer).append(p)
    return "".join(answer), "".join(thinking).strip()
