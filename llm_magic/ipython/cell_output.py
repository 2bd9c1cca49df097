"""A streaming answer in a cell's output: one display, updated in place and throttled, rendered
while it streams by the same sanitizer as at the end (no jump between the two views); without a
notebook front end, plain text on stdout."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from ..rendering import (
    CELL_HTML_UPDATES_PER_S,
    CURSOR,
    MAX_UPDATES_PER_S,
    Throttle,
    about_lines,
    answer_html,
    answer_text,
    interim_html,
    meta_line,
    status_html,
)
from ..thinking import Thinking


def in_notebook(shell: Any = None) -> bool:
    """True when output goes to a Jupyter front end (a kernel), not a terminal."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class StreamDisplay:
    """Shows a growing answer. ``mode``: "notebook" (a display handle) or "text" (stdout).

    In a notebook every message is a whole bundle (never empty): with ``markdown`` the answer is
    HTML from ``rendering`` from the first display to the last (the cursor, a status, the growing
    answer, the final answer) with a ``text/plain`` fallback; without it, plain text throughout."""

    def __init__(
        self,
        mode: str = "auto",
        max_updates_per_s: float | None = None,  # default: 10/s rendering HTML, 25/s plain text
        out: TextIO | None = None,
        markdown: bool = True,
    ):
        self.mode = ("notebook" if in_notebook() else "text") if mode == "auto" else mode
        self.markdown = markdown
        if max_updates_per_s is None:
            max_updates_per_s = CELL_HTML_UPDATES_PER_S if markdown else MAX_UPDATES_PER_S
        self.throttle = Throttle(max_updates_per_s)
        self.out = out
        self.text = ""
        self.thinking = ""  # a reasoning model's thinking, streamed apart from the answer
        self._thinking_live = False
        self.n_updates = 0  # messages sent to the front end (interim + final)
        self._handle: Any = None
        self._status_kind: list[str] = []
        self._last: dict[str, str] | None = None

    def _stdout(self) -> TextIO:
        return self.out or sys.stdout

    def _interim(self) -> dict[str, str]:
        if self._thinking_live:
            bundle = {"text/plain": f"{meta_line('thinking')}\n{self.thinking}{CURSOR}"}
        else:
            bundle = {"text/plain": self.text + CURSOR}
        if self.markdown:
            thinking = self.thinking.strip()
            bundle["text/html"] = (
                interim_html(self.text, thinking, self._thinking_live) if thinking else interim_html(self.text)
            )
        return bundle

    def _status(self, message: str) -> dict[str, str]:
        bundle = {"text/plain": meta_line(message)}
        if self.markdown:
            bundle["text/html"] = status_html(message)
        return bundle

    def start(self, status: str | None = None) -> None:
        if self.mode == "notebook":
            from IPython.display import display

            bundle = self._status(status) if status else self._interim()
            self._handle = display(bundle, raw=True, display_id=True)
        elif status:
            self._stdout().write(f"{meta_line(status)}\n")
            self._stdout().flush()

    def status(self, message: str) -> None:
        """Shown before the first token ('waiting for the model to load', 'reading the prompt
        1,024 / 4,461 tokens'), throttled like the answer itself."""
        if self.mode == "notebook" and self._handle is not None and not self.text and not self.thinking:
            now = time.monotonic()
            kind = message.split(" ", 2)[:2]  # "waiting for", "reading the": a new kind goes out at once
            if kind != self._status_kind:
                self._status_kind = kind
                self.throttle.reset()
            if self.throttle.ready(now):
                self._send(self._status(message))
                self.throttle.sent(now=now)

    def add(self, chunk: str) -> None:
        first = not self.text and not self.thinking
        thinking = type(chunk) is Thinking
        if self.mode == "text":
            out = self._stdout()
            if thinking and not self._thinking_live:
                out.write(f"{meta_line('thinking')}\n")
            elif not thinking and self._thinking_live:
                out.write(f"\n{meta_line('end of thinking')}\n\n")
            out.write(chunk)
            out.flush()
        if thinking:
            self.thinking += chunk
            self._thinking_live = True
        else:
            self.text += chunk
            self._thinking_live = False
        if self.mode == "text":
            return
        if first:
            self.throttle.reset()  # the first token goes out at once, even right after a status
        now = time.monotonic()
        if self.throttle.ready(now):
            t0 = time.perf_counter()
            self._send(self._interim())
            self.throttle.sent(render_s=time.perf_counter() - t0, now=now)  # a long answer: fewer updates

    def _send(self, bundle: dict[str, str], metadata: dict[str, Any] | None = None) -> None:
        if self._handle is None:
            self.start()
        if metadata is None:
            self._handle.update(bundle, raw=True)
        else:
            self._handle.update(bundle, raw=True, metadata=metadata)
        self._last = bundle
        self.n_updates += 1

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Send the final bundle again with new output metadata (provenance completed later)."""
        if self.mode == "notebook" and self._last is not None:
            self._send(self._last, metadata)

    def finish(
        self,
        marker: str | None = None,
        final_text: str | None = None,
        note: str | Iterable[str] | None = None,
        metadata: dict[str, Any] | None = None,
        thinking: str | None = None,
        thinking_tokens: int = 0,
    ) -> None:
        """Show the complete text (rendered in a notebook; "empty answer" if there is nothing to
        see) after the thinking folded away, then the partial-answer marker and the notes if any,
        each on a line of its own. ``metadata``: the output's metadata in a notebook
        (``{"llm_magic": provenance}``)."""
        text = self.text if final_text is None else final_text
        thought = (self.thinking if thinking is None else thinking).strip()
        if self.mode == "notebook":
            bundle = {"text/plain": answer_text(text, marker, note, thinking_tokens if thought else 0)}
            if self.markdown:
                bundle["text/html"] = answer_html(text, marker, note, thought, thinking_tokens)
            self._send(bundle, metadata)
            return
        out = self._stdout()
        if final_text is not None and final_text != self.text:
            out.write(final_text[len(self.text) :] if final_text.startswith(self.text) else "\n" + final_text)
        if text:
            out.write("\n")
        out.write("".join(f"{line}\n" for line in about_lines(text, marker, note)))  # any file-like: write only
        out.flush()
