"""Prompt-lookup decoding (``--draft lookup``): guess the next tokens from the text so far, check
the guesses in one batched decode, keep the ones the model agrees with.

An answer that copies from its prompt — "add type hints to this function: …", "fix the typo in
…" — repeats long runs of tokens the context already holds. After each token we look for the
latest earlier place where the last few tokens (3, then 2, then 1) occurred and take up to
``DRAFT_MAX`` tokens that followed there as a draft. The draft is decoded together with the
token in one batch that asks for every position's logits; the model's own greedy choice at each
position accepts a drafted token or replaces it, and the KV cells of rejected drafts are dropped.
Greedy only: the text is the plain greedy loop's (each kept token is the argmax after exactly the
tokens before it), while a batch of several tokens costs little more than one on a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from .base import StreamStats
from .llama_loop import AnswerTokens, KVContext
from .llama_sampler import Sampler
from .stops import StopMatcher

DRAFT_MAX = 8  # most drafted tokens checked per decode
NGRAM_MAX = 3  # longest run of tokens matched against the history


class NgramIndex:
    """Where each run of 1–3 tokens last occurred in the text so far: a draft costs the same at
    token 2,000 as at token 20."""

    def __init__(self, tokens: Sequence[int]):
        self.history: list[int] = []
        self._after: dict[tuple[int, ...], int] = {}  # n-gram -> position just after its latest occurrence
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        """Add a token; the runs ending just before it become findable (the tail itself never is)."""
        history = self.history
        end = len(history)
        for n in range(1, min(NGRAM_MAX, end) + 1):
            self._after[tuple(history[end - n : end])] = end
        history.append(token)

    def draft(self, limit: int = DRAFT_MAX) -> list[int]:
        """Tokens that followed the latest earlier occurrence of the last 3 (then 2, 1) tokens."""
        if limit <= 0:
            return []
        history = self.history
        for n in range(min(NGRAM_MAX, len(history) - 1), 0, -1):
            follow = self._after.get(tuple(history[-n:]))
            if follow is not None and follow < len(history):
                return history[follow : follow + limit]
        return []


class _Batch:
    """A reused ``llama_batch`` of sequence 0 that asks for every position's logits."""

    def __init__(self, lc: Any, size: int):
        self._lc = lc
        self.size = size
        self.batch = lc.llama_batch_init(size, 0, 1)

    def fill(self, tokens: Sequence[int], first_pos: int) -> Any:
        b = self.batch
        for i, token in enumerate(tokens):
            b.token[i] = token
            b.pos[i] = first_pos + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1
        b.n_tokens = len(tokens)
        return b

    def free(self) -> None:
        self._lc.llama_batch_free(self.batch)


def generate_lookup(
    kv: KVContext,
    sampler: Sampler,
    stops: StopMatcher,
    *,
    max_tokens: int,
    should_stop: Callable[[], bool],
    stats: StreamStats,
) -> Generator[str, None, None]:
    """Greedy generation with prompt-lookup drafts (same contract as ``llama_loop.generate``;
    ``sampler`` is a plain greedy one: it only reads the logits)."""
    lc, ctx = kv._lc, kv.ctx
    answer = AnswerTokens(kv, stops, max_tokens, stats)
    batch = _Batch(lc, min(DRAFT_MAX + 1, kv.n_batch))
    index = NgramIndex(kv.tokens)
    finish: str | None = None

    def argmax(i: int) -> int:
        return int(sampler.logits(i).argmax())

    try:
        token = argmax(-1)  # the prompt's last position
        stats.first_sample_at = time.monotonic()
        while not should_stop():
            text, finish = answer.take(token)
            if text:
                yield text
            if finish is not None:
                break
            index.append(token)
            room = min(batch.size - 1, answer.limit - answer.n, kv.n_ctx - len(kv.tokens) - 1)
            draft = index.draft(room)
            base = len(kv.tokens)
            if not draft:
                kv.decode_one(token)
                token = argmax(-1)
                continue
            rc = lc.llama_decode(ctx, batch.fill([token, *draft], base))
            if rc != 0:
                raise RuntimeError(f"llama_decode failed ({rc}) on a drafted batch")
            kv.tokens.extend([token, *draft])
            stats.n_drafted += len(draft)
            kept = 0
            token = argmax(0)
            while kept < len(draft) and token == draft[kept]:  # the model agrees: the draft token is its choice
                if should_stop():
                    break
                text, finish = answer.take(token)
                if text:
                    yield text
                if finish is not None:
                    break
                index.append(token)
                kept += 1
                token = argmax(kept)
            stats.n_accepted += kept
            kv.keep(base + 1 + kept)  # the rejected drafts' cells go
            if finish is not None:
                break
    finally:
        batch.free()
    stats.finish_reason = finish
    rest = answer.rest()
    if rest:
        yield rest
