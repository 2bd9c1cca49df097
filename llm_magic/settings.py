"""Every option of llm_magic, written once: its default, its help, its validation and its parsing.

``Settings`` is a traitlets ``HasTraits`` without IPython. The IPython front end's ``AskMagics``
subclasses it, so ``%config AskMagics.timeout = 30`` and ``ipython_config.py`` set these very
traits, and while the extension is loaded the magics object *is* the current settings
(``use(magics)``): one object, no copies to keep in step. Plain-Python use reads ``current()``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from traitlets import Bool, Dict, Float, HasTraits, Int, List, TraitError, Unicode, Union, validate

from . import model_options
from .errors import ConfigError

SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "grammar",
    "draft",
)
DRAFTS = ("lookup", "none")  # draft: guess tokens from the text so far (greedy, local models)

# Options a model alias (an entry of ``models``) may carry, and their types.
SPEC_TYPES: dict[str, type] = {
    "path": str,
    "n_ctx": int,
    "n_threads": int,
    "n_threads_batch": int,
    "n_batch": int,
    "use_mlock": bool,
    "use_mmap": bool,
    "chat": str,
    "mmproj": str,
    "chat_handler": str,
    "base_url": str,
    "model": str,
    "api_key_env": str,
    "endpoint": str,
    "thinking_tags": list,  # [open, close]: the markers a reasoning model thinks between ([]: none)
    **model_options.TYPES,  # flash attention, KV cache types, GPU offload
}
SPEC_KEYS = tuple(SPEC_TYPES)
REMOTE_KEYS = ("base_url", "model", "api_key_env", "endpoint")  # a server's alias takes these only
VISION_HANDLERS = (
    "auto",
    "mtmd",
    "llava15",
    "llava16",
    "gemma3",
    "gemma4",
    "qwen25vl",
    "minicpmv26",
    "moondream",
    "nanollava",
    "llama3-vision-alpha",
    "obsidian",
)

_SAMPLING_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "temperature": (lambda v: v >= 0, ">= 0"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "top_k": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "repeat_penalty": (lambda v: v > 0, "> 0"),
    "min_p": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "frequency_penalty": (math.isfinite, "a finite number (0 = off)"),
    "presence_penalty": (math.isfinite, "a finite number (0 = off)"),
}


def check_request(timeout: float | None, max_tokens: int | None, sampling: Mapping[str, Any]) -> None:
    """Validate one request's options; ``ConfigError`` names the rule that failed."""
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(SAMPLING_KEYS)}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout}")
    if max_tokens is not None and max_tokens <= 0:
        raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens}")
    for key, (ok, rule) in _SAMPLING_RULES.items():
        if sampling.get(key) is not None and not ok(sampling[key]):
            raise ConfigError(f"{key} must be {rule}, got {sampling[key]}")
    if sampling.get("draft") is not None and sampling["draft"] not in DRAFTS:
        raise ConfigError(f"draft must be one of {', '.join(DRAFTS)}, got {sampling['draft']!r}")
    stop = sampling.get("stop")
    if stop is not None and not stops_ok(stop):
        raise ConfigError(f"stop must be a string or a list of non-empty strings, got {stop!r}")


def stops_ok(stop: Any) -> bool:
    """A stop string, or a list of non-empty ones."""
    return isinstance(stop, str) or all(isinstance(x, str) and x for x in stop)


def check_alias(name: str, options: Mapping[str, Any]) -> None:
    """Check a model alias's keys and value types; errors name the valid keys."""
    unknown = sorted(set(options) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"model {name!r}: unknown option(s) {', '.join(unknown)}; valid keys: {', '.join(SPEC_KEYS)}")
    if "path" not in options and "base_url" not in options:
        raise ConfigError(f"model {name!r}: a spec needs a 'path' (a GGUF file) or a 'base_url' (a server)")
    if "path" in options and "base_url" in options:
        raise ConfigError(f"model {name!r}: give either 'path' or 'base_url', not both")
    wrong = sorted(set(options) - set(REMOTE_KEYS)) if "base_url" in options else []
    wrong = wrong or (sorted(set(options) & set(REMOTE_KEYS)) if "path" in options else [])
    if wrong:
        what = "remote (base_url)" if "base_url" in options else "local (path)"
        verb = "is" if len(wrong) == 1 else "are"
        raise ConfigError(f"model {name!r}: {', '.join(wrong)} {verb} not an option of a {what} model")
    url = options.get("base_url", "")
    if url and not str(url).startswith(("http://", "https://")):
        raise ConfigError(f"model {name!r}: base_url must start with http:// or https://, got {url!r}")
    if "mmproj" in options and "path" not in options:
        raise ConfigError(f"model {name!r}: 'mmproj' (a vision projector) goes with a local 'path'")
    if options.get("chat_handler", "auto") not in VISION_HANDLERS:
        raise ConfigError(f"model {name!r}: chat_handler must be one of {', '.join(VISION_HANDLERS)}")
    if options.get("endpoint", "chat") not in ("chat", "completions"):
        raise ConfigError(f"model {name!r}: endpoint must be 'chat' or 'completions'")
    if options.get("chat", "auto") not in ("auto", "completion"):
        raise ConfigError(f"model {name!r}: chat must be 'auto' or 'completion', got {options['chat']!r}")
    for key, value in options.items():
        if key in model_options.DEFAULTS:
            continue  # checked below, with the valid values named
        kind = SPEC_TYPES[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"model {name!r}: {key} must be a {kind.__name__}, got {value!r}")
        if isinstance(value, int) and kind is int and value < (0 if key.startswith("n_threads") else 1):
            raise ConfigError(f"model {name!r}: {key} must be positive, got {value}")
    model_options.check(options, where=f"model {name!r}: ")
    if "thinking_tags" in options:
        from .thinking import tags_from_option

        tags_from_option(options["thinking_tags"], where=f"model {name!r}: ")


def parse_bytes(value: Any) -> int:
    """``memory_budget``: bytes (int), "8GB"/"512MB", or "50%" of physical RAM; 0/""/None = none."""
    if value in (None, "", 0):
        return 0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip().upper().replace(" ", "")
    if text.endswith("%"):
        import psutil

        return int(psutil.virtual_memory().total * float(text[:-1]) / 100)
    for unit, factor in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(float(text))


def parse_seconds(value: Any) -> float | None:
    """``keep_alive``: seconds, or "forever"/None/negative for never."""
    if value in (None, "") or (isinstance(value, str) and value.strip().lower() == "forever"):
        return None
    seconds = float(value)
    return None if seconds < 0 else seconds


class Settings(HasTraits):
    """llm_magic's options. Set them with ``%config AskMagics.NAME = ...``, in ``ipython_config.py``
    (``c.AskMagics.NAME = ...``) or from Python: ``llm_magic.current_settings().NAME = ...``."""

    model = Unicode(
        "",
        help="Default model: an alias from `models` or a GGUF path. "
        "Falls back to $LLM_MAGIC_MODEL, then the default-model extra.",
    ).tag(config=True)
    preload = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        help="Models to load in the background on %load_ext (default: the default model).",
    ).tag(config=True)
    timeout = Float(120.0, help="Seconds per ask, counted from the start of the cell (load wait included).").tag(
        config=True
    )
    max_tokens = Int(512, help="Most tokens generated per answer.").tag(config=True)
    n_ctx = Int(4096, help="Context window (capped at the model's trained length).").tag(config=True)
    n_threads = Int(0, help="Threads for llama.cpp; 0 = all physical cores.").tag(config=True)
    use_mlock = Bool(True, help="Lock model pages in RAM (falls back to off if the OS refuses).").tag(config=True)
    temperature = Float(0.7, help="Default sampling temperature (0 = greedy).").tag(config=True)
    top_p = Float(0.95, help="Default nucleus sampling threshold, in (0, 1].").tag(config=True)
    top_k = Int(40, help="Default top-k sampling (0 = off).").tag(config=True)
    repeat_penalty = Float(1.0, help="Default repetition penalty (1.0 = off).").tag(config=True)
    frequency_penalty = Float(
        0.0, help="Default frequency penalty: lowers a token's odds by how often it already appeared (0 = off)."
    ).tag(config=True)
    presence_penalty = Float(
        0.0, help="Default presence penalty: lowers the odds of any token that already appeared (0 = off)."
    ).tag(config=True)
    seed = Int(-1, help="Default sampling seed; -1 = random.").tag(config=True)
    system = Unicode("", help="Default system prompt.").tag(config=True)
    think = Bool(
        None,
        allow_none=True,
        help="Reasoning models: True/False switches thinking on/off where the chat template can "
        "(Qwen3's enable_thinking, ...); None leaves the template's default.",
    ).tag(config=True)
    stop = List(Unicode(), help="Default stop strings.").tag(config=True)
    models = Dict(
        help="Aliases: {'name': {'path': ..., 'n_ctx': ..., ...}} or "
        "{'name': {'base_url': 'http://host:8080/v1', 'model': ...}}."
    ).tag(config=True)
    max_loaded_models = Int(
        0, help="Most models loaded at once (0 = no limit); loading one more evicts the least recently used idle model."
    ).tag(config=True)
    memory_budget = Union(
        [Int(), Unicode()],
        default_value=0,
        help="Most memory loaded models take at once (their estimates: weights, KV cache, buffers): "
        "bytes, '8GB', or '50%' of RAM (0 = no limit). Least recently used idle models are evicted; "
        "a model that cannot fit on its own is refused before loading.",
    ).tag(config=True)
    keep_alive = Union(
        [Float(), Unicode()],
        default_value="forever",
        help="Unload a model idle for this many seconds ('forever' = never).",
    ).tag(config=True)
    vision_model = Unicode(
        "", help="The model `%%ask --image` uses when no -m is given (an alias with 'path' and 'mmproj')."
    ).tag(config=True)
    json_grammar = Unicode(
        "", help="GBNF grammar that constrains `-f json` answers (default: llama.cpp's JSON grammar)."
    ).tag(config=True)
    kv_cache_budget = Union(
        [Int(), Unicode()],
        default_value="1GB",
        help="Most bytes of saved conversation KV state kept per model "
        "(least recently used conversations dropped first; 0 = keep none)",
    ).tag(config=True)
    # llama.cpp load options of every local model (an alias may override each); a changed value
    # is another load of the model. Valid values: llm_magic.model_options.
    flash_attn = Unicode(
        "auto", help="Flash attention: auto (on where llama.cpp supports it: faster in long contexts), on, off."
    ).tag(config=True)
    type_k = Unicode(
        "f16", help="KV cache type of K: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl (quantized: less memory)."
    ).tag(config=True)
    type_v = Unicode(
        "f16", help="KV cache type of V (same choices as type_k; a quantized V needs flash attention)."
    ).tag(config=True)
    n_gpu_layers = Int(
        -1, help="Layers offloaded to the GPU: -1 = all (the default; CPU-only builds run on the CPU), 0 = none."
    ).tag(config=True)
    main_gpu = Int(
        0, help="The GPU (index) for the whole model with split_mode 'none' (with 'row': for intermediate results)."
    ).tag(config=True)
    split_mode = Unicode("layer", help="How a model is split over several GPUs: none (main_gpu only), layer, row.").tag(
        config=True
    )
    tensor_split = List(Float(), help="Proportions of the model per GPU, e.g. [3, 1] (empty: by free memory).").tag(
        config=True
    )
    offload_kqv = Bool(True, help="Keep the KV cache (and attention) on the GPU with the offloaded layers.").tag(
        config=True
    )
    model_dirs = List(
        Unicode(),
        help="Folders searched for GGUF files by `%llm models`, llm_magic.find_models() and -m completion "
        "(besides the Hugging Face cache, Ollama's store, LM Studio's models and llama.cpp's cache).",
    ).tag(config=True)

    # asking about data (issue 15): summaries of {name}, the ask log, replay
    context_budget = Int(
        1000,
        help="Most prompt tokens per {name} (and for %%ask --cells): a larger object is summarised by its "
        "type (counted with the model's tokenizer; estimated for remote models). {name!full} sends it whole.",
    ).tag(config=True)
    log = Union(
        [Bool(), Unicode()],
        default_value=True,
        help="The ask log (SQLite; %llm log): True = ~/.local/share/llm_magic/log.db "
        "(or $LLM_MAGIC_DATA_DIR/log.db), a path, or False = off.",
    ).tag(config=True)
    cache = Bool(
        False,
        help="Answer an identical earlier request (same model file, options, seed and final prompt) "
        "from the ask log, as %%ask --cache does; %%ask --fresh still asks the model.",
    ).tag(config=True)

    # inline completion in JupyterLab (issue 16): the llm_magic.inline comm
    inline_completion = Bool(True, help="Answer JupyterLab's inline completion requests (%llm complete on|off).").tag(
        config=True
    )
    completion_model = Unicode(
        "", help="The model for inline completions (empty: the default model); preloaded with the default model."
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session_aliases: dict[str, dict[str, Any]] = {}  # %llm alias: this session only

    # ---- parsed values ----------------------------------------------------------------------

    @property
    def memory_budget_bytes(self) -> int:
        return parse_bytes(self.memory_budget)

    @property
    def kv_cache_budget_bytes(self) -> int:
        return parse_bytes(self.kv_cache_budget)

    @property
    def keep_alive_s(self) -> float | None:
        return parse_seconds(self.keep_alive)

    def aliases(self) -> dict[str, dict[str, Any]]:
        """Configured aliases with this session's ``%llm alias`` ones on top."""
        return {**self.models, **self.session_aliases}

    def add_alias(self, name: str, options: dict[str, Any]) -> None:
        check_alias(name, options)
        self.session_aliases[name] = options

    # ---- validation: a bad value is refused with one line -------------------------------------

    def _fail(self, proposal: Any, rule: str) -> TraitError:
        return TraitError(f"{type(self).__name__}.{proposal['trait'].name} {rule}, got {proposal['value']!r}")

    @validate("timeout")
    def _check_timeout(self, proposal: Any) -> Any:
        if not proposal["value"] > 0:
            raise self._fail(proposal, "must be > 0 seconds")
        return proposal["value"]

    @validate("max_tokens", "n_ctx", "context_budget")
    def _check_positive(self, proposal: Any) -> Any:
        if proposal["value"] <= 0:
            raise self._fail(proposal, "must be > 0")
        return proposal["value"]

    @validate("n_threads", "max_loaded_models")
    def _check_not_negative(self, proposal: Any) -> Any:
        if proposal["value"] < 0:
            raise self._fail(proposal, "must be >= 0 (0 = automatic / no limit)")
        return proposal["value"]

    @validate("temperature", "top_p", "top_k", "repeat_penalty", "frequency_penalty", "presence_penalty")
    def _check_sampling(self, proposal: Any) -> Any:
        name = proposal["trait"].name
        ok, rule = _SAMPLING_RULES[name]
        if not ok(proposal["value"]):
            raise self._fail(proposal, f"must be {rule}")
        return proposal["value"]

    @validate("stop")
    def _check_stop(self, proposal: Any) -> Any:
        if not stops_ok(proposal["value"]):
            raise self._fail(proposal, "must be non-empty strings")
        return proposal["value"]

    @validate("memory_budget", "kv_cache_budget")
    def _check_budget(self, proposal: Any) -> Any:
        try:
            if parse_bytes(proposal["value"]) < 0:
                raise ValueError
        except (ValueError, TypeError):
            raise self._fail(proposal, "must be bytes, '8GB' or '50%'") from None
        return proposal["value"]

    @validate(*model_options.DEFAULTS)
    def _check_model_option(self, proposal: Any) -> Any:
        problem = model_options.value_problem(proposal["trait"].name, proposal["value"])
        if problem:
            raise self._fail(proposal, problem)
        return proposal["value"]

    @validate("keep_alive")
    def _check_keep_alive(self, proposal: Any) -> Any:
        try:
            parse_seconds(proposal["value"])
        except (ValueError, TypeError):
            raise self._fail(proposal, "must be seconds or 'forever'") from None
        return proposal["value"]

    @validate("models")
    def _check_models(self, proposal: Any) -> Any:
        for name, spec in proposal["value"].items():
            if not isinstance(spec, dict):
                raise TraitError(f"{type(self).__name__}.models[{name!r}] must be a dict with a 'path' or 'base_url'")
            try:
                check_alias(name, spec)
            except ConfigError as e:
                raise TraitError(f"{type(self).__name__}.models: {e}") from None
        return proposal["value"]


_current: Settings = Settings()
_lock = threading.Lock()


def current() -> Settings:
    """The settings every request reads: the loaded ``AskMagics`` or a plain ``Settings``."""
    return _current


def use(settings: Settings | None) -> Settings:
    """Make ``settings`` current (``None``: fresh defaults). Returns the previous one."""
    global _current
    with _lock:
        previous, _current = _current, settings if settings is not None else Settings()
    return previous
