"""llm_magic: local language models in IPython and Jupyter.

    %load_ext llm_magic        # registers %%ask / %ask / %llm and preloads the configured models
    %%ask -t 30                # streams the answer; a timeout keeps the partial answer
    What is the capital of France?

The same from Python: ``ask``, ``stream``, ``preload``, ``models``, ``unload``, ``cleanup_models``.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from . import cache as _cache
from . import config, generation
from .errors import ConfigError, LLMMagicError, ModelLoadError, ModelNotFound, PromptTooLong
from .generation import Answer, Stream, ask, last_answer, stream

__all__ = [
    "Answer", "Stream", "ask", "stream", "preload", "models", "unload", "cleanup_models", "last_answer", "panel",
    "status_table", "load_ipython_extension", "unload_ipython_extension",
    "LLMMagicError", "ConfigError", "ModelNotFound", "ModelLoadError", "PromptTooLong",
]
__version__ = "0.1.0"

log = logging.getLogger("llm_magic")
if not log.handlers:  # one-line warnings in notebooks; users can reconfigure logging as they like
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.WARNING)
    log.propagate = False


def preload(*names: str) -> list[_cache.Entry]:
    """Start loading models in the background (aliases or paths; none = the default model)."""
    specs = [config.resolve(n) for n in (names or (None,))]
    return [_cache.get_cache().load(spec) for spec in specs]


def models() -> list[dict[str, Any]]:
    """Every model the kernel knows: loaded or loading ones, and configured aliases not loaded yet."""
    rows = [e.info() for e in _cache.get_cache().entries()]
    known = {r["name"] for r in rows} | {r["path"] for r in rows}
    for name, spec in config.settings.models.items():
        if name not in known:
            rows.append({"name": name, "path": spec.get("path"), "state": "unloaded", "size_bytes": None,
                         "load_s": None, "uses": 0, "last_used": None, "error": None})
    return rows


def unload(name: str | None = None, *, all: bool = False) -> int:
    """Close one model (alias, file name or path) or ``all=True`` of them. Returns how many closed."""
    cache = _cache.get_cache()
    if all:
        entries = cache.entries()
    else:
        if not name:
            raise ConfigError("name a model to unload, or pass all=True")
        entries = cache.find(name)
        if not entries:
            try:
                spec = config.resolve(name)
            except LLMMagicError:
                spec = None
            entry = cache.entry(spec) if spec else None
            entries = [entry] if entry else []
        if not entries:
            loaded = ", ".join(e.name for e in cache.entries()) or "none"
            raise ConfigError(f"no loaded model named {name!r} (loaded: {loaded})")
    return sum(1 for e in entries if cache.unload(e))


def cleanup_models(timeout: float = 3.0) -> None:
    """Cancel running generations, close every model and stop the worker threads. Idempotent, fast."""
    generation.stop_all()
    _cache.close_cache(timeout=timeout)
    generation.shutdown(timeout=timeout)


def panel(**defaults: Any):
    """Display an ``AskPanel`` (prompt, model picker, Ask/Stop, live answer) and return it.

    ``defaults``: initial ``model``, ``max_tokens``, ``timeout``, ``temperature``, ``prompt``."""
    from .panel import AskPanel

    return AskPanel.show(**defaults)


def _fmt_size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _kind_note(row: dict) -> str:
    """Remote: the URL and latency. Vision: the projector file and the chat handler."""
    if row.get("kind") == "remote":
        latency = f", {row['latency_s'] * 1000:.0f} ms" if row.get("latency_s") is not None else ""
        return f"{row['path']}{latency}"
    if row.get("kind") == "vision":
        handler = f", handler {row['chat_handler']}" if row.get("chat_handler") else ""
        return f"mmproj {os.path.basename(row['mmproj'])}{handler}"
    return ""


def status_table() -> str:
    """A text table of ``models()``."""
    rows = models()
    if not rows:
        return "no models loaded or configured (see %llm help)"
    header = ("model", "state", "size", "load s", "uses", "last used", "mlock", "error / note")
    lines = []
    for r in rows:
        state = r["state"]
        if r.get("note") and state == "unloaded" and "evicted" in r["note"]:
            state = "unloaded (evicted)"
        if state == "loading":
            entry = next((e for e in _cache.get_cache().entries() if e.spec.path == r["path"]), None)
            if entry is not None:
                state = f"loading ({entry.loading_for():.1f} s)"
        lines.append((
            r["name"], state, _fmt_size(r["size_bytes"]),
            f"{r['load_s']:.2f}" if r["load_s"] is not None else "-",
            str(r["uses"]),
            datetime.fromtimestamp(r["last_used"]).strftime("%H:%M:%S") if r["last_used"] else "-",
            r.get("mlock") or "-",
            (r["error"] or r.get("note") or _kind_note(r))[:200],
        ))
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join([fmt.format(*header).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip()]
                     + [fmt.format(*l).rstrip() for l in lines])


def load_ipython_extension(ipython) -> None:
    """``%load_ext llm_magic``: register the magics and start preloading; returns without waiting."""
    from .magics import AskMagics, ask_line_transformer

    magics = AskMagics(shell=ipython)
    ipython.register_magics(magics)
    ipython.events.register("post_run_cell", magics.cell_errors.post_run_cell)  # listen only: {Err[n]}
    cleanups = getattr(ipython, "input_transformers_cleanup", None)
    if cleanups is not None:
        cleanups[:] = [t for t in cleanups if getattr(t, "__name__", "") != "ask_line_transformer"]
        cleanups.append(ask_line_transformer)
    _cache.register_atexit(cleanup_models)
    names = config.settings.preload
    if names is None:
        names = [config.default_model_name()] if config.default_model_name() else []
    for name in names:
        try:
            preload(name)
        except LLMMagicError as e:
            log.warning("llm_magic: cannot preload %s: %s", name, e)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext llm_magic``: free every model and stop every worker thread."""
    cleanup_models()
    cleanups = getattr(ipython, "input_transformers_cleanup", None)
    if cleanups is not None:
        cleanups[:] = [t for t in cleanups if getattr(t, "__name__", "") != "ask_line_transformer"]
    ipython.configurables[:] = [c for c in ipython.configurables if type(c).__name__ != "AskMagics"]
    magics = ipython.magics_manager.registry.get("AskMagics")
    if magics is not None:
        try:
            ipython.events.unregister("post_run_cell", magics.cell_errors.post_run_cell)
        except ValueError:
            pass
        for kind in ("line", "cell"):
            for name in ("ask", "llm"):
                table = ipython.magics_manager.magics[kind]
                if name in table and getattr(table[name], "__self__", None) is magics:
                    del table[name]
        ipython.magics_manager.registry.pop("AskMagics", None)
