"""What the cache and a request may call on a loaded model: the ``Engine`` protocol, and the two
records that travel between a request and an engine (``Prepared``, ``StreamStats``).

The local engine (``engines.llama``) and the remote one (``engines.openai``) implement it; neither
imports the other. Who holds a model and who waits is not an engine's business: that is
``model_queue.ModelQueue``, sized by ``Engine.concurrency``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..conversation import Conversation
    from ..images import Image
    from ..specs import ModelSpec
    from ..thinking import ThinkingTags


@dataclass
class Prepared:
    """A request turned into what the engine sends: tokens (local), messages (chat, remote, vision)
    or prompt text (remote completions)."""

    mode: str  # "chat", "completion", "raw" or "vision"
    text: str = ""  # the prompt text, after the chat template where one was applied here
    tokens: list[int] = field(default_factory=list)  # local text models only
    messages: list[dict[str, Any]] | None = None  # chat messages (remote chat, vision)
    stop: list[str] = field(default_factory=list)  # stop strings the prompt shape needs
    turns_used: int = 0  # earlier conversation turns kept in the prompt
    system: str | None = None
    session: str | None = None  # the conversation it continues (an engine may keep its KV state)
    thinking: ThinkingTags | None = None  # the model's thinking markers: the request splits them off
    thinking_open: bool = False  # the prompt ends inside the thinking (the template opened it)
    think_switch: bool = False  # the chat template can switch thinking on or off (--think / --no-think)


@dataclass
class StreamStats:
    """Filled in by ``Engine.stream`` as it goes; read by the request when it ends."""

    n_prompt_tokens: int = 0
    n_prompt_evaluated: int = 0  # prompt tokens not reused from the KV cache
    n_prompt_done: int = 0  # of those, evaluated so far (live, per batch: "reading the prompt")
    n_tokens: int = 0
    finish_reason: str | None = None  # "stop" or "length" from the engine; None when stopped by us
    first_sample_at: float | None = None  # monotonic time the first token was sampled
    n_drafted: int = 0  # --draft lookup: tokens guessed, and how many of them the model kept
    n_accepted: int = 0
    context_tokens: list[int] | None = None  # prompt + generated tokens in the KV cache afterwards
    context_text: str | None = None
    cancel: Callable[[], None] | None = None  # set by an engine that can abort at once from another thread
    on_prompt: Callable[[int, int], None] | None = None  # set by the request: (done, total) per prompt batch

    def prompt_progress(self, done: int) -> None:
        """An engine evaluating a long prompt reports each batch (not called for short prompts)."""
        self.n_prompt_done = done
        if self.on_prompt is not None:
            self.on_prompt(done, self.n_prompt_evaluated)


@runtime_checkable
class Engine(Protocol):
    """One loaded model. ``stream`` is called by one request at a time per slot (``concurrency``)."""

    spec: ModelSpec
    kind: str  # "local", "vision" or "remote"
    concurrency: int  # requests it serves at once: 1 for an in-process model

    @property
    def closed(self) -> bool: ...

    def prepare(
        self,
        prompt: str,
        *,
        raw: bool = False,
        system: str | None = None,
        conversation: Conversation | None = None,
        max_tokens: int = 0,
        images: Sequence[Image] | None = None,
        think: bool | None = None,
    ) -> Prepared:
        """Build the prompt the way this model expects it (chat template, Q/A prompt, raw);
        ``think`` switches a reasoning model's thinking on or off where its template can."""
        ...

    def stream(
        self,
        prepared: Prepared,
        *,
        max_tokens: int,
        should_stop: Callable[[], bool],
        stats: StreamStats,
        deadline: float | None = None,
        **sampling: Any,
    ) -> Generator[str, None, None]:
        """Yield text pieces; poll ``should_stop`` at least once per token (and per prompt batch)."""
        ...

    def info(self) -> dict[str, Any]:
        """Status fields for ``llm_magic.models()`` (e.g. ``n_ctx``, ``mlock``, ``latency_s``)."""
        ...

    def close(self) -> None:
        """Free the model (idempotent). The caller makes sure no request is streaming."""
        ...


Loader = Callable[["ModelSpec", "threading.Event | None"], Engine]
