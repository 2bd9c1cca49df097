"""Where a request stands (``Stream.progress()``): its phases and the snapshot a status line shows."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PHASES", "Progress"]

PHASES = ("start", "load", "queue", "prompt", "generate", "done")


@dataclass(frozen=True)
class Progress:
    """Where a request stands: what a status line shows."""

    model: str
    phase: str  # one of PHASES
    elapsed_s: float
    n_tokens: int  # chunks streamed so far (one per token for local models)
    tokens_per_s: float | None
    ttft_s: float | None
    loading_s: float | None  # how long the model has been loading, in the "load" phase
    stopping: bool
    prompt_tokens: int = 0  # prompt tokens to evaluate (not reused from the KV cache), once known
    prompt_done: int = 0  # of those, evaluated so far: "reading the prompt 1,024 / 4,461 tokens"
