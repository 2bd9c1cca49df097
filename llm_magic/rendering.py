"""How an answer reaches a front end, for the cell output and the panel alike: one sanitizer
(model output is untrusted), one form for the lines about an answer (its marker, notes, status),
and one throttle (the browser sees at most ~25 updates a second, and always the final text)."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from typing import Any

MAX_UPDATES_PER_S = 25  # the bound is 30; a margin for timer jitter
# A cell renders each interim update on the thread that generates (measured: 25 HTML updates/s cost
# ~1.5% of tokens/s on 2 cores, llama.cpp having just evicted the CPU caches): 10/s keeps it under 1%.
CELL_HTML_UPDATES_PER_S = 10
CURSOR = "▌"
EMPTY_ANSWER = "empty answer"
SUBDUED = "opacity:0.7"  # lines about the answer, not from the model: readable on light and dark themes
# a reasoning model's thinking: subdued, set off by a rule on the left (currentColor suits any theme)
THINKING_STYLE = "opacity:0.65;border-left:2px solid currentColor;padding-left:0.75em;margin:0 0 0.75em 0"

_md: Any = None


def render_markdown(text: str) -> str:
    """Markdown → HTML for untrusted text: raw HTML is escaped (shown as text), images are not
    loaded, and ``javascript:``/``data:`` links are refused (markdown-it's link validation).
    A single line break stays a line break (as the streamed text showed it)."""
    global _md
    if _md is None:
        from markdown_it import MarkdownIt

        options = {"html": False, "linkify": False, "typographer": False, "breaks": True}
        _md = MarkdownIt("commonmark", options).enable(["table", "strikethrough"]).disable("image")
    return str(_md.render(text))


def thinking_label(n_tokens: int = 0) -> str:
    return f"Thinking ({n_tokens} token{'s' if n_tokens != 1 else ''})" if n_tokens else "Thinking"


def thinking_html(thinking: str, live: bool = False, n_tokens: int = 0) -> str:
    """A reasoning model's thinking: while it streams, a subdued block with the cursor; once the
    answer begins, folded into a collapsed ``<details>``. The wrapper is ours, fixed; the thinking
    inside goes through the same sanitizer as the answer."""
    if live:
        return f'<div class="llm-magic-thinking" style="{THINKING_STYLE}">{render_markdown(thinking + CURSOR)}</div>'
    summary = html.escape(thinking_label(n_tokens))
    return (
        f'<details class="llm-magic-thinking" style="{THINKING_STYLE}"><summary>{summary}</summary>'
        f"{render_markdown(thinking)}</details>"
    )


def interim_html(text: str, thinking: str = "", thinking_live: bool = False) -> str:
    """A growing answer while it streams: the same renderer as the final view, with the cursor
    (in the thinking while the model still thinks)."""
    if not thinking:
        return render_markdown(text + CURSOR)
    if thinking_live:
        return thinking_html(thinking, live=True) + (render_markdown(text) if text.strip() else "")
    return thinking_html(thinking) + render_markdown(text + CURSOR)


def meta_line(words: str) -> str:
    """The one form of a line about the answer (marker, note, status), in plain text and HTML alike."""
    return f"[{words}]"


def _notes(note: str | Iterable[str] | None) -> list[str]:
    if note is None:
        return []
    return [note] if isinstance(note, str) else [n for n in note if n]


def shows_empty(text: str, marker: str | None) -> bool:
    """Say "empty answer"? When nothing visible came, unless the marker already says why (it
    stopped before any text came)."""
    return not text.strip() and (bool(text) or not marker)


def _subdued(css_class: str, words: str) -> str:
    return f'<p class="{css_class}" style="{SUBDUED}">{html.escape(meta_line(words))}</p>'


def status_html(words: str) -> str:
    """A status shown before the first token (loading, reading the prompt), subdued."""
    return _subdued("llm-magic-status", words)


def marker_html(marker: str) -> str:
    """The line under a partial answer (timeout, Stop, error, max_tokens), subdued."""
    return "<hr>" + _subdued("llm-magic-marker", marker)


def note_html(note: str) -> str:
    """A note about the answer (where a timed-out answer's time went, no code block), subdued."""
    return _subdued("llm-magic-note", note)


def answer_html(
    text: str,
    marker: str | None = None,
    note: str | Iterable[str] | None = None,
    thinking: str = "",
    thinking_tokens: int = 0,
) -> str:
    """A finished answer: the thinking folded away (a collapsed ``<details>``), its Markdown
    rendered safely ("empty answer" when there is nothing to see), then the partial-answer marker
    and any notes (e.g. ``Answer.time_report``)."""
    body = render_markdown(text) if text.strip() else ""
    if shows_empty(text, marker):
        body = _subdued("llm-magic-empty", EMPTY_ANSWER)
    if thinking:
        body = thinking_html(thinking, n_tokens=thinking_tokens) + body
    notes = _notes(note)
    if marker:
        body += marker_html(marker)
    elif notes and body:
        body += "<hr>"
    return body + "".join(note_html(n) for n in notes)


def about_lines(text: str, marker: str | None = None, note: str | Iterable[str] | None = None) -> list[str]:
    """The lines about an answer, in order and bracketed: "empty answer" when there is nothing to
    see, the partial-answer marker, the notes. The plain-text form of what ``answer_html`` adds."""
    words = ([EMPTY_ANSWER] if shows_empty(text, marker) else []) + ([marker] if marker else []) + _notes(note)
    return [meta_line(w) for w in words]


def answer_text(
    text: str, marker: str | None = None, note: str | Iterable[str] | None = None, thinking_tokens: int = 0
) -> str:
    """The plain-text form of ``answer_html``: (how long it thought,) the text, then the lines about it."""
    thought = meta_line(thinking_label(thinking_tokens).lower()) if thinking_tokens else ""
    return "\n\n".join(
        part for part in (thought, text if text.strip() else "", "\n".join(about_lines(text, marker, note))) if part
    )


class Throttle:
    """Decides when an interim update may go out: at most ``max_per_s`` a second, and less often
    when rendering gets expensive (rendering and shipping kept under ~1/5 of the time)."""

    def __init__(self, max_per_s: float = MAX_UPDATES_PER_S, cost_factor: float = 5.0):
        self.interval = 1.0 / max_per_s
        self.cost_factor = cost_factor
        self._next = 0.0
        self.pending = False  # an update was held back: send it at the next chance (or the end)

    def ready(self, now: float | None = None) -> bool:
        """May an update go out now? If not, remember that one is pending."""
        if (time.monotonic() if now is None else now) >= self._next:
            return True
        self.pending = True
        return False

    def sent(self, render_s: float = 0.0, now: float | None = None) -> None:
        """An update went out (it took ``render_s`` to render): hold the next one back."""
        now = time.monotonic() if now is None else now
        self.pending = False
        self._next = now + max(self.interval, self.cost_factor * render_s)

    def reset(self) -> None:
        """The next update goes out at once (e.g. the first token)."""
        self._next = 0.0
        self.pending = False
