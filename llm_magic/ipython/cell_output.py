"""A streaming answer in a cell's output: one display, updated in place and throttled, rendered
at the end with the package's one sanitizer; without a notebook front end, plain text on stdout."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ..rendering import CURSOR, MAX_UPDATES_PER_S, Throttle, answer_html


def in_notebook(shell: Any = None) -> bool:
    """True when output goes to a Jupyter front end (a kernel), not a terminal."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class StreamDisplay:
    """Shows a growing answer. ``mode``: "notebook" (a display handle) or "text" (stdout)."""

    def __init__(
        self,
        mode: str = "auto",
        max_updates_per_s: float = MAX_UPDATES_PER_S,
        out: TextIO | None = None,
        markdown: bool = True,
    ):
        self.mode = ("notebook" if in_notebook() else "text") if mode == "auto" else mode
        self.markdown = markdown
        self.throttle = Throttle(max_updates_per_s)
        self.out = out
        self.text = ""
        self.n_updates = 0  # messages sent to the front end (interim + final)
        self._handle: Any = None

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
        if self.throttle.ready(now):
            self._send({"text/plain": self.text + CURSOR})
            self.throttle.sent(now=now)

    def _send(self, bundle: dict[str, str]) -> None:
        if self._handle is None:
            self.start()
        self._handle.update(bundle, raw=True)
        self.n_updates += 1

    def finish(self, marker: str | None = None, final_text: str | None = None) -> None:
        """Show the complete text, rendered in a notebook, with the partial-answer marker if any."""
        text = self.text if final_text is None else final_text
        if self.mode == "text":
            out = self._stdout()
            if final_text is not None and final_text != self.text:
                out.write(final_text[len(self.text) :] if final_text.startswith(self.text) else "\n" + final_text)
            out.write("\n")
            if marker:
                out.write(f"[{marker}]\n")
            out.flush()
            return
        bundle = {"text/plain": text + (f"\n\n[{marker}]" if marker else "")}
        if self.markdown:
            bundle["text/html"] = answer_html(text, marker)
        self._send(bundle)
