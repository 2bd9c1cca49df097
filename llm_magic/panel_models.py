"""What the ask panel says about models and requests: which models the dropdown offers, the
state of each (ready, loading, failed, not loaded, missing), and the status line: the selected
model's state while nothing runs, the request's ``progress()`` while it runs, the answer's
numbers at the end (and the ``Answer`` of a run that raised). Pure functions of the cache, the
settings and the request: no widgets here.

Read-only: nothing here creates the model cache (``runtime.get().cache_if_open()``), so merely
showing a panel loads nothing and starts no thread.
"""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING, Any

from . import model_sources, runtime, specs
from .answer import Answer
from .cache_entry import FAILED, LOADING, READY, Entry
from .errors import LLMMagicError
from .rendering import answer_html, interim_html
from .settings import current as current_settings
from .specs import ModelSpec
from .thinking import Thinking, join

if TYPE_CHECKING:
    from .progress import Progress

__all__ = [
    "model_choices",
    "state_of",
    "entry_for",
    "is_loading",
    "model_status_html",
    "answer_status_html",
    "answer_area_html",
    "is_vision_model",
    "wait_parts",
    "request_status_html",
    "progress_of",
    "failed_answer",
    "downloading",
    "stop_download",
    "streamed_html",
    "streamed_text",
    "status_html",
    "BLUE",
    "GREEN",
    "ORANGE",
    "RED",
]

BLUE, GREEN, ORANGE, RED = "#1565c0", "#2e7d32", "#ef6c00", "#c62828"
MIN_WAIT_S = 0.05  # a shorter wait for a load is not worth a word in the status line


def status_html(icon: str, text: str, color: str = "inherit") -> str:
    """One status line: an icon and escaped text (error messages may quote model output). A long
    word (a path) breaks anywhere rather than widening the panel."""
    return f'<span style="color:{color};overflow-wrap:anywhere">{html.escape(icon + " " + text)}</span>'


def _loaded_entries() -> list[Entry]:
    cache = runtime.get().cache_if_open()
    return cache.entries() if cache is not None else []


def entry_for(spec: ModelSpec) -> Entry | None:
    """The cache entry of ``spec`` (or of another spec of the same file), if the cache has one."""
    cache = runtime.get().cache_if_open()
    if cache is None:
        return None
    entry = cache.entry(spec)
    if entry is None and spec.path:  # remote specs have no path to match on
        entry = next((e for e in cache.entries() if e.spec.path == spec.path), None)
    return entry


def state_of(name: str) -> tuple[str, Entry | None, str | None]:
    """(state, entry, error) of the model ``name``: state is ready/loading/failed/not loaded/missing."""
    try:
        spec = specs.resolve(name)
    except LLMMagicError as exc:
        return "missing", None, str(exc)
    entry = entry_for(spec)
    if entry is None:
        return "not loaded", None, None
    if entry.state == FAILED:
        return "failed", entry, entry.error
    if entry.state in (READY, LOADING):
        return entry.state, entry, None
    return "not loaded", entry, None


def is_vision_model(name: str | None) -> bool:
    """Is ``name`` (or, when empty, the configured vision model) an alias with an ``mmproj``?"""
    s = current_settings()
    return bool(s.aliases().get(name or s.vision_model or "", {}).get("mmproj"))


def is_loading(name: str | None) -> bool:
    """Is the model ``name`` loading right now?"""
    return bool(name) and state_of(name or "")[0] == LOADING


def model_choices(extra: str | None = None) -> list[tuple[str, str]]:
    """Dropdown options ``(label, value)``: ``extra`` (a model passed to the panel), the default
    model, configured and session aliases and loaded models, each once, labelled with its state.
    ``value`` is what ``Stream(model=...)`` takes: an alias or a path."""
    aliases = current_settings().aliases()
    default = specs.default_model_name()
    candidates: list[str] = []
    if extra:
        candidates.append(extra)
    if default:
        candidates.append(default)
    candidates.extend(aliases)
    candidates.extend(e.spec.name if e.spec.name in aliases else e.spec.path for e in _loaded_entries())
    out: list[tuple[str, str]] = []
    seen: set[object] = set()
    for value in candidates:
        key: object
        try:
            spec = specs.resolve(value)
            key, shown = spec.key, spec.display_name  # an alias and its path are one cache entry
            if value in aliases:
                base = os.path.basename(spec.path)  # empty for a remote server
                shown = f"{value} ({base})" if base else value
        except LLMMagicError:
            key, shown = value, value
        if key in seen:
            continue
        seen.add(key)
        prefix = "default · " if value == default else ""
        out.append((f"{prefix}{shown} — {state_of(value)[0]}", value))
    return out


def model_status_html(name: str | None) -> str:
    """The status line while nothing runs: the selected model's state (or why there is none)."""
    if not name:
        return status_html("✖", specs.no_model_message(), RED)
    state, entry, error = state_of(name)
    label = entry.name if entry is not None else name
    if state == "loading" and entry is not None:
        return status_html("◌", f"{label}: loading ({entry.loading_for():.0f} s)", BLUE)
    if state == "failed":
        return status_html("✖", f"{label}: failed — {error}", RED)
    if state == "missing":
        return status_html("✖", f"{error}", RED)
    if state == "ready":
        return status_html("●", f"{label}: ready{_on_gpu(entry)}", GREEN)
    return status_html("◌", f"{label}: not loaded (loads on the first Ask)")


def _on_gpu(entry: Entry | None) -> str:
    """`` on CUDA0 (NVIDIA H200), 19/19 layers`` for a model offloaded to a GPU; nothing on the CPU."""
    model = entry.model if entry is not None else None
    info = model.info() if model is not None else {}
    device = info.get("device")
    if not device or device == "CPU":
        return ""
    layers = f", {info['gpu_layers']} layers" if info.get("gpu_layers") else ""
    return f" on {device}{layers}"


def answer_area_html(a: Answer) -> str:
    """The answer area under a finished answer: the same renderer as while it streamed, the marker
    of a partial answer, and where a timed-out request's time went (``time_report``)."""
    notes = [n for n in (getattr(a, "time_report", None), *getattr(a, "notes", ())) if n]
    return answer_html(a.text, a.marker(), note=notes, thinking=a.thinking, thinking_tokens=a.thinking_tokens)


def answer_status_html(a: Answer, queued: bool = False) -> str:
    """The status line under a finished answer: model, tokens, speed, waits, first token, finish reason.

    "first token" counts from when the request got the model: the time spent waiting for a load
    (``load_wait_s``) and, when the panel saw the request ``queued`` behind another one, for the
    busy model are shown apart (the latter is what remains of ``ttft_s`` after the load wait and
    the prompt's evaluation, ``prompt_s``)."""
    parts = [a.model or "model", f"{a.n_tokens} tokens"]
    if a.tokens_per_s:
        parts.append(f"{a.tokens_per_s:.0f} tokens/s")
    parts.extend(wait_parts(a, queued))
    parts.append(f"finish: {a.finish_reason}")
    if a.finish_reason == "error":
        parts.append(a.error or "")
        return status_html("✖", " · ".join(parts), RED)
    return status_html("●", " · ".join(parts), GREEN if a.finish_reason in ("stop", "length") else ORANGE)


def wait_parts(a: Answer, queued: bool = False) -> list[str]:
    """``waited 2.1 s for the load``, ``waited 3.2 s for the model``, ``first token 0.05 s``
    (the first token counted from when the request got the model; they add up to ``ttft_s``)."""
    parts: list[str] = []
    load = a.load_wait_s or 0.0
    if load >= MIN_WAIT_S:
        parts.append(f"waited {load:.1f} s for the load")
    else:
        load = 0.0
    queue = a.queue_s if a.queue_s is not None else 0.0  # measured by the request
    if a.queue_s is None and queued and a.ttft_s is not None and a.prompt_s is not None:
        queue = max(0.0, a.ttft_s - a.prompt_s - load)  # an Answer from elsewhere: what remains of ttft_s
    if queue >= MIN_WAIT_S:
        parts.append(f"waited {queue:.1f} s for the model")
    if a.ttft_s is not None:
        parts.append(f"first token {max(0.0, a.ttft_s - load - queue):.2f} s")
    return parts


def progress_of(stream: Any) -> Progress | None:
    """``stream.progress()``, or None for a stream-like object without one (or whose one fails)."""
    progress = getattr(stream, "progress", None)
    if not callable(progress):
        return None
    try:
        p: Progress = progress()
    except Exception:  # noqa: BLE001 - a stream-like object's own progress(): cosmetic, never fatal
        return None
    return p


def request_status_html(stream: Any, n_pieces: int = 0, stopping: bool = False, p: Progress | None = None) -> str:
    """The status line while ``stream`` runs, from its ``progress()`` (phase, tokens, tokens/s),
    or from ``p`` when the caller has one already. The time to the first token is left to the
    final line, which shows it apart from any wait for a load or a busy model.

    A stream-like object without ``progress()`` gets a generic line counting the ``n_pieces``
    it has sent."""
    if p is None:
        p = progress_of(stream)
    name = p.model if p is not None else getattr(stream, "model_name", "model")
    if stopping or (p is not None and p.stopping):
        return status_html("◌", f"{name}: stopping…", ORANGE)
    if p is None:
        return status_html("◌", f"{name}: generating · {n_pieces} chunks" if n_pieces else f"{name}: generating…", BLUE)
    if p.n_tokens:
        parts = [f"{name}: generating", f"{p.n_tokens} tokens"]
        if p.tokens_per_s:
            parts.append(f"{p.tokens_per_s:.0f} tokens/s")
        return status_html("◌", " · ".join(parts), BLUE)
    if p.phase in ("start", "load"):
        download = downloading(getattr(stream, "spec", None))
        if download is not None:  # an hf: model not in the cache yet: how far its download is
            return status_html("◌", f"{name}: downloading {download.text()}", BLUE)
        loading = p.loading_s if p.loading_s is not None else p.elapsed_s
        return status_html("◌", f"{name}: loading ({loading:.0f} s)", BLUE)
    if p.phase == "queue":
        return status_html("◌", f"{name}: waiting for the model (busy with another request, {p.elapsed_s:.0f} s)", BLUE)
    if p.phase == "prompt":
        if (
            p.prompt_tokens and p.prompt_done
        ):  # batch by batch (a short prompt has no batches); the cell's words: "reading the prompt 1,024 / 4,461 tokens", per batch
            done = min(p.prompt_done, p.prompt_tokens)
            return status_html("◌", f"{name}: reading the prompt {done:,} / {p.prompt_tokens:,} tokens", BLUE)
        return status_html("◌", f"{name}: reading the prompt…", BLUE)
    return status_html("◌", f"{name}: generating…", BLUE)


def downloading(spec: ModelSpec | None) -> model_sources.Progress | None:
    """The running download of ``spec``'s file (an ``hf:`` model not in the cache yet), if any."""
    if spec is None or spec.remote:
        return None
    for path in (spec.path, spec.mmproj):
        progress = model_sources.progress(path) if path else None
        if progress is not None and progress.state == "downloading":
            return progress
    return None


def stop_download(spec: ModelSpec | None) -> bool:
    """Stop ``spec``'s download (what Stop does while a request waits for one); the next ask
    resumes it. True if one was running."""
    cache = runtime.get().cache_if_open()
    entry = cache.entry(spec) if cache is not None and spec is not None else None
    if entry is None or entry.state != LOADING or downloading(spec) is None:
        return False
    assert cache is not None
    cache.unload(entry)
    return True


def streamed_text(pieces: list[str]) -> str:
    """The answer streamed so far (without the thinking)."""
    return join(pieces)[0]


def streamed_html(pieces: list[str]) -> str:
    """The answer area while an answer streams: the thinking live (subdued), or folded once the
    answer began, and the answer with the cursor."""
    text, thinking = join(pieces)
    if not thinking:
        return interim_html(text)
    return interim_html(text, thinking, type(pieces[-1]) is Thinking)


def failed_answer(stream: Any, answer: Answer | None, error: BaseException | None, text: str) -> Answer:
    """The ``Answer`` to show when a request raised ``error`` (or ended without an answer):
    the partial text (``text`` if there is no answer) with ``finish_reason="error"``."""
    if error is None:
        message = "the generation ended without an answer"
    else:
        message = str(error) if isinstance(error, LLMMagicError) else f"{type(error).__name__}: {error}"
    meta = answer.__dict__.copy() if answer is not None else {"model": getattr(stream, "model_name", "")}
    meta.update(finish_reason="error", error=message)
    return Answer(answer.text if answer is not None else text, **meta)
