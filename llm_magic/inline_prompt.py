"""The prompt of an inline completion (issue 16), and where its text ends.

A model whose vocabulary has fill-in-the-middle tokens gets ``<prefix marker> PREFIX <suffix
marker> SUFFIX <middle marker>`` (prefix-suffix-middle order, as Qwen2.5-Coder, StarCoder and
CodeGemma were trained); any other model continues the prefix. The user's text is tokenized
without special tokens (code that spells a marker stays text), and the prefix comes first in both
shapes, so the KV cache keeps the notebook's prefix from one keystroke to the next
(``llama_loop.evaluate_prompt`` reuses the longest common prefix).

No IPython, no llama_cpp import: the model is the loaded ``llama_cpp.Llama``, used through its
public ``tokenize``/``detokenize``/``token_bos`` and ``llama_private.add_bos``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

# (prefix, suffix, middle) markers, in the order they are looked for in a vocabulary
FIM_MARKERS: tuple[tuple[str, str, str], ...] = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, CodeGemma
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SantaCoder
    ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),  # some older code models
)
MODES = {"line": ("\n",), "block": ("\n\n",), "none": ()}  # where a completion ends, by request mode
_SUFFIX_SHARE = 4  # the suffix takes at most a quarter of the prompt budget (the prefix matters more)
_markers_of: weakref.WeakKeyDictionary[Any, tuple[int, int, int] | None] = weakref.WeakKeyDictionary()


def _single_special(llm: Any, marker: str) -> int | None:
    """The id of the one vocabulary token that spells ``marker`` (None if the vocab has none)."""
    want = marker.encode("utf-8")
    ids = llm.tokenize(want, add_bos=False, special=True)
    found = [t for t in ids if llm.detokenize([t], special=True).strip() == want]
    return found[0] if len(found) == 1 else None


def fim_markers(llm: Any) -> tuple[int, int, int] | None:
    """The model's (prefix, suffix, middle) FIM token ids, read from its vocabulary (memoised per model)."""
    try:
        return _markers_of[llm]
    except (KeyError, TypeError):
        pass
    found: tuple[int, int, int] | None = None
    for triple in FIM_MARKERS:
        ids = [_single_special(llm, m) for m in triple]
        if all(i is not None for i in ids):
            found = (int(ids[0]), int(ids[1]), int(ids[2]))  # type: ignore[arg-type]  # checked just above
            break
    try:
        _markers_of[llm] = found
    except TypeError:  # not weak-referenceable: look it up again next time
        pass
    return found


def prompt_tokens(
    llm: Any, add_bos: bool, n_ctx: int, prefix: str, suffix: str, max_tokens: int
) -> tuple[list[int], str]:
    """(tokens, shape) of the completion prompt; shape is "fim" or "continue". The prefix keeps its
    end and the suffix its start when they do not fit ``n_ctx`` with room for ``max_tokens``."""

    def tok(text: str) -> list[int]:
        return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else []

    bos = [int(llm.token_bos())] if add_bos and int(llm.token_bos()) >= 0 else []
    budget = max(0, n_ctx - max_tokens - len(bos) - 4)
    markers = fim_markers(llm)
    if markers is None:
        return bos + _tail(tok(prefix), budget), "continue"
    pre, suf, mid = markers
    suffix_tokens = tok(suffix)[: budget // _SUFFIX_SHARE]
    prefix_tokens = _tail(tok(prefix), budget - len(suffix_tokens))
    return [*bos, pre, *prefix_tokens, suf, *suffix_tokens, mid], "fim"


TRIM_STEP_TOKENS = 256  # a prefix over budget loses its start in steps this long (see ``stable_tail``)


def stable_tail(seq: Sequence[Any], n: int, step: int) -> Sequence[Any]:
    """At most the last ``n`` items of ``seq``, cut at a multiple of ``step`` from its start: as the
    prefix grows by a keystroke the cut stays where it was (and the KV cache's prefix with it)
    instead of sliding by one token each time, which would make every keystroke read it all."""
    if len(seq) <= n:
        return seq
    if n <= 0:
        return seq[:0]
    drop = -(-(len(seq) - n) // step) * step  # rounded up to a whole step
    return seq[drop:]


def _tail(tokens: list[int], n: int) -> list[int]:
    return list(stable_tail(tokens, n, TRIM_STEP_TOKENS))


class LineEnd:
    """Cut the completion's text at the first stop string that comes after its first non-blank
    character (a completion may begin on the next line), holding back only what may start a stop."""

    def __init__(self, stops: Sequence[str]):
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._text = ""
        self._sent = 0
        self.hit = False

    def feed(self, piece: str) -> str:
        """The text to show now for the next ``piece``; ``hit`` turns true at a stop."""
        self._text += piece
        body = len(self._text) - len(self._text.lstrip())
        cuts = [i for i in (self._text.find(s, body) for s in self._stops) if i != -1]
        if cuts:
            self.hit = True
            end = max(self._sent, min(cuts))
        else:
            end = max(self._sent, len(self._text) - self._hold)
        out, self._sent = self._text[self._sent : end], end
        return out

    def rest(self) -> str:
        """What was held back, once the completion ended without a stop."""
        if self.hit:
            return ""
        out, self._sent = self._text[self._sent :], len(self._text)
        return out
