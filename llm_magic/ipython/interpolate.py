"""Safe ``{...}`` interpolation of notebook state into a prompt.

Recognised, and nothing else:
- ``{name}``: the value of a user variable (a plain identifier); with a ``summarize`` function a
  large value is summarised within its token budget (``llm_magic.summaries``) and ``notes`` gets
  one entry per summary that left something out;
- ``{name!full}``: ``str(value)`` whole, never summarised;
- ``{In[n]}``, ``{Out[n]}``, ``{Err[n]}``: a cell's source, its result, its error with traceback.

There is no attribute access, no other indexing and no code execution. Every other brace text
(dicts, sets, f-strings, JSON, format strings) is kept literally, so code in a prompt is sent
unchanged and never raises. An unknown name or cell is left as written, with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..summaries import Summary, clean

_PATTERN = re.compile(r"\{(?:(?P<ref>In|Out|Err)\[(?P<n>-?\d+)\]|(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<full>!full)?)\}")
# an f-string literal opened earlier on the same line and not closed: f"...{   f'{   rf"{   ...
_IN_FSTRING = re.compile(r"""(?:^|[^A-Za-z0-9_])(?:[rR][fF]|[fF][rR]?)(?P<q>"{3}|'{3}|"|')(?:(?!(?P=q)).)*$""")


def _inside_fstring(text: str, pos: int) -> bool:
    line_start = text.rfind("\n", 0, pos) + 1
    return bool(_IN_FSTRING.search(text[line_start:pos]))


def interpolate(
    text: str,
    *,
    user_ns: Mapping[str, Any],
    errors: Mapping[int, str] | None = None,
    warn: Callable[[str], None] | None = None,
    summarize: Callable[[Any], Summary] | None = None,
    notes: list[str] | None = None,
) -> str:
    """Return ``text`` with the recognised references replaced (see the module docstring)."""
    errors = errors or {}
    missing: list[str] = []

    def render(label: str, value: Any) -> str:
        if summarize is None:
            return value if isinstance(value, str) else str(value)
        summary = summarize(value)
        if summary.cut and notes is not None:
            notes.append(f"{label}: {summary.what}" if summary.what else label)
        return summary.text

    def value_of(match: re.Match) -> str | None:
        if match.group("name"):
            name = match.group("name")
            if name not in user_ns:
                return None
            value = user_ns[name]
            if match.group("full"):
                return clean(value if isinstance(value, str) else str(value))
            return render(f"{{{name}}}", value)
        ref, n = match.group("ref"), int(match.group("n"))
        if ref == "In":
            cells = user_ns.get("In") or []
            try:
                return render(f"{{In[{n}]}}", cells[n]) if n != 0 else None
            except IndexError:
                return None
        if ref == "Out":
            outputs = user_ns.get("Out") or {}
            if n < 0:
                keys = sorted(outputs)
                n = keys[n] if -n <= len(keys) else 0
            return render(f"{{Out[{n}]}}", outputs[n]) if n in outputs else None
        if n < 0:
            keys = sorted(errors)
            n = keys[n] if -n <= len(keys) else 0
        return render(f"{{Err[{n}]}}", errors[n]) if n in errors else None

    def replace(match: re.Match) -> str:
        start, end = match.span()
        # {{name}} is an escape: kept as written
        if text[start - 1 : start] == "{" and text[end : end + 1] == "}":
            return match.group(0)
        if match.group("name") and _inside_fstring(text, start):
            return match.group(0)
        value = value_of(match)
        if value is None:
            missing.append(match.group(0))
            return match.group(0)
        return value

    result = _PATTERN.sub(replace, text)
    if missing and warn is not None:
        shown = ", ".join(dict.fromkeys(missing))
        warn(f"llm_magic: {shown} not defined; sent as written (use --no-interpolate to send braces unchanged)")
    return result
