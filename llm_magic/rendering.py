"""How an answer reaches a front end, for the cell output and the panel alike: one sanitizer
(model output is untrusted) and one throttle (the browser sees at most ~25 updates a second,
and always the final text)."""

from __future__ import annotations

import html
import time
from typing import Any

MAX_UPDATES_PER_S = 25  # the bound is 30; a margin for timer jitter
CURSOR = "▌"

_md: Any = None


def render_markdown(text: str) -> str:
    """Markdown → HTML for untrusted text: raw HTML is escaped (shown as text), images are not
    loaded, and ``javascript:``/``data:`` links are refused (markdown-it's link validation)."""
    global _md
    if _md is None:
        from markdown_it import MarkdownIt

        _md = (
            MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
            .enable(["table", "strikethrough"])
            .disable("image")
        )
    return str(_md.render(text))


def marker_html(marker: str) -> str:
    """The line under a partial answer (timeout, Stop, error, max_tokens), subdued."""
    return f'<hr><p class="llm-magic-marker"><em>{html.escape(marker)}</em></p>'


def answer_html(text: str, marker: str | None = None) -> str:
    """A finished answer: its Markdown rendered safely, and the partial-answer marker if any."""
    body = render_markdown(text) if text else ""
    return body + (marker_html(marker) if marker else "")


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
