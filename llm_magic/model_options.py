"""The llama.cpp load options of a local model — flash attention, the KV cache's types and GPU
offload: their names, defaults, valid values and one-line checks, without importing llama.cpp.

Settings (traits), model aliases and ``ModelSpec`` all check these values here;
``engines/llama_options`` turns them into ``llama_cpp.Llama(...)`` arguments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

FLASH_ATTN = ("auto", "on", "off")
KV_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")
QUANTIZED_KV_TYPES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")
SPLIT_MODES = ("none", "layer", "row")

# name -> default (also the ModelSpec fields and the Settings traits of the same names)
DEFAULTS: dict[str, Any] = {
    "flash_attn": "auto",
    "type_k": "f16",
    "type_v": "f16",
    "n_gpu_layers": -1,
    "main_gpu": 0,
    "split_mode": "layer",
    "tensor_split": (),
    "offload_kqv": True,
}
# name -> the type a model alias gives it (tensor_split: a list of numbers)
TYPES: dict[str, type] = {
    "flash_attn": str,
    "type_k": str,
    "type_v": str,
    "n_gpu_layers": int,
    "main_gpu": int,
    "split_mode": str,
    "tensor_split": list,
    "offload_kqv": bool,
}
_CHOICES = {"flash_attn": FLASH_ATTN, "type_k": KV_TYPES, "type_v": KV_TYPES, "split_mode": SPLIT_MODES}


def value_problem(name: str, value: Any) -> str | None:
    """What is wrong with one option's value (``"must be one of ..."``), or None if it is fine."""
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            return f"must be one of {', '.join(_CHOICES[name])}"
    elif name == "n_gpu_layers":
        if not _is_int(value) or value < -1:
            return "must be -1 (all layers), 0 (none: CPU only) or a number of layers"
    elif name == "main_gpu":
        if not _is_int(value) or value < 0:
            return "must be a GPU index >= 0"
    elif name == "tensor_split":
        if not isinstance(value, (list, tuple)) or not all(_is_number(x) and x >= 0 for x in value):
            return "must be a list of proportions >= 0, one per GPU (e.g. [3, 1]; empty: by free memory)"
        if value and not sum(value) > 0:
            return "must have a proportion > 0"
    elif name == "offload_kqv" and not isinstance(value, bool):
        return "must be True or False"
    return None


def combination_problem(options: Mapping[str, Any]) -> str | None:
    """Rules between options (only those given are checked): a quantized V cache needs flash attention."""
    type_v = options.get("type_v", DEFAULTS["type_v"])
    if options.get("flash_attn", DEFAULTS["flash_attn"]) == "off" and type_v in QUANTIZED_KV_TYPES:
        return (
            f"type_v={type_v} (a quantized V cache) needs flash attention, but flash_attn is 'off'; "
            "use flash_attn 'auto' or 'on', or type_v f16"
        )
    return None


def check(options: Mapping[str, Any], where: str = "") -> None:
    """``ConfigError`` (one line, naming the valid values) for the first bad option in ``options``;
    keys that are not llama.cpp load options are ignored. ``where``: e.g. ``"model 'big': "``."""
    for name, value in options.items():
        if name in DEFAULTS:
            problem = value_problem(name, value)
            if problem:
                raise ConfigError(f"{where}{name} {problem}, got {value!r}")
    problem = combination_problem(options)
    if problem:
        raise ConfigError(f"{where}{problem}")


def as_spec_value(name: str, value: Any) -> Any:
    """An alias's or trait's value as a ``ModelSpec`` holds it (hashable: tensor_split a tuple)."""
    if name == "tensor_split":
        return tuple(float(x) for x in value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
