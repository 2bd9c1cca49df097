"""How the local engine picks each next token: one ``Sampler`` per request.

Greedy decoding without penalties or a grammar is an ``argmax`` over the logits llama.cpp just
wrote (numpy over the native buffer, no copy: ~0.02 ms over Gemma's 262k-token vocabulary, where
llama.cpp's own greedy sampler builds a candidate array first, ~0.35 ms). Everything else is
llama.cpp's native sampler chain, built once per request in llama.cpp's usual order: penalties
(repeat, frequency, presence over the last 64 tokens), top-k, top-p, min-p, temperature, and a
seeded ``dist`` (the same seed gives the same text). A grammar is a separate native sampler that
masks the candidates before the chain picks, so the prompt tokens fed to the penalties never
advance it.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

PENALTY_LAST_N = 64  # tokens the penalties look back over (llama.cpp's default)
RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp seeds from the clock


class Sampler:
    """Choose tokens from the logits of the last ``llama_decode`` (output index -1)."""

    def __init__(
        self,
        lc: Any,
        ctx: Any,
        vocab: Any,
        *,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        seed: int | None = None,
        grammar: str | None = None,
        history: list[int] | None = None,
    ):
        self._lc, self._ctx = lc, ctx
        self.n_vocab = int(lc.llama_vocab_n_tokens(vocab))
        penalties = repeat_penalty != 1.0 or frequency_penalty != 0.0 or presence_penalty != 0.0
        self.greedy = temperature <= 0
        self._chain: Any = None
        self._grammar: Any = None
        self._views: dict[int, np.ndarray] = {}  # logits buffer address -> numpy view of it
        self._cur: np.ndarray | None = None  # the candidate array, for grammar sampling
        try:
            if grammar is not None:
                self._grammar = lc.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
                if not self._grammar:  # checked before (llama_grammar.checked_grammar): a last guard
                    raise ValueError("llama.cpp refused the grammar")
            if penalties or not self.greedy:
                self._chain = self._build_chain(
                    temperature, top_k, top_p, min_p, repeat_penalty, frequency_penalty, presence_penalty, seed
                )
                if penalties:  # the penalties look at the end of the prompt too, as llama.cpp's server does
                    for token in (history or [])[-PENALTY_LAST_N:]:
                        lc.llama_sampler_accept(self._chain, token)
        except BaseException:
            self.close()
            raise

    def _build_chain(
        self,
        temperature: float,
        top_k: int,
        top_p: float,
        min_p: float,
        repeat_penalty: float,
        frequency_penalty: float,
        presence_penalty: float,
        seed: int | None,
    ) -> Any:
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        parts = []
        if repeat_penalty != 1.0 or frequency_penalty != 0.0 or presence_penalty != 0.0:
            args: tuple[float, ...] = (PENALTY_LAST_N, repeat_penalty, frequency_penalty, presence_penalty)
            if len(getattr(lc.llama_cpp.llama_sampler_init_penalties, "argtypes", None) or ()) == 5:
                args = (self.n_vocab, *args)  # this llama.cpp still takes the vocabulary size first
            parts.append(lc.llama_sampler_init_penalties(*args))
        if self.greedy:
            parts.append(lc.llama_sampler_init_greedy())
        else:
            if top_k > 0:
                parts.append(lc.llama_sampler_init_top_k(top_k))
            if top_p < 1.0:
                parts.append(lc.llama_sampler_init_top_p(top_p, 1))
            if min_p > 0.0:
                parts.append(lc.llama_sampler_init_min_p(min_p, 1))
            parts.append(lc.llama_sampler_init_temp(temperature))
            parts.append(lc.llama_sampler_init_dist(RANDOM_SEED if seed is None or seed < 0 else seed))
        for part in parts:
            lc.llama_sampler_chain_add(chain, part)  # the chain owns (and frees) its parts
        return chain

    @property
    def plain_greedy(self) -> bool:
        """An argmax and nothing else (no penalties, no grammar): what prompt lookup can check in a batch."""
        return self._chain is None and self._grammar is None

    def logits(self, i: int = -1) -> np.ndarray:
        """The last decode's logits at batch position ``i`` (-1: its last token) as a numpy view of
        llama.cpp's buffer, valid until the next decode."""
        pointer = self._lc.llama_get_logits_ith(self._ctx, i)
        address = ctypes.cast(pointer, ctypes.c_void_p).value
        if not address:
            raise RuntimeError(f"llama.cpp returned no logits for batch position {i}")
        view = self._views.get(address)
        if view is None:
            buffer = memoryview((ctypes.c_float * self.n_vocab).from_address(address)).cast("B")
            view = np.frombuffer(buffer, dtype=np.float32)
            self._views[address] = view
        return view

    def sample(self) -> int:
        """The next token, accepted (the penalties' history and the grammar's state advance)."""
        if self._grammar is not None:
            return self._sample_with_grammar()
        if self._chain is None:
            return int(self.logits().argmax())
        return int(self._lc.llama_sampler_sample(self._chain, self._ctx, -1))  # accepts it too

    def _sample_with_grammar(self) -> int:
        """The grammar masks the whole vocabulary (tokens it rejects get -inf), then the chain picks."""
        lc = self._lc
        cur = self._cur
        if cur is None:
            cur = self._cur = np.zeros(self.n_vocab, dtype=[("id", np.int32), ("logit", np.float32), ("p", np.float32)])
            cur["id"] = np.arange(self.n_vocab, dtype=np.int32)
        cur["logit"] = self.logits()
        cur["p"] = 0.0
        array = lc.llama_token_data_array(
            data=cur.ctypes.data_as(lc.llama_token_data_p), size=self.n_vocab, selected=-1, sorted=False
        )
        pointer = ctypes.byref(array)
        lc.llama_sampler_apply(self._grammar, pointer)
        if self._chain is None:
            token = int(cur["id"][int(cur["logit"].argmax())])
        else:
            lc.llama_sampler_apply(self._chain, pointer)
            if array.selected < 0:
                raise RuntimeError("the sampler chain selected no token")
            token = int(array.data[array.selected].id)  # samplers may sort the array or replace its buffer
            lc.llama_sampler_accept(self._chain, token)
        lc.llama_sampler_accept(self._grammar, token)
        return token

    def close(self) -> None:
        for attr in ("_chain", "_grammar"):
            sampler = getattr(self, attr)
            if sampler:
                self._lc.llama_sampler_free(sampler)
            setattr(self, attr, None)
        self._views.clear()
