"""``%%ask --cells N``: the last N executed cells (source, a short form of the result and the
error) as a block of prompt text within a token budget. IPython-free: the front end passes the
shell's ``In`` list, ``Out`` dict and the errors it collected (``ipython.cell_errors``).

Newest cells are kept first; when the budget runs out the oldest cell kept is cut (its source's
head and tail) and older ones are left out, and the block says how many cells it holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .summaries import Counter, clean, cut_to, estimate_tokens, summarize

OUTPUT_BUDGET = 120  # tokens for one cell's result
ERROR_LINES = 8  # the last lines of a cell's traceback
MIN_CUT = 40  # a cell that would get fewer tokens than this is left out rather than cut


def _cell_text(n: int, source: str, outputs: Mapping[int, Any], errors: Mapping[int, str], count: Counter) -> str:
    parts = [f"In [{n}]:\n{clean(source.strip())}"]
    if n in outputs:
        parts.append(f"Out [{n}]: {summarize(outputs[n], budget=OUTPUT_BUDGET, count=count).text}")
    if n in errors:
        tail = clean(errors[n]).strip().splitlines()[-ERROR_LINES:]
        parts.append("Error:\n" + "\n".join(tail))
    return "\n".join(parts)


def recent_cells(
    inputs: Sequence[str],
    outputs: Mapping[int, Any],
    errors: Mapping[int, str],
    *,
    current: int,
    n: int,
    budget: int,
    count: Counter | None = None,
) -> tuple[str, int, bool]:
    """``(block, cells, cut)``: the last ``n`` cells executed before cell ``current`` (empty ones
    skipped), newest kept first, within ``budget`` tokens."""
    count = count or estimate_tokens
    numbers = [k for k in range(min(current, len(inputs)) - 1, 0, -1) if str(inputs[k]).strip()][:n]
    kept: list[str] = []
    used = count(_header(n)) + 2  # the header line is part of the budget
    cut = False
    for k in numbers:
        text = _cell_text(k, str(inputs[k]), outputs, errors, count)
        tokens = count(text)
        if used + tokens <= budget:
            kept.append(text)
            used += tokens
            continue
        cut = True
        if budget - used >= MIN_CUT:
            kept.append(cut_to(text, budget - used, count))
        break
    if not kept:
        return "", 0, cut
    return _header(len(kept)) + "\n\n" + "\n\n".join(reversed(kept)), len(kept), cut


def _header(n: int) -> str:
    return f"The last {n} executed notebook cell{'s' if n != 1 else ''}, oldest first:"
