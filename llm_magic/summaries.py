"""``{name}`` of a large object: a summary by its type that fits a token budget.

``summarize(obj, budget=1000, count=...)`` returns a ``Summary``: the text to put in the prompt
and what was left out. Small objects come back as ``str(obj)`` (what interpolation always sent);
large ones are summarised by type (``summaries_data`` for pandas, polars, numpy and array-likes,
here for containers, strings, exceptions and objects with ``_ai_repr_`` / ``_repr_markdown_``),
at the most detailed level that fits, and as a last resort cut to the budget.

pandas, polars, numpy and torch are never imported here: an object is recognised by its type's
module (``type(obj).__module__``), so only objects that come from those libraries reach code that
uses them. A repr that raises is reported in one line; one that hangs is abandoned after
``timeout`` seconds (it runs on a daemon thread); recursive structures and huge dicts are walked
only as far as the summary needs; unicode surrogates are replaced (the tokenizer needs UTF-8).
"""

from __future__ import annotations

import itertools
import math
import re
import reprlib
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import summaries_data

Counter = Callable[[str], int]
DEFAULT_BUDGET = 1000
DEFAULT_TIMEOUT_S = 2.0
SMALL_WALK = 2000  # a container with more (nested) elements than this is summarised without str()
_SURROGATES = re.compile("[\ud800-\udfff]")
_SIMPLE = (int, float, complex, bool, type(None))


@dataclass(frozen=True)
class Summary:
    text: str
    cut: bool = False  # something was left out (the cell says so in one line)
    what: str = ""  # what was summarised, for that line: "10,000 × 30 DataFrame", "1,000,000 characters"


def estimate_tokens(text: str) -> int:
    """A conservative token count without a tokenizer (remote models, a model not loaded yet):
    a digit is a token of its own in many vocabularies (Gemma, Llama 3), other text ~3 bytes a token."""
    n_bytes = len(text.encode("utf-8", "surrogatepass"))
    digits = sum(map(text.count, "0123456789")) if len(text) < 1_000_000 else n_bytes // 4
    return math.ceil((n_bytes - digits) / 3) + digits


def clean(text: str) -> str:
    """Replace lone surrogates (``"\\ud800"``), which no tokenizer can take, with U+FFFD."""
    return _SURROGATES.sub("\ufffd", text) if _SURROGATES.search(text) else text


def trivial(obj: Any, budget: int) -> bool:
    """Sent as it is without counting: a number, None, or a string shorter than the budget."""
    return isinstance(obj, _SIMPLE) or (type(obj) is str and len(obj) <= budget)


def summarize(
    obj: Any,
    budget: int = DEFAULT_BUDGET,
    count: Counter | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Summary:
    """The text for ``{name}``: ``str(obj)`` when it fits ``budget`` tokens, else a summary that does."""
    count = count or estimate_tokens
    if trivial(obj, budget):  # a string with fewer characters than tokens allowed fits
        return Summary(clean(obj) if isinstance(obj, str) else str(obj))
    box: list[Any] = []

    def work() -> None:
        try:
            box.append(_summarize(obj, budget, count))
        except BaseException as e:  # noqa: BLE001 - a repr may raise anything, even SystemExit
            box.append(e)

    worker = threading.Thread(target=work, name="llm_magic-summary", daemon=True)
    worker.start()
    worker.join(timeout)
    kind = _type_name(obj)
    if not box:
        return Summary(f"<{kind} object: its repr did not finish in {timeout:g} s>", True, f"{kind}: repr timed out")
    result = box[0]
    if isinstance(result, BaseException):
        message = _one_line(f"{type(result).__name__}: {result}")
        return Summary(f"<{kind} object: its repr raised {message}>", True, f"{kind}: repr raised")
    return Summary(clean(result.text), result.cut, result.what)


def _type_name(obj: Any) -> str:
    t = type(obj)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summarize(obj: Any, budget: int, count: Counter) -> Summary:
    ai = _ai_repr(obj, budget)
    if ai is not None:
        return fit(lambda level: ai, 1, budget, count, what=f"{_type_name(obj)} (_ai_repr_)")
    data = summaries_data.levels_for(obj)
    if data is not None:
        small = summaries_data.small_text(obj)
        if small is not None and count(clean(small)) <= budget:
            return Summary(small)
        make, n_levels, what = data
        return fit(make, n_levels, budget, count, what=what, forced=True)
    if isinstance(obj, str):
        return _string(obj, budget, count)
    if isinstance(obj, (bytes, bytearray)):
        return _string(repr(obj), budget, count, unit="characters of its repr")
    if isinstance(obj, BaseException):
        return _exception(obj, budget, count)
    if isinstance(obj, (list, tuple, set, frozenset, dict)) or _is_container(obj):
        return _container(obj, budget, count)
    markdown = _repr_markdown(obj)
    if markdown is not None:
        return _string(markdown, budget, count, unit="characters of its markdown")
    text = str(obj)
    if count(clean(text)) <= budget:
        return Summary(text)
    return _string(repr(obj), budget, count, unit="characters of its repr")


def fit(
    make: Callable[[int], str], n_levels: int, budget: int, count: Counter, what: str = "", forced: bool = False
) -> Summary:
    """The most detailed level of ``make`` (0 = most detail) that fits ``budget``; the last level
    cut to the budget when none does. ``forced``: the text is a summary (so something was cut)."""
    text = ""
    for level in range(n_levels):
        text = clean(make(level))
        if count(text) <= budget:
            return Summary(text, forced or level > 0, what)
    return Summary(cut_to(text, budget, count), True, what)


def cut_to(text: str, budget: int, count: Counter, unit: str = "characters") -> str:
    """``text`` cut (head and tail kept) with a ``[… N characters cut]`` note, within ``budget`` tokens."""
    n = count(text)
    if n <= budget:
        return text
    keep = int(len(text) * budget / max(n, 1) * 0.9)
    while True:
        head = keep * 3 // 4
        tail = keep - head
        cut = len(text) - keep
        out = f"{text[:head]}\n[… {cut:,} {unit} cut]\n{text[len(text) - tail :] if tail else ''}".rstrip("\n")
        if count(out) <= budget or keep == 0:
            return out
        keep = int(keep * 0.8)


def _string(text: str, budget: int, count: Counter, unit: str = "characters") -> Summary:
    text = clean(text)
    if count(text) <= budget:
        return Summary(text)
    if len(text) > 64 * budget:  # never tokenize a megabyte: start from a generous prefix and suffix
        keep = 16 * budget
        cut = len(text) - keep
        head, tail = text[: keep * 3 // 4], text[len(text) - keep // 4 :]
        out = cut_to(f"{head}{tail}", budget, count, unit)
        # the note counts what is missing from the original text, not from the pre-cut one
        inner = re.search(r"\[… ([\d,]+) " + re.escape(unit) + r" cut\]", out)
        n = cut + (int(inner.group(1).replace(",", "")) if inner else 0)
        out = re.sub(r"\[… [\d,]+ " + re.escape(unit) + r" cut\]", f"[… {n:,} {unit} cut]", out, count=1)
        return Summary(out, True, f"{len(text):,} {unit}")
    return Summary(cut_to(text, budget, count, unit), True, f"{len(text):,} {unit}")


def _exception(exc: BaseException, budget: int, count: Counter) -> Summary:
    head = f"{type(exc).__name__}: {exc}".rstrip(": ") if str(exc) else type(exc).__name__
    frames = traceback.format_tb(exc.__traceback__) if exc.__traceback__ is not None else []
    lines = "".join(frames).rstrip("\n").splitlines()

    def make(level: int) -> str:
        n = (40, 16, 6, 0)[level]
        if not lines or n == 0:
            return head
        tail = lines[-n:]
        skipped = f"[… {len(lines) - len(tail)} traceback lines cut]\n" if len(tail) < len(lines) else ""
        return f"{head}\nTraceback (most recent call last):\n{skipped}" + "\n".join(tail)

    summary = fit(make, 4, budget, count, what=f"{type(exc).__name__} traceback")
    return Summary(summary.text, summary.cut, summary.what)


def _is_container(obj: Any) -> bool:
    t = type(obj)
    return t.__module__ == "collections" and hasattr(obj, "__len__") and hasattr(obj, "__iter__")


def _walk_small(obj: Any, limit: int = SMALL_WALK) -> bool:
    """True when ``obj`` and what it nests hold at most ``limit`` elements (stops counting early)."""
    seen: set[int] = set()
    todo = [obj]
    n = 0
    while todo:
        x = todo.pop()
        if isinstance(x, (list, tuple, set, frozenset, dict)) or _is_container(x):
            if id(x) in seen:
                continue
            seen.add(id(x))
            n += len(x)
            if n > limit:
                return False
            todo.extend(x.items() if isinstance(x, Mapping) else x)
        elif isinstance(x, (str, bytes)):
            n += len(x) // 200
            if n > limit:
                return False
        elif not isinstance(x, _SIMPLE):
            n += 1 if summaries_data.levels_for(x) is None else limit  # a DataFrame in a list: not small
    return True


def _container(obj: Any, budget: int, count: Counter) -> Summary:
    if _walk_small(obj):
        text = str(obj)
        if count(clean(text)) <= budget:
            return Summary(text)
    n = len(obj)
    kind = _type_name(obj)
    noun = "keys" if isinstance(obj, Mapping) else "items"

    def make(level: int) -> str:
        first = (50, 20, 10, 5, 2, 0)[level]
        if first == 0:
            return f"{kind} of {n:,} {noun}"
        r = reprlib.Repr()
        r.maxlevel = 2 if level < 3 else 1
        r.maxstring = r.maxother = (80, 60, 40, 30, 20, 20)[level]
        r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = r.maxdict = 6
        r.maxlong = 40
        return f"{kind} of {n:,} {noun}; the first {min(first, n):,}: {_first_items(obj, first, r)}"

    return fit(make, 6, budget, count, what=f"{kind} of {n:,} {noun}", forced=True)


def _first_items(obj: Any, k: int, r: reprlib.Repr) -> str:
    """The first ``k`` items in iteration order (never sorted: a million keys stay cheap)."""
    if isinstance(obj, Mapping):
        parts = [f"{r.repr(key)}: {r.repr(value)}" for key, value in itertools.islice(obj.items(), k)]
        opened, closed = "{", "}"
    else:
        parts = [r.repr(x) for x in itertools.islice(obj, k)]
        opened, closed = (
            ("(", ")") if isinstance(obj, tuple) else ("{", "}") if isinstance(obj, (set, frozenset)) else ("[", "]")
        )
    more = ", ..." if len(obj) > k else ""
    return f"{opened}{', '.join(parts)}{more}{closed}"


def _ai_repr(obj: Any, budget: int) -> str | None:
    """The ``_ai_repr_(**kwargs)`` protocol: a dict of MIME type → value; its text/markdown or text/plain."""
    method = getattr(type(obj), "_ai_repr_", None)
    if method is None:
        return None
    try:
        bundle = obj._ai_repr_(max_tokens=budget)
    except TypeError:  # an implementation that takes no keyword arguments
        bundle = obj._ai_repr_()
    if isinstance(bundle, Mapping):
        for mime in ("text/markdown", "text/plain"):
            if isinstance(bundle.get(mime), str):
                return str(bundle[mime])
        return None
    return bundle if isinstance(bundle, str) else None


def _repr_markdown(obj: Any) -> str | None:
    method = getattr(type(obj), "_repr_markdown_", None)
    if method is None:
        return None
    text = obj._repr_markdown_()
    if isinstance(text, tuple):  # (data, metadata)
        text = text[0]
    return text if isinstance(text, str) else None
