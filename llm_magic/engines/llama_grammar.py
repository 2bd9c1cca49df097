"""GBNF grammars for the local engine, checked before llama.cpp sees them: llama-cpp-python hands
llama.cpp's NULL for a grammar that does not parse straight to the sampler chain, which then
segfaults; we parse it first and say why it is wrong in one line."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from . import llama_private as private


def checked_grammar(lc: Any, llm: Any, grammar: Any) -> Any:
    """A ``LlamaGrammar`` for GBNF text (anything else is passed through), or a ``ConfigError``."""
    if not isinstance(grammar, str):
        return grammar
    with private.capture_native_log(50) as lines:
        sampler = lc.llama_sampler_init_grammar(private.vocab(llm), grammar.encode("utf-8"), b"root")
    if not sampler:
        reason = next((ln.strip() for ln in reversed(lines) if ln.strip()), "it does not parse")
        raise ConfigError(f"invalid GBNF grammar: {reason}")
    lc.llama_sampler_free(sampler)
    return lc.LlamaGrammar.from_string(grammar, verbose=False)
