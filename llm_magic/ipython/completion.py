"""Tab completion of model names: after ``%%ask -m`` / ``%ask --model`` and where ``%llm load``,
``unload``, ``alias NAME`` and ``preload`` take a model, the aliases, ``default`` and the models
``llm_magic.find_models()`` finds (``hf:...``, ``ollama:...``, paths). An IPython Matcher API v2
matcher (IPython >= 8.12), registered by ``%load_ext`` and removed by ``%unload_ext``."""

from __future__ import annotations

import re
import threading
import time
from typing import Any, cast

from IPython.core.completer import CompletionContext, SimpleCompletion, SimpleMatcherResult, context_matcher

from .. import default_model
from ..settings import current

# the text before the model name being typed
_ASK = re.compile(r"^\s*%%?ask\b.*?(?:\s-m|\s--model)(?:\s+|=)(?P<word>\S*)$")
_LLM = re.compile(r"^\s*%llm\s+(?:load|unload|preload)\s+(?:\S+\s+)*(?P<word>[^\s-]\S*|)$")
_ALIAS = re.compile(r"^\s*%llm\s+alias\s+\S+\s+(?P<word>\S*)$")
NAMES_TTL_S = 5.0  # a folder scan is cheap but not free: reuse it for a few Tab presses

_names: tuple[float, list[str]] = (0.0, [])
_lock = threading.Lock()


def found_names() -> list[str]:
    """The ``-m`` names of the models on this machine (a directory scan, no header read); vision
    projectors (mmproj files) are not models to load and are left out."""
    global _names
    with _lock:
        stamp, names = _names
        if time.monotonic() - stamp < NAMES_TTL_S:
            return names
    from ..hf_source import is_mmproj
    from ..model_finder import locations

    names = [
        name
        for _, name, path, problem in locations()
        if problem is None and not is_mmproj(path.name) and not is_mmproj(name)
    ]
    with _lock:
        _names = (time.monotonic(), names)
    return names


def model_names() -> list[str]:
    """Aliases first, then ``default`` (when the default model is installed), then found models."""
    names = list(current().aliases())
    if default_model.is_installed():
        names.append("default")
    names += found_names()
    return list(dict.fromkeys(names))


def model_word(line_before_cursor: str) -> str | None:
    """The model name being typed at the cursor, or None when the cursor is not on one."""
    for pattern in (_ASK, _LLM, _ALIAS):
        m = pattern.match(line_before_cursor)
        if m is not None:
            return m.group("word")
    return None


@context_matcher(identifier="llm_magic.model")
def model_matcher(context: CompletionContext) -> SimpleMatcherResult:
    word = model_word(context.text_until_cursor) if context.cursor_line == 0 else None  # options: line 1 only
    if word is None:
        return cast(SimpleMatcherResult, {"completions": [], "suppress": False})
    matches = [n for n in model_names() if n.startswith(word)]
    completions = [SimpleCompletion(text=n, type="model") for n in matches]
    result = {"completions": completions, "suppress": bool(completions), "matched_fragment": word}
    return cast(SimpleMatcherResult, result)


def register(shell: Any) -> None:
    completer = getattr(shell, "Completer", None)
    if completer is None:
        return
    unregister(shell)
    completer.custom_matchers.append(model_matcher)


def unregister(shell: Any) -> None:
    completer = getattr(shell, "Completer", None)
    if completer is not None:
        completer.custom_matchers[:] = [m for m in completer.custom_matchers if m is not model_matcher]
