"""``Answer``: the model's text with what happened attached (finish reason, counts, timings),
and the words for a partial answer's marker and for where the time of a timed-out one went."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engines.base import StreamStats

FINISH_REASONS = ("stop", "length", "timeout", "cancelled", "error")


class Answer(str):
    """The model's text, with what happened attached.

    ``finish_reason``: ``stop`` (the model ended), ``length`` (max_tokens), ``timeout``,
    ``cancelled`` (Stop, interrupt or cleanup) or ``error`` (``error`` holds the message).
    Times are seconds from the start of the request.

    A reasoning model's thinking is not part of the text: ``thinking`` holds it,
    ``thinking_tokens`` counts its tokens (``n_tokens`` counts thinking and answer), and
    ``in_thinking`` says the answer ended before the thinking did (a timeout, Stop, max_tokens).
    """

    finish_reason: str
    n_tokens: int
    n_prompt_tokens: int
    n_prompt_evaluated: int
    load_wait_s: float
    prompt_s: float | None
    ttft_s: float | None
    total_s: float
    tokens_per_s: float | None
    model: str
    error: str | None
    timeout: float | None
    value: Any = None  # -f json: the parsed object; -f code: the code put into the next cell (or None)
    queue_s: float | None = None  # waiting for the model while another request used it
    time_report: str | None = None  # timeout: where the time went (load wait, queue, prompt, generation)
    prompt: str = ""  # the exact text the model received (after the chat template or Q/A prompt)
    provenance: dict[str, Any] | None = None  # how it was made: metadata["llm_magic"] of the cell output
    replayed: bool = False  # %%ask --cache: answered from the ask log, not by the model
    log_id: int | None = None  # its row in the ask log
    thinking: str = ""  # a reasoning model's thinking (not part of the text)
    thinking_tokens: int = 0
    in_thinking: bool = False  # ended while still thinking
    notes: tuple[str, ...] = ()  # short notes about the request (e.g. --no-think on a model without the switch)

    def __new__(cls, text: str = "", **meta: Any) -> Answer:
        self = super().__new__(cls, text)
        defaults: dict[str, Any] = {
            "finish_reason": "stop",
            "n_tokens": 0,
            "n_prompt_tokens": 0,
            "n_prompt_evaluated": 0,
            "load_wait_s": 0.0,
            "prompt_s": None,
            "ttft_s": None,
            "total_s": 0.0,
            "tokens_per_s": None,
            "n_drafted": 0,  # --draft lookup: tokens guessed, and how many the model kept
            "n_accepted": 0,
            "model": "",
            "error": None,
            "timeout": None,
        }
        defaults.update(meta)
        for key, value in defaults.items():
            setattr(self, key, value)
        return self

    @property
    def text(self) -> str:
        return str.__str__(self)

    @property
    def partial(self) -> bool:
        return self.finish_reason in ("timeout", "cancelled", "error")

    def timings(self) -> dict[str, Any]:
        keys = (
            "finish_reason",
            "n_tokens",
            "n_prompt_tokens",
            "n_prompt_evaluated",
            "load_wait_s",
            "prompt_s",
            "ttft_s",
            "total_s",
            "tokens_per_s",
            "model",
        )
        return {k: getattr(self, k) for k in keys}

    def marker(self) -> str | None:
        """The line shown under a partial answer, or None for a complete one: plain words (no
        emoji, which render as empty boxes without an emoji font), the same in every front end."""
        n = self.n_tokens
        tokens = f"{n} token{'s' if n != 1 else ''}"
        if self.in_thinking and self.finish_reason != "stop":
            return self._thinking_marker(tokens)
        if self.finish_reason == "timeout":
            limit = f"{self.timeout:g} s" if self.timeout is not None else "the time limit"
            if n == 0 and not self.text:
                why = {
                    "load": f"the model was still loading after {self.load_wait_s:.1f} s",
                    "queue": "the model was busy with another request the whole time",
                    "prompt": f"the prompt ({self.n_prompt_evaluated} tokens) was still being evaluated",
                }.get(getattr(self, "phase", ""), "nothing was generated")
                return f"timed out after {limit} — no token came: {why}"
            return f"timed out after {limit} — partial answer, {tokens}"
        if self.finish_reason == "cancelled":
            return f"cancelled — partial answer, {tokens}"
        if self.finish_reason == "error":
            return f"error — partial answer, {tokens}: {self.error}"
        if self.finish_reason == "length":
            return f"stopped at max_tokens ({tokens})"
        return None

    def _thinking_marker(self, tokens: str) -> str:
        """The marker of an answer cut short while the model was still thinking."""
        if self.finish_reason == "timeout":
            limit = f"{self.timeout:g} s" if self.timeout is not None else "the time limit"
            return f"timed out after {limit} while thinking — partial reasoning, {tokens}"
        if self.finish_reason == "cancelled":
            return f"cancelled while thinking — partial reasoning, {tokens}"
        if self.finish_reason == "length":
            return f"stopped at max_tokens ({tokens}) while thinking"
        return f"error while thinking — partial reasoning, {tokens}: {self.error}"

    def __repr__(self) -> str:
        return f"Answer({str.__repr__(self)}, finish_reason={self.finish_reason!r}, n_tokens={self.n_tokens})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Answer, (self.text,), self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def time_report(answer: Answer, started: float, times: dict[str, float]) -> str:
    """Where the time of a timed-out request went: load wait, queue, prompt, generation."""
    end = times.get("end", started + answer.total_s)
    locked = times.get("locked")
    load = answer.load_wait_s
    lock = (times.get("locked", end) - started - load) if "end" in times else 0.0
    parts = [f"waiting for the model load {load:.2f} s"]
    if lock > 0.005:
        parts.append(f"waiting for the model to be free {lock:.2f} s")
    if locked is not None:
        first_sample = answer.prompt_s
        if first_sample is None:
            parts.append(f"prompt evaluation {end - locked:.2f} s, unfinished ({answer.n_prompt_evaluated} tokens)")
        else:
            parts.append(f"prompt evaluation {first_sample:.2f} s ({answer.n_prompt_evaluated} tokens)")
            n = answer.n_tokens
            parts.append(f"generation {max(end - locked - first_sample, 0):.2f} s ({n} token{'s' if n != 1 else ''})")
    return "; ".join(parts)


def build_answer(
    text: str,
    stats: StreamStats | None,
    times: dict[str, float],
    stop_reason: str | None,
    started: float,
    meta: dict[str, Any],
) -> Answer:
    """The ``Answer`` of a finished request from what the engine counted (``stats``), the request's
    clock (``times``: locked, first, last, end) and why it stopped."""
    end = times.get("end", time.monotonic())
    if meta.get("error"):
        finish = "error"
    elif stop_reason is not None:
        finish = stop_reason
    else:
        finish = stats.finish_reason if stats and stats.finish_reason else "stop"
        if finish not in FINISH_REASONS:
            finish = "stop"
    n_tokens = stats.n_tokens if stats else 0
    if finish in ("timeout", "cancelled") and stats is not None and stats.finish_reason is None:
        n_tokens = max(n_tokens, meta.pop("n_chunks", 0))  # stopped by us: what was generated so far
    meta.pop("n_chunks", None)
    first = times.get("first")
    tps = None
    if first is not None and n_tokens >= 2 and times.get("last", first) > first:
        tps = (n_tokens - 1) / (times["last"] - first)
    locked = times.get("locked")  # prompt time counts from getting the model: tokenizing + evaluation
    prompt_s = (stats.first_sample_at - locked) if stats and stats.first_sample_at and locked else None
    if locked is not None and "queue_s" not in meta:  # from the end of the load wait to getting the model
        meta["queue_s"] = max(0.0, locked - started - float(meta.get("load_wait_s") or 0.0))
    return Answer(
        text,
        finish_reason=finish,
        n_tokens=n_tokens,
        n_prompt_tokens=stats.n_prompt_tokens if stats else 0,
        n_prompt_evaluated=stats.n_prompt_evaluated if stats else 0,
        prompt_s=prompt_s,
        ttft_s=(first - started) if first is not None else None,
        total_s=end - started,
        tokens_per_s=tps,
        n_drafted=stats.n_drafted if stats else 0,
        n_accepted=stats.n_accepted if stats else 0,
        **meta,
    )
