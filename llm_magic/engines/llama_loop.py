"""The local engine's generation loop, on llama.cpp's C API through llama-cpp-python's ctypes binding.

``Llama.create_completion`` re-detokenizes the whole answer and rebuilds token lists on every
step (quadratic in the answer's length) and evaluates a prompt in one uninterruptible call. Here
one token costs one ``llama_decode`` of a reused one-token batch, one sample (``llama_sampler``),
one memoised ``llama_token_to_piece`` through an incremental UTF-8 decoder (a character split
across tokens is emitted whole, never broken) and a stop-string check on a tail window.

``KVContext`` is the model's llama.cpp context as the loop sees it: the tokens its KV cache holds
(sequence 0), evaluating more, dropping a tail, and saving or restoring the whole sequence so that
conversations on one model keep their history while another conversation runs (``kv_states``).
"""

from __future__ import annotations

import codecs
import ctypes
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from . import llama_private as private
from .base import StreamStats
from .kv_states import SavedState, SavedStates
from .llama_sampler import Sampler
from .stops import StopMatcher

_DECODE_ERRORS = {
    1: "the context window is full (no KV cache slot for the batch)",
    2: "aborted",
    -1: "invalid input batch",
}


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class KVContext:
    """What one loaded model's llama.cpp context holds (sequence 0) and the calls that change it."""

    def __init__(self, lc: Any, llm: Any, n_ctx: int):
        self._lc, self._llm = lc, llm
        self.ctx = private.native_context(llm)
        self.mem = lc.llama_get_memory(self.ctx)
        self.vocab = private.vocab(llm)
        self.n_ctx = n_ctx
        self.n_batch = max(1, int(llm.n_batch))
        self.recurrent = private.recurrent_or_hybrid(llm)
        self.tokens: list[int] = []  # what the KV cache holds, in order
        self.owner: str | None = None  # the conversation whose history that is (None: a one-off ask)
        self.shown_special: frozenset[int] = frozenset()  # special tokens whose text an answer shows (thinking markers)
        self._buf = (lc.llama_token * self.n_batch)()
        self._one = lc.llama_batch_get_one(self._buf, 1)  # the reused one-token batch
        private.set_n_tokens(llm, 0)  # llama-cpp-python's own view: empty (see claim)

    def claim(self) -> None:
        """Take the context back from llama-cpp-python's own API (a direct ``Llama`` call): if that
        evaluated anything since we last used it, what we recorded is void."""
        if private.n_tokens(self._llm) != 0:
            self.clear()

    def clear(self) -> None:
        """Empty the KV cache (and llama-cpp-python's view of it)."""
        self._lc.llama_memory_clear(self.mem, True)
        private.set_n_tokens(self._llm, 0)
        self.tokens, self.owner = [], None

    def keep(self, n: int) -> int:
        """Drop what the cache holds past its first ``n`` tokens; returns how many it keeps (0 when
        this memory cannot drop a tail, e.g. a recurrent model)."""
        n = min(n, len(self.tokens))
        if self.recurrent and n == len(self.tokens):
            return n  # nothing to drop (a recurrent state cannot lose a tail)
        # Always asked, even with nothing recorded past n: a decode that an interrupt cut off
        # between llama.cpp's return and our record leaves a cell we do not know about.
        if n > 0 and not self.recurrent and self._lc.llama_memory_seq_rm(self.mem, 0, n, -1):
            del self.tokens[n:]
            return n
        owner = self.owner
        self.clear()
        self.owner = owner
        return 0

    def decode(self, tokens: Sequence[int]) -> None:
        """Evaluate up to ``n_batch`` tokens after what the cache holds (logits for the last one)."""
        n = len(tokens)
        self._buf[:n] = tokens
        batch = self._one if n == 1 else self._lc.llama_batch_get_one(self._buf, n)
        rc = self._lc.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}): {_DECODE_ERRORS.get(rc, 'a fatal error')}")
        self.tokens.extend(tokens)

    def decode_one(self, token: int) -> None:
        """The hot path: one generated token."""
        self._buf[0] = token
        rc = self._lc.llama_decode(self.ctx, self._one)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}): {_DECODE_ERRORS.get(rc, 'a fatal error')}")
        self.tokens.append(token)

    # ---- whole-sequence state, for conversations -----------------------------------------------

    def save(self) -> SavedState | None:
        """A copy of the sequence's KV state in host memory (None if llama.cpp could not write it)."""
        lc = self._lc
        size = int(lc.llama_state_seq_get_size(self.ctx, 0))
        if size <= 0 or not self.tokens:
            return None
        data = (ctypes.c_uint8 * size)()
        written = int(lc.llama_state_seq_get_data(self.ctx, data, size, 0))
        return SavedState(list(self.tokens), data, written) if written > 0 else None

    def restore(self, state: SavedState) -> bool:
        """Make the cache hold ``state`` instead of what it holds now. False if llama.cpp refused it
        (the cache is empty then)."""
        lc = self._lc
        lc.llama_memory_seq_rm(self.mem, 0, -1, -1)
        self.tokens = []
        if int(lc.llama_state_seq_set_data(self.ctx, state.data, state.nbytes, 0)) <= 0:
            self.clear()
            return False
        self.tokens = list(state.tokens)
        return True

    def enter(self, owner: str | None, prompt: Sequence[int], states: SavedStates, budget: int) -> None:
        """Before a request of conversation ``owner`` (None: a one-off ask): the conversation whose
        history the cache holds is saved if another one takes over, and ``owner``'s saved history
        comes back when it shares more of ``prompt`` than what the cache holds now."""
        self.claim()
        if owner == self.owner:
            return
        saved = states.take(owner) if owner is not None else None
        if self.owner is not None and budget > 0:
            state = self.save()
            if state is not None:
                states.put(self.owner, state, budget)
        if saved is not None and common_prefix(saved.tokens, prompt) > common_prefix(self.tokens, prompt):
            self.restore(saved)
        self.owner = owner


class Detokenizer:
    """Token → text, incrementally: bytes of an unfinished UTF-8 character wait for the next token."""

    def __init__(self, lc: Any, vocab: Any, shown_special: frozenset[int] = frozenset()):
        self._lc, self._vocab = lc, vocab
        self._shown = shown_special
        self._buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def piece(self, token: int) -> bytes:
        """The token's bytes (special tokens render as nothing, as in llama-cpp-python, except the
        thinking markers in ``shown_special``). Memoised: the hot path is one dict lookup."""
        data = self._pieces.get(token)
        if data is None:
            special = token in self._shown
            n = self._lc.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, special)
            if n < 0:  # the buffer was too small: -n bytes are needed
                self._buf = ctypes.create_string_buffer(-n)
                n = self._lc.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, special)
            data = self._pieces[token] = self._buf.raw[: max(0, n)]
        return data

    def text(self, token: int) -> str:
        return self._decoder.decode(self.piece(token))


def evaluate_prompt(
    kv: KVContext, tokens: list[int], should_stop: Callable[[], bool], stats: StreamStats, batch: int | None = None
) -> bool:
    """Reuse the longest cached prefix, then evaluate the rest batch by batch so a deadline or Stop
    acts between batches (the last token always: its logits choose the first answer token).
    ``batch`` makes the batches smaller than the context's (a request that must give way soon).
    Returns False if stopped."""
    kept = kv.keep(min(common_prefix(kv.tokens, tokens), len(tokens) - 1))
    stats.n_prompt_tokens = len(tokens)
    stats.n_prompt_evaluated = len(tokens) - kept
    todo = len(tokens) - kept
    step = max(1, min(kv.n_batch, batch or kv.n_batch))
    for start in range(kept, len(tokens), step):
        if todo > step:
            stats.prompt_progress(start - kept)
        if should_stop():
            return False
        kv.decode(tokens[start : start + step])
    if todo > step:
        stats.prompt_progress(todo)
    return True


class AnswerTokens:
    """The answer side of the loop: each chosen token becomes text, a count, and perhaps the end.

    End of generation comes from the vocabulary (``llama_vocab_is_eog``) and is not part of the
    answer; ``n`` counts exactly the tokens whose text the answer holds (a stop string's tokens
    included). The context window bounds it: every token but the last needs a KV cell."""

    def __init__(self, kv: KVContext, stops: StopMatcher, max_tokens: int, stats: StreamStats):
        self._lc, self._vocab = kv._lc, kv.vocab
        self._detok = Detokenizer(kv._lc, kv.vocab, kv.shown_special)
        self._eog: dict[int, bool] = {}
        self._stops = stops
        self._stats = stats
        self.limit = min(max_tokens, kv.n_ctx - len(kv.tokens))
        self.n = 0

    def take(self, token: int) -> tuple[str, str | None]:
        """(text to emit now, finish reason — None to go on) for the next token of the answer."""
        end = self._eog.get(token)
        if end is None:
            end = self._eog[token] = bool(self._lc.llama_vocab_is_eog(self._vocab, token))
        if end:
            return "", "stop"
        self.n += 1
        self._stats.n_tokens = self.n
        text = self._stops.feed(self._detok.text(token))
        if self._stops.hit:
            return text, "stop"
        return text, "length" if self.n >= self.limit else None

    def rest(self) -> str:
        """Text held back for a stop string that never came."""
        return self._stops.flush()


def generate(
    kv: KVContext,
    sampler: Sampler,
    stops: StopMatcher,
    *,
    max_tokens: int,
    should_stop: Callable[[], bool],
    stats: StreamStats,
) -> Generator[str, None, None]:
    """Sample, emit and evaluate one token at a time after the prompt was evaluated.

    ``should_stop`` is polled before every sample, so a Stop or deadline ends the answer within one
    token (``finish_reason`` None: the request says why)."""
    answer = AnswerTokens(kv, stops, max_tokens, stats)
    finish: str | None = None
    while not should_stop():
        token = sampler.sample()
        if stats.first_sample_at is None:
            stats.first_sample_at = time.monotonic()
        text, finish = answer.take(token)
        if text:
            yield text
        if finish is not None:
            break
        kv.decode_one(token)
    stats.finish_reason = finish
    rest = answer.rest()
    if rest:
        yield rest


def context_text(kv: KVContext, prompt_text: str, n_prompt: int) -> str:
    """The text of what the cache holds: the prompt's text, then the generated tokens it evaluated."""
    detok = Detokenizer(kv._lc, kv.vocab, kv.shown_special)
    return prompt_text + b"".join(detok.piece(t) for t in kv.tokens[n_prompt:]).decode("utf-8", errors="ignore")
