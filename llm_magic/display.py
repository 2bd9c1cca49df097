"""Render a token stream into a notebook output (one display, updated in place, throttled) or,
without a notebook front end, as plain text on stdout.

Model output is untrusted: the final Markdown has raw HTML escaped (outside code) and
``javascript:`` links neutralised, so an answer can't inject markup into the page.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, TextIO

# At most this many interim updates per second reach the front end; the final text always does.
MAX_UPDATES_PER_S = 25
CURSOR = "▌"

_FENCE = re.compile(r"(```.*?(?:```|$)|~~~.*?(?:~~~|$)|`[^`\n]*`)", re.S)


def safe_markdown(text: str) -> str:
    """Escape raw HTML in model output, leaving code spans and fenced blocks as they are."""
    parts = _FENCE.split(text)
    for i in range(0, len(parts), 2):  # even indexes are outside code
        part = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts[i] = re.sub(r"(?i)\]\(\s*javascript:", "](#blocked:", part)
    return "".join(parts)


def in_notebook(shell: Any = None) -> bool:
    """True when output goes to a Jupyter front end (a kernel), not a terminal."""
    if shell is None:
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:
            return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class StreamDisplay:
    """Shows a growing answer. ``mode``: "notebook" (display handle) or "text" (stdout)."""

    def __init__(self, mode: str = "auto",
                 max_updates_per_s: float = MAX_UPDATES_PER_S, out: TextIO | None = None, markdown: bool = True):
        self.mode = ("notebook" if in_notebook() else "text") if mode == "auto" else mode
        self.markdown = markdown
        self.interval = 1.0 / max_updates_per_s
        self.out = out
        self.text = ""
        self.n_updates = 0  # messages sent to the front end (interim + final)
        self._last = 0.0
        self._handle = None
        self._dirty = False

    def _stdout(self) -> TextIO:
        return self.out or sys.stdout

    def start(self, status: str | None = None) -> None:
        if self.mode == "notebook":
            from IPython.display import display

            self._handle = display({"text/plain": status or CURSOR}, raw=True, display_id=True)
        elif status:
            self._stdout().write(f"[{status}]\n")
            self._stdout().flush()

    def status(self, message: str) -> None:
        """Shown before the first token (e.g. 'waiting for the model to load')."""
        if self.mode == "notebook" and self._handle is not None and not self.text:
            self._handle.update({"text/plain": f"[{message}]"}, raw=True)
            self.n_updates += 1

    def add(self, chunk: str) -> None:
        self.text += chunk
        if self.mode == "text":
            out = self._stdout()
            out.write(chunk)
            out.flush()
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._send({"text/plain": self.text + CURSOR})
            self._dirty = False
        else:
            self._dirty = True

    def _send(self, bundle: dict) -> None:
        if self._handle is None:
            self.start()
        self._handle.update(bundle, raw=True)
        self.n_updates += 1

    def finish(self, marker: str | None = None, final_text: str | None = None) -> None:
        """Show the complete text, as Markdown in a notebook, with the partial-answer marker if any."""
        text = self.text if final_text is None else final_text
        if self.mode == "text":
            out = self._stdout()
            if final_text is not None and final_text != self.text:
                out.write(final_text[len(self.text):] if final_text.startswith(self.text) else "\n" + final_text)
            out.write("\n")
            if marker:
                out.write(f"[{marker}]\n")
            out.flush()
            return
        plain = text + (f"\n\n[{marker}]" if marker else "")
        bundle = {"text/plain": plain}
        if self.markdown:
            bundle["text/markdown"] = safe_markdown(text) + (f"\n\n---\n*{safe_markdown(marker)}*" if marker else "")
        self._send(bundle)
