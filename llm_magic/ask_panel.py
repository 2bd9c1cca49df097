"""``AskPanel``: an ipywidgets panel that streams an answer while the kernel stays free.

    panel = llm_magic.panel(max_tokens=256)      # or %llm panel; the class: llm_magic.ask_panel.AskPanel
    panel.ask("What is the capital of France?")  # what the Ask button does: returns at once
    panel.wait().finish_reason                   # (optional) block until it is done

Threading rules (ipywidgets, ipykernel): widgets are created and displayed on the main thread; the
request runs on the worker pool, whose threads only set trait values, under the panel's lock, batched
with ``hold_sync()``, and never print. The answer goes through ``rendering`` like the cell output
(safe Markdown, a ``Throttle``); the status line and the model list come from ``panel_models``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future
from typing import Any, TypeVar

import ipywidgets as widgets

from . import background, panel_models, request
from .answer import Answer
from .errors import ConfigError, LLMMagicError
from .images import Image, load_image
from .rendering import MAX_UPDATES_PER_S, Throttle
from .settings import current as current_settings

__all__ = ["AskPanel"]

_W = TypeVar("_W", bound=widgets.DOMWidget)
_PLACEHOLDER = "Ask the model… (the kernel stays free while it answers)"
_ASK, _STOP = "Start generating (the kernel stays free)", "Stop after the current token"
_CSS = (  # what layout traits can't say: a long word breaks, a long code line scrolls inside the answer
    "<style>.llm-magic-panel .widget-html-content{min-width:0;overflow-wrap:anywhere;line-height:1.45}"
    ".llm-magic-answer pre,.llm-magic-answer table{display:block;max-width:100%;overflow-x:auto}"
    ".llm-magic-answer pre{white-space:pre;word-break:normal;overflow-wrap:normal}</style>"
)


def _number(cls: type[_W], value: float | None, default: float, description: str, width: str) -> _W:
    """A numeric input showing ``value`` (``default`` when None), its label in full."""
    style = {"description_width": "initial"}
    value = default if value is None else value
    return cls(value=value, description=description, style=style, layout=widgets.Layout(width=width))


class AskPanel(widgets.VBox):
    """Prompt, model picker, options, Ask/Stop, a status line and the streaming answer.

    Public parts: ``prompt``, ``model`` (Dropdown), ``max_tokens``, ``timeout``, ``temperature``,
    ``image`` (FileUpload, shown for vision models), ``ask_button``, ``stop_button``, ``status``,
    ``answer_area``; ``answer`` (the latest ``Answer`` or None), ``running``, ``history`` (list of
    ``(prompt, Answer)``), ``n_updates`` (answer updates sent to the front end), ``n_status_updates``.
    """

    MAX_UPDATES_PER_S = MAX_UPDATES_PER_S
    TICK_S = 0.1  # trailing updates and the "loading (N s)" status while running
    IDLE_TICK_S = 0.5  # while the selected model loads and nothing runs
    OPTIONS = ("model", "prompt", "max_tokens", "timeout", "temperature")

    def __init__(
        self,
        *,
        model: str | None = None,
        prompt: str = "",
        max_tokens: int | None = None,
        timeout: float | None = None,
        temperature: float | None = None,
    ) -> None:
        s = current_settings()
        self._lock = threading.RLock()  # every trait change from a worker or the ticker goes under it
        self._closed, self._done, self._wake = False, threading.Event(), threading.Event()
        self._done.set()
        self._future: Future[Answer] | None = None
        self._ticker: threading.Thread | None = None
        # answer updates; status-only ones from the request ("reading the prompt N / M tokens")
        self._throttle, self._status_throttle = Throttle(self.MAX_UPDATES_PER_S), Throttle(self.MAX_UPDATES_PER_S)
        self._reset(None)
        self._status_is_model = True  # the status line shows the selected model's state (not an answer's)
        self.answer: Answer | None = None
        self.running = False
        self.history: list[tuple[str, Answer]] = []
        self.n_updates = self.n_status_updates = 0  # answer-area (interim + final) and status updates sent

        self._parts: list[Any] = []  # every widget of the panel, closed with it
        self._extra_model = model
        add, w, layout = self._add, widgets, widgets.Layout
        # no horizontal margin: 100% + the default 2 px each side overflowed the panel
        tall = layout(width="100%", max_width="100%", height="5em", margin="2px 0")
        wide = layout(width="auto", min_width="min(22em, 100%)", max_width="100%")  # a long path shrinks
        self.prompt = add("prompt", w.Textarea(value=prompt, placeholder=_PLACEHOLDER, layout=tall))
        choices = panel_models.model_choices(model)
        self.model = add("model", w.Dropdown(options=choices, description="model", layout=wide))
        if model is not None:
            self.model.value = model
        self.max_tokens = add("max-tokens", _number(w.IntText, max_tokens, s.max_tokens, "max tokens", "13em"))
        self.timeout = add("timeout", _number(w.FloatText, timeout, s.timeout, "timeout (s)", "12em"))
        self.temperature = add("temperature", _number(w.FloatText, temperature, s.temperature, "temperature", "11em"))
        self.temperature.step = 0.1
        self.ask_button = add("ask", w.Button(description="Ask", button_style="primary", icon="play", tooltip=_ASK))
        self.stop_button = add("stop", w.Button(description="Stop", button_style="warning", icon="stop", tooltip=_STOP))
        self.stop_button.disabled = True
        hidden = layout(display="none")  # the image upload is offered for vision models only
        self.image = add("image", w.FileUpload(accept="image/*", multiple=True, description="image", layout=hidden))
        self.status = add("status", w.HTML(value="", layout=layout(flex="1 1 14em", min_width="0")))
        self.answer_area = add("answer", w.HTML(layout=layout(max_height="30em", overflow="auto", padding="0 0.5em")))
        css = add("css", w.HTML(_CSS, layout=layout(display="none")))

        self.ask_button.on_click(lambda _b: self.ask())
        self.stop_button.on_click(lambda _b: self.stop())
        self.model.observe(lambda _c: self._idle_status(), names="value")
        self.model.observe(lambda _c: self._update_image_input(), names="value")
        options = [self.model, self.max_tokens, self.timeout, self.temperature, self.image]
        buttons = [self.ask_button, self.stop_button, self.status]
        wrap, wrap_centred = layout(flex_flow="row wrap"), layout(flex_flow="row wrap", align_items="center")
        self._rows: list[Any] = [w.HBox(options, layout=wrap), w.HBox(buttons, layout=wrap_centred)]
        full = layout(width="100%", max_width="100%")
        super().__init__([self.prompt, *self._rows, self.answer_area, css], layout=full)
        self.add_class("llm-magic-panel")
        self._update_image_input()
        self._idle_status()

    def _add(self, css: str, widget: _W) -> _W:
        widget.add_class(f"llm-magic-{css}")  # stable hooks for the browser test and user CSS
        self._parts.append(widget)
        return widget

    def _reset(self, stream: Any) -> None:
        """Forget the last run; ``stream`` is the next one (None: none)."""
        self._stream: Any = stream
        self._error: str | None = None
        self._pieces: list[str] = []  # the streamed text so far (appended by the worker)
        self._stopping = self._queued = False  # queued: the request was seen waiting for a busy model
        self._rendered_n = -1  # pieces in the answer area's current HTML

    @classmethod
    def show(cls, **defaults: Any) -> AskPanel:
        """Build a panel with these ``OPTIONS`` as defaults, ``display()`` it and return it."""
        from IPython.display import display

        if unknown := sorted(set(defaults) - set(cls.OPTIONS)):
            raise ConfigError(f"unknown panel option(s) {', '.join(unknown)}; valid: {', '.join(cls.OPTIONS)}")
        panel = cls(**defaults)
        display(panel)
        return panel

    # ---- public control ----------------------------------------------------------------------

    @property
    def future(self) -> Future[Answer] | None:
        """The running (or last) generation's future; it resolves to the ``Answer``."""
        return self._future

    @property
    def closed(self) -> bool:
        return self._closed

    def ask(self, prompt: str | None = None) -> Future[Answer] | None:
        """What the Ask button does: start a request with the panel's inputs and return at once; None
        when one runs, or on bad input (no model, a missing file, an empty prompt: said in the status line)."""
        if self.running or self._closed:
            return None
        if prompt is not None:
            self.prompt.value = prompt
        model, timeout, max_tokens = self.model.value or None, self.timeout.value, self.max_tokens.value
        try:
            if not self.prompt.value.strip():  # said here: the request's own message talks about cells
                raise ConfigError("the prompt is empty: type a question above")
            images = self.uploaded_images() if self.image.layout.display != "none" else []
            options = {"timeout": timeout, "max_tokens": max_tokens, "temperature": self.temperature.value}
            stream = request.Stream(self.prompt.value, model=model, images=images or None, **options)
        except LLMMagicError as exc:
            self._show_error(str(exc))
            return None
        return self.start(stream)

    def start(self, stream: Any) -> Future[Answer] | None:
        """Stream ``stream`` into the panel: a ``request.Stream`` (what Ask builds) or any object
        with ``consume(on_chunk) -> Answer``, ``stop(reason)`` and ``answer`` (``progress()``,
        ``model_name`` and ``prompt`` are used when present)."""
        if self.running or self._closed:
            return None
        if hasattr(stream, "defer_log"):
            stream.defer_log = True  # no log output from a worker thread: the panel shows the marker
        if getattr(stream, "on_status", False) is None:  # per prompt batch: "reading the prompt N / M tokens"
            stream.on_status = lambda _words: self._on_chunk(stream, None)
        with self._lock:
            self._reset(stream)
            self._status_is_model = False
            self.running = True
            self._done.clear()
            with self.ask_button.hold_sync(), self.stop_button.hold_sync():
                self.ask_button.disabled = True
                self.stop_button.disabled = False
            self._push(force=True)  # the cursor replaces the last answer (never an empty frame)
            self._throttle.reset()  # the first token goes out at once
            self._status_throttle.reset()
        try:
            self._future = background.run_in_background(
                stream,
                on_chunk=lambda chunk: self._on_chunk(stream, chunk),
                on_done=lambda answer, error: self._on_done(stream, answer, error),
            )
        except Exception as exc:  # noqa: BLE001 - e.g. the worker pool is shut down: shown in the panel
            self._on_done(stream, None, exc)
            return None
        self._ensure_ticker()
        return self._future

    def stop(self) -> None:
        """What the Stop button does: the generation ends within one token, ``cancelled``."""
        stream = self._stream
        if stream is not None:
            self._stopping = True
            stream.stop("cancelled")
            panel_models.stop_download(stream.spec)  # waiting for an hf: download: Stop stops it too
            self._wake.set()

    def wait(self, timeout: float | None = None) -> Answer | None:
        """Block until the current generation ends (from the main thread: the kernel waits too)."""
        self._done.wait(timeout)
        return self.answer

    def show_answer(self, answer: Answer | str) -> None:
        """Show a finished answer (say, one from ``history``) in the answer area."""
        answer = answer if isinstance(answer, Answer) else Answer(str(answer))
        with self._lock:
            self._set(self.answer_area, panel_models.answer_area_html(answer))

    def is_vision_model(self) -> bool:
        """Is the selected model a vision model (an alias with an ``mmproj``)?"""
        return panel_models.is_vision_model(self.model.value)

    def uploaded_images(self) -> list[Image]:
        """The images in the upload box, as ``llm_magic.images.Image`` (bad files raise a clear error)."""
        return [load_image(bytes(f["content"])) for f in self.image.value]

    def refresh_models(self) -> None:
        """Re-read the model list (aliases, loaded models, states) into the dropdown."""
        with self._lock:
            options = [] if self._closed else panel_models.model_choices(self._extra_model)
            if self._closed or list(self.model.options) == options:
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

    def _update_image_input(self) -> None:
        with self._lock:
            self.image.layout.display = "" if self.is_vision_model() else "none"

    # ---- worker-thread callbacks -------------------------------------------------------------

    def _on_chunk(self, stream: Any, chunk: str | None) -> None:
        """A text chunk, or None: a prompt batch (the status line). The generating thread never waits for the lock."""
        if stream is not self._stream:
            return
        if chunk is not None:
            self._pieces.append(chunk)
        throttle = self._throttle if chunk is not None else self._status_throttle
        # held back by the throttle, or the ticker is sending: the ticker (or the end) sends it
        if throttle.ready() and self._lock.acquire(blocking=False):
            try:
                self._push()
                if chunk is None:
                    self._status_throttle.sent()
            finally:
                self._lock.release()

    def _on_done(self, stream: Any, answer: Answer | None, error: BaseException | None) -> None:
        if error is not None or answer is None:
            answer = panel_models.failed_answer(stream, answer, error, panel_models.streamed_text(self._pieces))
        getattr(stream, "log_timeout", lambda: None)()  # INFO: where a timed-out answer's time went
        with self._lock:
            if stream is not self._stream:
                return
            self.answer = answer
            self.history.append((getattr(stream, "prompt", ""), answer))
            self._stream, self.running = None, False
            self._error = answer.error if answer.finish_reason == "error" and not answer.text else None
            if not self._closed:
                self._push(force=True, final=answer)
                with self.ask_button.hold_sync(), self.stop_button.hold_sync():
                    self.ask_button.disabled = False
                    self.stop_button.disabled = True
        self._refresh_quietly()  # a load may have happened or failed: the labels follow
        self._done.set()
        self._wake.set()

    # ---- rendering: the answer and the status line, as one batch ------------------------------

    def _push(self, force: bool = False, final: Answer | None = None) -> None:
        """Render and send the answer (if changed) and the status. Caller holds the lock."""
        if self._closed:
            return
        now = time.monotonic()
        if not force and not self._throttle.ready(now):
            return
        t0 = time.perf_counter()
        n = len(self._pieces)
        if final is not None:
            body = panel_models.answer_area_html(final)  # replaces the streamed HTML in one update
        elif n != self._rendered_n:
            body = panel_models.streamed_html(self._pieces[:n])  # the cursor alone before the first token
            self._rendered_n = n
        else:
            body = self.answer_area.value
        render_s = time.perf_counter() - t0
        with self.answer_area.hold_sync(), self.status.hold_sync():
            sent = self._set(self.answer_area, body)
            self._set(self.status, self._status_text(final))
        if sent:  # status-only pushes (loading, waiting) are bounded by the tick rate instead
            self._throttle.sent(render_s, now)

    def _set(self, widget: widgets.HTML, value: str) -> bool:
        """Send ``value`` if it is new; counted in ``n_updates`` (the answer) or ``n_status_updates``."""
        if value == widget.value:
            return False
        widget.value = value
        self.n_updates += widget is self.answer_area
        self.n_status_updates += widget is self.status
        return True

    def _show_error(self, message: str) -> None:
        with self._lock:
            self._error = message
            self._status_is_model = False
            self._set(self.status, self._status_text(None))

    def _status_text(self, final: Answer | None) -> str:
        if self._error and not self.running:
            return panel_models.status_html("✖", self._error, panel_models.RED)
        if final is not None:
            return panel_models.answer_status_html(final, self._queued)
        stream = self._stream
        if self.running and stream is not None:
            p = panel_models.progress_of(stream)
            self._queued = self._queued or (p is not None and p.phase == "queue")
            return panel_models.request_status_html(stream, len(self._pieces), self._stopping, p)
        return panel_models.model_status_html(self.model.value)

    def _idle_status(self) -> None:
        """The status line when nothing runs: the selected model's state (ticking while it loads)."""
        with self._lock:
            if self.running or self._closed:
                return
            self._error = None
            self._status_is_model = True
            self._set(self.status, panel_models.model_status_html(self.model.value))
        if panel_models.is_loading(self.model.value):
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
                if self.running:
                    self._push()  # trailing text, token counts, "loading (N s)"; throttled like chunks
                elif self._status_is_model and not self._error and not self._closed:
                    self._set(self.status, panel_models.model_status_html(self.model.value))
                if self._closed or not (self.running or panel_models.is_loading(self.model.value)):
                    if self._ticker is me:  # under the lock: _ensure_ticker then starts a new one
                        self._ticker = None
                    break
            self._wake.wait(self.TICK_S if self.running else self.IDLE_TICK_S)
            self._wake.clear()
        self._refresh_quietly()

    def _refresh_quietly(self) -> None:
        with contextlib.suppress(Exception):  # the labels are cosmetic; never fail a worker or the ticker
            self.refresh_models()
