"""GBNF grammars for the local engine, checked before llama.cpp sees them: llama-cpp-python hands
llama.cpp's NULL for a grammar that does not parse straight to the sampler chain, which then
segfaults; we parse it first and say why it is wrong in one line."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from . import llama_private as private


def checked_grammar(lc: Any, llm: Any, grammar: Any) -> str:
    """The GBNF text of ``grammar`` (text, or a ``llama_cpp.LlamaGrammar``), checked: a grammar
    llama.cpp cannot parse is a ``ConfigError`` saying why."""
    text = grammar if isinstance(grammar, str) else private.grammar_text(grammar)
    with private.capture_native_log(50) as lines:
        sampler = lc.llama_sampler_init_grammar(private.vocab(llm), text.encode("utf-8"), b"root")
    if not sampler:
        reason = next((ln.strip() for ln in reversed(lines) if ln.strip()), "it does not parse")
        raise ConfigError(f"invalid GBNF grammar: {reason}")
    lc.llama_sampler_free(sampler)
    return text
