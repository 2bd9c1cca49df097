"""llm_magic: local language models in IPython and Jupyter.

    %load_ext llm_magic        # registers %%ask / %ask / %llm and preloads the configured models
    %%ask -t 30                # streams the answer; a timeout keeps the partial answer
    What is the capital of France?

The same from Python: ``ask``, ``stream``, ``preload``, ``models``, ``unload``, ``cleanup_models``,
``current_settings``, ``panel``. Importing this package imports neither IPython nor ipywidgets.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import model_sources, runtime
from . import settings as _settings
from ._version import __version__
from .answer import Answer
from .cache_entry import Entry, load_options, model_identity
from .chat_templates import ChatTemplateError
from .errors import ConfigError, LLMMagicError, ModelLoadError, ModelNotFound, ModelTooLarge, PromptTooLong
from .ipython import load_ipython_extension, unload_ipython_extension
from .memory_estimate import Estimate
from .request import Stream, ask, stream
from .specs import default_model_name, resolve
from .thinking import Thinking

if TYPE_CHECKING:
    from .ask_panel import AskPanel
    from .model_finder import FoundModel

__all__ = [
    "Answer",
    "Stream",
    "Thinking",
    "ask",
    "stream",
    "preload",
    "models",
    "find_models",
    "estimate",
    "Estimate",
    "unload",
    "cleanup_models",
    "last_answer",
    "current_settings",
    "panel",
    "status_table",
    "load_ipython_extension",
    "unload_ipython_extension",
    "__version__",
    "LLMMagicError",
    "ConfigError",
    "ModelNotFound",
    "ModelLoadError",
    "PromptTooLong",
    "ModelTooLarge",
    "ChatTemplateError",
]

log = logging.getLogger("llm_magic")
if not log.handlers:  # one-line warnings in notebooks; users can reconfigure logging as they like
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.WARNING)
    log.propagate = False


def current_settings() -> _settings.Settings:
    """The settings every request reads (the loaded ``AskMagics`` itself while the extension is
    loaded): ``llm_magic.current_settings().timeout = 30`` is ``%config AskMagics.timeout = 30``."""
    return _settings.current()


def last_answer() -> Answer | None:
    """The latest ``Answer`` of this process, from any front end."""
    return runtime.get().last_answer


def preload(*names: str) -> list[Entry]:
    """Start loading models in the background (aliases or paths; none = the default model)."""
    specs = [resolve(n) for n in (names or (None,))]
    cache = runtime.get().cache
    return [cache.load(spec) for spec in specs]


def estimate(model: str | None = None, n_ctx: int | None = None, **options: Any) -> Estimate:
    """The memory a local model will take once loaded, from its GGUF header alone (nothing loads):
    ``weights_bytes``, ``kv_bytes``, ``compute_bytes``, ``total_bytes`` and ``gpu_bytes`` (the
    GPU's share when layers are offloaded). ``model``: an alias, a path or None (the default
    model); ``n_ctx`` and other load options (``type_k``, ``n_gpu_layers`` ...) as for a load."""
    valid = n_ctx is None or (type(n_ctx) is int and n_ctx > 0)  # not a bool, a float or a string
    if not valid:
        raise ConfigError(f"n_ctx must be a positive number of tokens, got {n_ctx!r}")
    spec = resolve(model, n_ctx=n_ctx, **options)
    if spec.remote:
        raise ConfigError(f"{spec.display_name} is a remote model: its memory is the server's")
    if model_sources.needs_download(spec.path):
        raise ModelNotFound(
            f"{spec.display_name} is not downloaded yet (its estimate reads the file's header): "
            f"`%llm load {spec.display_name}` downloads it"
        )
    from .gguf_header import GGUFError
    from .memory_estimate import estimate_spec

    try:
        return estimate_spec(spec)
    except GGUFError as e:
        raise ModelLoadError(f"cannot read {spec.path}: {e}") from None


def models() -> list[dict[str, Any]]:
    """Every model the kernel knows: loaded, loading or closing (replaced) ones, configured aliases
    not loaded yet, and the default model when it is not loaded. ``options``: the load options that
    are not the defaults (or that tell two entries of one file apart), e.g. ``"n_ctx=8192"``."""
    cache = runtime.get().cache_if_open()
    entries = cache.entries() if cache is not None else []
    rows = []
    for e in entries:
        siblings = [o.spec for o in entries if o is not e and model_identity(o.spec) == model_identity(e.spec)]
        rows.append(e.info(siblings))
    known = {r["name"] for r in rows} | {r["path"] for r in rows}
    for name, alias in _settings.current().aliases().items():
        if name not in known:
            rows.append(_not_loaded(name, alias.get("path") or alias.get("base_url"), _options_of(name)))
            known.add(name)
    default = _default_row(entries, known)
    for row in rows:  # an hf: model downloading before it loads: how far it is
        progress = model_sources.progress(str(row.get("path") or "")) if row["state"] == "loading" else None
        if progress is not None and progress.state == "downloading":
            row["note"] = f"downloading {progress.text()}"
    return rows + ([default] if default is not None else [])


def _default_row(entries: list[Entry], known: set[str]) -> dict[str, Any] | None:
    """The default model's row when it is configured but not loaded (nor listed as an alias)."""
    default = default_model_name()
    if not default or default in known:
        return None
    try:
        spec = resolve(None)
    except LLMMagicError as exc:  # e.g. AskMagics.model names a file that is gone
        return _not_loaded(default, default, "", error=str(exc))
    loaded = {model_identity(e.spec) for e in entries if e.state in ("loading", "ready", "closing")}
    if model_identity(spec) in loaded or spec.display_name in known:
        return None
    path = spec.base_url if spec.remote else spec.path
    return _not_loaded(spec.display_name, path, load_options(spec), note="the default model")


def _options_of(name: str) -> str:
    try:
        return load_options(resolve(name))
    except LLMMagicError:
        return ""


def _not_loaded(name: str, path: str | None, options: str, **extra: Any) -> dict[str, Any]:
    """A ``models()`` row for a configured model that is not loaded (an alias, the default model)."""
    row = {
        "name": name,
        "options": options,
        "path": path,
        "state": "unloaded",
        "size_bytes": None,
        "memory_bytes": None,
        "load_s": None,
        "uses": 0,
        "last_used": None,
        "error": None,
    }
    return {**row, **extra}


def find_models() -> list[FoundModel]:
    """The GGUF models on this machine: ``AskMagics.model_dirs``, the Hugging Face cache, Ollama's
    store, LM Studio's models and llama.cpp's cache. Each row: ``name`` (what ``-m`` takes), ``path``,
    ``source``, ``size_bytes``, ``architecture``, ``quantization``, ``context_length``,
    ``chat_template``, ``estimate_bytes`` and ``error`` (a broken file's reason) — read from GGUF
    headers, never loading a model."""
    from .model_finder import find_models as find

    return find()


def unload(name: str | None = None, *, all: bool = False) -> int:
    """Close one model (alias, file name or path) or ``all=True`` of them. Returns how many closed."""
    cache = runtime.get().cache_if_open()
    if all:
        entries = cache.entries() if cache is not None else []
    else:
        if not name:
            raise ConfigError("name a model to unload, or pass all=True")
        entries = cache.find(name) if cache is not None else []
        if not entries and cache is not None:
            try:
                entry = cache.entry(resolve(name))
            except LLMMagicError:
                entry = None
            entries = [entry] if entry else []
        if not entries:
            loaded = ", ".join(e.name for e in cache.entries()) if cache is not None else ""
            raise ConfigError(f"no loaded model named {name!r} (loaded: {loaded or 'none'})")
    assert cache is not None or not entries
    return sum(1 for e in entries if cache is not None and cache.unload(e))


def cleanup_models(timeout: float = 3.0) -> None:
    """Cancel running generations, close every model and stop the worker threads. Idempotent, fast;
    it also runs at interpreter exit and on ``%unload_ext``."""
    runtime.get().close(timeout=timeout)


def panel(**defaults: Any) -> AskPanel:
    """Display an ``AskPanel`` (prompt, model picker, Ask/Stop, live answer) and return it.

    ``defaults``: initial ``model``, ``max_tokens``, ``timeout``, ``temperature``, ``prompt``."""
    from .ask_panel import AskPanel

    return AskPanel.show(**defaults)


def status_table() -> str:
    """``%llm status`` as text: one row per model."""
    from .ipython.status_table import status_table as table

    return table(models())


def __getattr__(name: str) -> Any:
    if name == "AskPanel":  # imported on demand: plain-Python use never imports ipywidgets
        from .ask_panel import AskPanel

        return AskPanel
    raise AttributeError(f"module 'llm_magic' has no attribute {name!r}")
