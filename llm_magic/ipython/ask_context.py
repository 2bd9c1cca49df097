"""What ``%%ask`` adds to a prompt from the notebook: ``{name}`` summaries within
``AskMagics.context_budget`` and ``--cells N``; and the one line under the answer that says what a
summary left out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..notebook_context import recent_cells
from ..summaries import Summary, summarize, trivial
from ..token_count import TokenCounter


def summarizer(budget: int, model: str | None) -> tuple[Callable[[Any], Summary], TokenCounter]:
    """``{name}`` → its text within ``budget`` tokens of ``model``. The tokenizer is looked up on
    this (the cell's) thread, once, and only when a value is large enough to need counting."""
    counter = TokenCounter(model)

    def run(value: Any) -> Summary:
        if not trivial(value, budget):
            counter.resolve()
        return summarize(value, budget=budget, count=counter)

    return run, counter


def add_cells(
    shell: Any, errors: dict[int, str], prompt: str, n: int, budget: int, count: TokenCounter, notes: list[str]
):
    """The prompt with the last ``n`` executed cells in front of it."""
    count.resolve()
    ns = shell.user_ns
    running = getattr(getattr(shell, "displayhook", None), "exec_result", None)  # this cell's ExecutionResult
    current = shell.execution_count
    if running is not None and getattr(getattr(running, "info", None), "store_history", False):
        current = running.execution_count or current  # IPython 9 counts the running cell before it runs
    block, kept, cut = recent_cells(
        ns.get("In") or [],
        ns.get("Out") or {},
        errors,
        current=current,
        n=n,
        budget=budget,
        count=count,
    )
    if cut:
        notes.append(f"--cells: {kept} of the last {n} cells fit")
    if not block:
        return prompt
    return f"{block}\n\n{prompt}"


def notes_line(notes: list[str], budget: int) -> str | None:
    """One short line: what the summaries left out, and how to send a value whole."""
    if not notes:
        return None
    shown = "; ".join(dict.fromkeys(notes))
    if len(shown) > 160:
        shown = shown[:159] + "…"
    return f"summarised to fit {budget:,} tokens each — {shown} ({{name!full}} sends a value whole)"
