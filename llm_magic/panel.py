"""``AskPanel``: an ipywidgets panel that streams an answer while the kernel stays free.

    panel = llm_magic.panel(max_tokens=256)     # or %llm panel
    panel.prompt.value = "What is the capital of France?"
    panel.ask_button.click()                      # returns at once; the answer streams into the panel
    panel.wait().finish_reason                    # (optional) block until it is done

The generation runs on the worker pool (``generation.run_in_background``), so the click handler
returns at once and other cells keep running. Threading rules (ipywidgets, ipykernel): every widget
is created and displayed on the main thread; worker threads only set trait values, under one lock
per panel, batched with ``hold_sync()``; nothing here prints or uses ``with output:`` from a worker.

What reaches the front end is throttled: at most ``MAX_UPDATES_PER_S`` answer updates per second
(fewer when rendering a long answer gets expensive), and the final text always. ``n_updates``
counts them. Model output is untrusted: it is rendered with markdown-it-py with raw HTML disabled,
so ``<script>`` or ``<img onerror=...>`` in an answer shows as text.
"""

from __future__ import annotations

import html
import os
import sys
import threading
import types
import time
from concurrent.futures import Future
from typing import Any, Callable

import ipywidgets as widgets

from . import config, generation
from .cache import FAILED, LOADING, READY, get_cache
from .errors import LLMMagicError
from .generation import Answer

__all__ = ["AskPanel", "render_markdown", "model_choices"]

CURSOR = "▌"

_md = None


def render_markdown(text: str) -> str:
    """Markdown → HTML for untrusted text: raw HTML is escaped (shown as text), images are not
    loaded, and ``javascript:``/``data:`` links are refused (markdown-it's link validation)."""
    global _md
    if _md is None:
        from markdown_it import MarkdownIt

        _md = (MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
               .enable(["table", "strikethrough"]).disable("image"))
    return _md.render(text)


# ---- the model list -------------------------------------------------------------------------

def _entry_for(spec) -> Any:
    cache = get_cache()
    entry = cache.entry(spec)
    if entry is None:
        entry = next((e for e in cache.entries() if e.spec.path == spec.path), None)
    return entry


def _state_of(name: str) -> tuple[str, Any, str | None]:
    """(state, entry, error) of the model ``name``: state is ready/loading/failed/not loaded/missing."""
    try:
        spec = config.resolve(name)
    except LLMMagicError as exc:
        return "missing", None, str(exc)
    entry = _entry_for(spec)
    if entry is None:
        return "not loaded", None, None
    if entry.state == FAILED:
        return "failed", entry, entry.error
    if entry.state in (READY, LOADING):
        return entry.state, entry, None
    return "not loaded", entry, None


def model_choices(extra: str | None = None) -> list[tuple[str, str]]:
    """Dropdown options ``(label, value)``: ``extra`` (a model passed to the panel), the default
    model, configured aliases and loaded models, each once, labelled with its state. ``value`` is
    what ``Stream(model=...)`` takes: an alias or a path."""
    aliases = config.settings.models
    default = config.default_model_name()
    candidates: list[str] = []
    if extra:
        candidates.append(extra)
    if default:
        candidates.append(default)
    candidates.extend(aliases)
    candidates.extend(e.spec.name if e.spec.name in aliases else e.spec.path for e in get_cache().entries())
    out: list[tuple[str, str]] = []
    seen: set = set()
    for value in candidates:
        try:
            spec = config.resolve(value)
            key, shown = spec.key, spec.display_name  # an alias and its path are one cache entry
            if value in aliases:
                shown = f"{value} ({os.path.basename(spec.path)})"
        except LLMMagicError:
            key, shown = value, value
        if key in seen:
            continue
        seen.add(key)
        prefix = "default · " if value == default else ""
        out.append((f"{prefix}{shown} — {_state_of(value)[0]}", value))
    return out


# ---- the panel ------------------------------------------------------------------------------

class AskPanel(widgets.VBox):
    """Prompt, model picker, options, Ask/Stop, a status line and the streaming answer.

    Public parts: ``prompt`` (Textarea), ``model`` (Dropdown), ``max_tokens``, ``timeout``,
    ``temperature`` (inputs), ``image`` (FileUpload, shown for vision models), ``ask_button``, ``stop_button``, ``status`` and ``answer_area``
    (HTML), ``answer`` (the latest ``Answer`` or None), ``running``, ``history`` (list of
    ``(prompt, Answer)``), ``n_updates`` (answer updates sent to the front end).
    """

    MAX_UPDATES_PER_S = 25  # the bound is 30; a margin for timer jitter
    TICK_S = 0.1  # trailing updates and the "loading (N s)" status while running
    IDLE_TICK_S = 0.5  # while the selected model loads and nothing runs

    def __init__(self, *, model: str | None = None, prompt: str = "", max_tokens: int | None = None,
                 timeout: float | None = None, temperature: float | None = None):
        s = config.settings
        self._lock = threading.RLock()  # every trait change from a worker or the ticker goes under it
        self._closed = False
        self._stream: Any = None
        self._future: Future | None = None
        self._done = threading.Event()
        self._done.set()
        self._ticker: threading.Thread | None = None
        self._wake = threading.Event()
        self._error: str | None = None
        self._pieces: list[str] = []
        self._n_chunks = 0
        self._t_start = 0.0
        self._t_first: float | None = None
        self._t_last: float | None = None
        self._dirty = False
        self._next_send = 0.0
        self._stopping = False
        self._rendered_n = -1  # chunks in the answer area's current HTML
        self._status_is_model = True  # the status line shows the selected model's state (not an answer's)

        self.answer: Answer | None = None
        self.running = False
        self.history: list[tuple[str, Answer]] = []
        self.n_updates = 0  # answer-area updates sent (interim + final)
        self.n_status_updates = 0

        self.prompt = widgets.Textarea(value=prompt, placeholder="Ask the model… (the kernel stays free while it answers)",
                                       layout=widgets.Layout(width="100%", height="5em"))
        self.prompt.add_class("llm-magic-prompt")
        self._extra_model = model
        options = model_choices(model)
        self.model = widgets.Dropdown(options=options, description="model",
                                      layout=widgets.Layout(width="auto", min_width="22em"))
        if model is not None:
            self.model.value = model
        self.model.add_class("llm-magic-model")
        narrow = {"description_width": "initial"}
        self.max_tokens = widgets.IntText(value=s.max_tokens if max_tokens is None else max_tokens,
                                          description="max tokens", style=narrow,
                                          layout=widgets.Layout(width="13em"))
        self.max_tokens.add_class("llm-magic-max-tokens")
        self.timeout = widgets.FloatText(value=s.timeout if timeout is None else timeout, description="timeout (s)",
                                         style=narrow, layout=widgets.Layout(width="12em"))
        self.timeout.add_class("llm-magic-timeout")
        self.temperature = widgets.FloatText(value=s.temperature if temperature is None else temperature,
                                             description="temperature", style=narrow, step=0.1,
                                             layout=widgets.Layout(width="11em"))
        self.temperature.add_class("llm-magic-temperature")
        self.ask_button = widgets.Button(description="Ask", button_style="primary", icon="play",
                                         tooltip="Start generating (the kernel stays free)")
        self.ask_button.add_class("llm-magic-ask")
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop", disabled=True,
                                          tooltip="Stop after the current token")
        self.stop_button.add_class("llm-magic-stop")
        # offered only when the selected model is a vision model (issue 6)
        self.image = widgets.FileUpload(accept="image/*", multiple=True, description="image",
                                        layout=widgets.Layout(display="none"))
        self.image.add_class("llm-magic-image")
        self.status = widgets.HTML(value="")
        self.status.add_class("llm-magic-status")
        self.answer_area = widgets.HTML(value="", layout=widgets.Layout(max_height="30em", overflow="auto",
                                                                          padding="0 0.5em"))
        self.answer_area.add_class("llm-magic-answer")

        self.ask_button.on_click(lambda _b: self.ask())
        self.stop_button.on_click(lambda _b: self.stop())
        self.model.observe(lambda _c: self._idle_status(), names="value")
        self.model.observe(lambda _c: self._update_image_input(), names="value")

        self._parts = [self.prompt, self.model, self.max_tokens, self.timeout, self.temperature,
                       self.ask_button, self.stop_button, self.status, self.answer_area]
        options_row = widgets.HBox([self.model, self.max_tokens, self.timeout, self.temperature, self.image],
                                   layout=widgets.Layout(flex_flow="row wrap"))
        buttons_row = widgets.HBox([self.ask_button, self.stop_button, self.status],
                                   layout=widgets.Layout(align_items="center"))
        self._rows = [options_row, buttons_row]
        super().__init__([self.prompt, options_row, buttons_row, self.answer_area])
        self.add_class("llm-magic-panel")
        self._update_image_input()
        self._idle_status()

    @classmethod
    def show(cls, **defaults: Any) -> "AskPanel":
        """Build a panel, ``display()`` it and return it. ``defaults``: ``model``, ``prompt``,
        ``max_tokens``, ``timeout``, ``temperature``."""
        from IPython.display import display

        valid = ("model", "prompt", "max_tokens", "timeout", "temperature")
        unknown = sorted(set(defaults) - set(valid))
        if unknown:
            from .errors import ConfigError

            raise ConfigError(f"unknown panel option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        panel = cls(**defaults)
        display(panel)
        return panel

    # ---- public control ----------------------------------------------------------------------

    @property
    def future(self) -> Future | None:
        """The running (or last) generation's future; it resolves to the ``Answer``."""
        return self._future

    def ask(self, prompt: str | None = None) -> Future | None:
        """What the Ask button does: start a generation with the panel's inputs and return at once.

        Bad input (no model, a missing file, a zero timeout, an empty prompt) is shown in the
        status line; returns None then, or when a generation is already running."""
        if self.running or self._closed:
            return None
        if prompt is not None:
            self.prompt.value = prompt
        try:
            images = self.uploaded_images() if self.image.layout.display != "none" else []
            stream = generation.Stream(
                self.prompt.value, model=self.model.value or None, timeout=self.timeout.value,
                max_tokens=self.max_tokens.value, temperature=self.temperature.value, images=images or None,
            )
        except LLMMagicError as exc:
            self._show_error(str(exc))
            return None
        return self.start(stream)

    def start(self, stream: Any) -> Future | None:
        """Stream ``stream`` into the panel: a ``generation.Stream`` (what Ask builds) or any object
        with ``consume(on_chunk) -> Answer``, ``stop(reason)`` and ``answer``."""
        if self.running or self._closed:
            return None
        if hasattr(stream, "defer_log"):
            stream.defer_log = True  # no log output from a worker thread: the panel shows the marker
        with self._lock:
            self._stream = stream
            self._error = None
            self._pieces = []
            self._n_chunks = 0
            self._t_start = getattr(stream, "started", None) or time.monotonic()
            self._t_first = self._t_last = None
            self._dirty = False
            self._next_send = 0.0
            self._stopping = False
            self._rendered_n = -1
            self._status_is_model = False
            self.running = True
            self._done.clear()
            with self.ask_button.hold_sync(), self.stop_button.hold_sync():
                self.ask_button.disabled = True
                self.stop_button.disabled = False
            self._push(force=True)
            self._next_send = 0.0  # that cleared the last answer: the first token goes out at once
        try:
            self._future = generation.run_in_background(
                stream, on_chunk=lambda chunk: self._on_chunk(stream, chunk),
                on_done=lambda answer, error: self._on_done(stream, answer, error))
        except Exception as exc:  # e.g. the worker pool is shut down
            self._on_done(stream, None, exc)
            return None
        self._ensure_ticker()
        return self._future

    def is_vision_model(self) -> bool:
        """Is the selected model a vision model (an alias with an ``mmproj``)?"""
        name = self.model.value or config.settings.vision_model or ""
        return bool(config.settings.models.get(name, {}).get("mmproj"))

    def uploaded_images(self) -> list:
        """The images in the upload box, as ``llm_magic.images.Image`` (bad files raise a clear error)."""
        from .images import load_image

        return [load_image(bytes(f["content"])) for f in self.image.value]

    def _update_image_input(self) -> None:
        with self._lock:
            self.image.layout.display = "" if self.is_vision_model() else "none"

    def stop(self) -> None:
        """What the Stop button does: the generation ends within one token, ``cancelled``."""
        stream = self._stream
        if stream is not None:
            self._stopping = True
            stream.stop("cancelled")
            self._wake.set()

    def wait(self, timeout: float | None = None) -> Answer | None:
        """Block until the current generation ends (from the main thread: the kernel waits too)."""
        self._done.wait(timeout)
        return self.answer

    def show_answer(self, answer: Answer | str) -> None:
        """Show a finished answer (say, one from ``history``) in the answer area."""
        if not isinstance(answer, Answer):
            answer = Answer(str(answer))
        with self._lock:
            self._set_answer_html(self._final_html(answer))

    def refresh_models(self) -> None:
        """Re-read the model list (aliases, loaded models, states) into the dropdown."""
        with self._lock:
            if self._closed:
                return
            options = model_choices(self._extra_model)
            if list(self.model.options) == options:
                return
            current = self.model.value
            with self.model.hold_sync():
                self.model.options = options
                if current in [v for _, v in options]:
                    self.model.value = current

    def close(self) -> None:
        """Close the panel; a running generation is stopped (within one token)."""
        if getattr(self, "_closed", True):  # also when __init__ failed half-way (Widget.__del__ calls this)
            return
        self.stop()
        with self._lock:
            self._closed = True
        self._wake.set()
        for w in getattr(self, "_parts", []) + getattr(self, "_rows", []) + [self]:
            for sub in (getattr(w, "layout", None), getattr(w, "style", None)):
                if isinstance(sub, widgets.Widget):
                    sub.close()  # Widget.close() leaves them registered (and alive) otherwise
            if w is not self:
                w.close()
        super().close()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- worker-thread callbacks -------------------------------------------------------------

    def _on_chunk(self, stream: Any, chunk: str) -> None:
        if stream is not self._stream:
            return
        now = time.monotonic()
        self._pieces.append(chunk)
        self._n_chunks += 1
        if self._t_first is None:
            self._t_first = now
        self._t_last = now
        if now < self._next_send:
            self._dirty = True
            return
        # never make the generating thread wait for the ticker: if it is sending, it sends this too
        if self._lock.acquire(blocking=False):
            try:
                self._push()
            finally:
                self._lock.release()
        else:
            self._dirty = True

    def _on_done(self, stream: Any, answer: Answer | None, error: BaseException | None) -> None:
        if error is not None:
            message = str(error) if isinstance(error, LLMMagicError) else f"{type(error).__name__}: {error}"
            text = answer.text if answer is not None else "".join(self._pieces)
            meta = answer.__dict__.copy() if answer is not None else {}
            meta.update(finish_reason="error", error=message)
            meta.setdefault("model", getattr(stream, "model_name", ""))
            answer = Answer(text, **meta)
        elif answer is None:
            answer = Answer("".join(self._pieces), finish_reason="error", error="the generation ended without an answer")
        with self._lock:
            if stream is not self._stream:
                return
            self.answer = answer
            self.history.append((getattr(stream, "prompt", ""), answer))
            self._stream = None
            self.running = False
            self._error = answer.error if answer.finish_reason == "error" and not answer.text else None
            if not self._closed:
                self._push(force=True, final=answer)
                with self.ask_button.hold_sync(), self.stop_button.hold_sync():
                    self.ask_button.disabled = False
                    self.stop_button.disabled = True
        try:
            self.refresh_models()  # a load may have happened or failed: the labels follow
        except Exception:  # the labels are cosmetic; never fail the end of a generation on them
            pass
        self._done.set()
        self._wake.set()

    # ---- rendering ---------------------------------------------------------------------------

    def _push(self, force: bool = False, final: Answer | None = None) -> None:
        """Render and send the answer (if changed) and the status, as one batch. Caller holds the lock."""
        if self._closed:
            return
        now = time.monotonic()
        if not force and now < self._next_send:
            self._dirty = True
            return
        self._dirty = False
        t0 = time.perf_counter()
        n = self._n_chunks
        if final is not None:
            body = self._final_html(final)
        elif n != self._rendered_n:
            body = render_markdown("".join(self._pieces[:n]) + CURSOR) if n else ""
            self._rendered_n = n
        else:
            body = self.answer_area.value
        render_s = time.perf_counter() - t0
        with self.answer_area.hold_sync(), self.status.hold_sync():
            sent = self._set_answer_html(body)
            self._set_status(self._status_text(final))
        if sent:  # status-only pushes (loading, waiting) are bounded by the tick rate instead
            # long answers get expensive to render and ship: keep that under ~1/5 of the time
            self._next_send = now + max(1.0 / self.MAX_UPDATES_PER_S, 5 * render_s)

    def _set_answer_html(self, body: str) -> bool:
        if body == self.answer_area.value:
            return False
        self.answer_area.value = body
        self.n_updates += 1
        return True

    def _set_status(self, text: str) -> None:
        if text != self.status.value:
            self.status.value = text
            self.n_status_updates += 1

    @staticmethod
    def _final_html(answer: Answer) -> str:
        body = render_markdown(answer.text) if answer.text else ""
        marker = answer.marker()
        if marker:
            body += f'<hr><p class="llm-magic-marker"><em>{html.escape(marker)}</em></p>'
        return body

    def _show_error(self, message: str) -> None:
        with self._lock:
            self._error = message
            self._status_is_model = False
            self._set_status(self._status_text(None))

    def _status_text(self, final: Answer | None) -> str:
        def line(icon: str, text: str, color: str = "inherit") -> str:
            return f'<span style="color:{color}">{html.escape(icon + " " + text)}</span>'

        if self._error and not self.running:
            return line("✖", self._error, "#c62828")
        stream = self._stream
        if final is not None:
            a = final
            parts = [a.model or "model", f"{a.n_tokens} tokens"]
            if a.tokens_per_s:
                parts.append(f"{a.tokens_per_s:.0f} tokens/s")
            if a.ttft_s is not None:
                parts.append(f"first token {a.ttft_s:.2f} s")
            parts.append(f"finish: {a.finish_reason}")
            if a.finish_reason == "error":
                parts.append(a.error or "")
                return line("✖", " · ".join(parts), "#c62828")
            color = {"stop": "#2e7d32", "length": "#2e7d32"}.get(a.finish_reason, "#ef6c00")
            return line("●", " · ".join(parts), color)
        if self.running and stream is not None:
            now = time.monotonic()
            name = getattr(stream, "model_name", "model")
            if self._stopping:
                return line("◌", f"{name}: stopping…", "#ef6c00")
            if self._n_chunks:
                parts = [f"{name}: generating", f"{self._n_chunks} tokens"]
                if self._t_last and self._t_first and self._t_last > self._t_first and self._n_chunks > 1:
                    parts.append(f"{(self._n_chunks - 1) / (self._t_last - self._t_first):.0f} tokens/s")
                parts.append(f"first token {self._t_first - self._t_start:.2f} s")
                return line("◌", " · ".join(parts), "#1565c0")
            phase = getattr(stream, "phase", "start")
            entry = getattr(stream, "entry", None)
            if phase in ("start", "load"):
                spec = getattr(stream, "spec", None)
                loading_for = None
                if spec is not None:
                    e = _entry_for(spec)
                    if e is not None and e.state == LOADING:
                        loading_for = e.loading_for()
                if loading_for is None:
                    loading_for = now - self._t_start
                return line("◌", f"{name}: loading ({loading_for:.0f} s)", "#1565c0")
            if phase == "lock" or (entry is not None and phase == "start"):
                return line("◌", f"{name}: waiting for the model (busy with another request, {now - self._t_start:.0f} s)",
                            "#1565c0")
            if phase == "prompt":
                return line("◌", f"{name}: reading the prompt…", "#1565c0")
            return line("◌", f"{name}: generating…", "#1565c0")
        return self._model_status_text()

    def _model_status_text(self) -> str:
        name = self.model.value
        if not name:
            from .config import _no_model_message

            return f'<span style="color:#c62828">{html.escape("✖ " + _no_model_message())}</span>'
        state, entry, error = _state_of(name)
        label = entry.name if entry is not None else name
        if state == "loading":
            text, color = f"{label}: loading ({entry.loading_for():.0f} s)", "#1565c0"
        elif state == "failed":
            text, color = f"{label}: failed — {error}", "#c62828"
        elif state == "missing":
            text, color = f"{error}", "#c62828"
        elif state == "ready":
            text, color = f"{label}: ready", "#2e7d32"
        else:
            text, color = f"{label}: not loaded (loads on the first Ask)", "inherit"
        icon = {"failed": "✖", "missing": "✖", "ready": "●"}.get(state, "◌")
        return f'<span style="color:{color}">{html.escape(icon + " " + text)}</span>'

    def _idle_status(self) -> None:
        """The status line when nothing runs: the selected model's state (ticking while it loads)."""
        with self._lock:
            if self.running or self._closed:
                return
            self._error = None
            self._status_is_model = True
            self._set_status(self._model_status_text())
        if self.model.value and _state_of(self.model.value)[0] == "loading":
            self._ensure_ticker()

    # ---- the ticker: trailing updates, elapsed seconds -----------------------------------------

    def _ensure_ticker(self) -> None:
        with self._lock:
            if self._ticker is not None and self._ticker.is_alive():
                self._wake.set()
                return
            self._ticker = threading.Thread(target=self._tick_loop, name="llm_magic-panel-tick", daemon=True)
            self._ticker.start()

    def _tick_loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                if self._closed:
                    if self._ticker is me:
                        self._ticker = None
                    return
                if self.running:
                    self._push()  # trailing text, token counts, "loading (N s)"; throttled like chunks
                    period = self.TICK_S
                else:
                    loading = bool(self.model.value) and _state_of(self.model.value)[0] == "loading"
                    if self._status_is_model and not self._error:
                        self._set_status(self._model_status_text())
                    if not loading:
                        if self._ticker is me:
                            self._ticker = None
                        break
                    period = self.IDLE_TICK_S
            self._wake.wait(period)
            self._wake.clear()
        self._refresh_if_changed()

    def _refresh_if_changed(self) -> None:
        try:
            self.refresh_models()
        except Exception:
            pass


class _CallableModule(types.ModuleType):
    """Importing ``llm_magic.panel`` (this module) makes the package attribute ``llm_magic.panel``
    the module, shadowing the ``llm_magic.panel()`` function; so the module is callable too, and
    ``llm_magic.panel(**defaults)`` (and ``%llm panel``) work however it was imported."""

    def __call__(self, **defaults: Any) -> AskPanel:
        """Display an ``AskPanel`` and return it (see ``AskPanel.show``)."""
        return AskPanel.show(**defaults)


sys.modules[__name__].__class__ = _CallableModule
