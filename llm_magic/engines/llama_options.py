"""A local model's llama.cpp load options as ``llama_cpp.Llama(...)`` arguments, checked before
anything loads, and what a loaded model runs on.

- ``llama_kwargs(spec)``: flash attention, the KV cache's types and GPU offload as ``Llama``
  keyword arguments; a bad value is a one-line ``ConfigError`` naming the valid ones (``Llama``
  itself swallows unknown arguments and aborts the process on some bad combinations).
- ``no_gpu_message(spec)``: GPU layers asked for on a build without a GPU backend, in words,
  with the command that installs a GPU build.
- ``device_info(llm, spec, log_lines)``: device, offloaded layers, flash attention and KV cache
  types of a loaded model, read from llama.cpp's load log (``llama_private.capture_native_log``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import model_options
from ..errors import ConfigError
from ..gguf_header import GGUFError, read_header
from . import llama_private as private

if TYPE_CHECKING:
    from ..specs import ModelSpec

# flash_attn "auto" is "on": faster on the CPU in long contexts (llama-bench tg128 at depth 1024:
# 64 tok/s off, 67.5 on; equal at depth 0) and implemented by llama.cpp's CUDA, Metal and Vulkan
# backends. llama-cpp-python 0.3.36 takes a bool only (not llama.cpp's own "auto").
AUTO_FLASH_ATTN = True
_KV_BLOCK = 32  # elements per block of every quantized KV type (q8_0, q4_0, ..., iq4_nl)
# KV cache type -> ggml's type id (enum ggml_type in ggml.h; llama_cpp has no GGML_TYPE_BF16 constant)
GGML_TYPES = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "iq4_nl": 20}

GPU_BUILD_HINT = (
    "install a GPU build of llama-cpp-python: "
    'NVIDIA: CMAKE_ARGS="-DGGML_CUDA=on" python -m pip install --force-reinstall --no-cache-dir llama-cpp-python; '
    'Vulkan: CMAKE_ARGS="-DGGML_VULKAN=on" (same command); Apple silicon: Metal is in the default build'
)


def flash_attn_on(spec: ModelSpec) -> bool:
    return spec.flash_attn == "on" or (spec.flash_attn == "auto" and AUTO_FLASH_ATTN)


def llama_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """``Llama(...)`` keyword arguments for the llama.cpp load options of ``spec``, checked first."""
    where = f"model {spec.display_name!r}: "
    options = {name: getattr(spec, name) for name in model_options.DEFAULTS}
    model_options.check(options, where=where)
    lc = private.install_hooks()
    if len(spec.tensor_split) > lc.LLAMA_MAX_DEVICES:
        raise ConfigError(
            f"{where}tensor_split has {len(spec.tensor_split)} proportions, "
            f"but this llama.cpp build supports at most {lc.LLAMA_MAX_DEVICES} devices"
        )
    _check_head_size(spec, where)
    return {
        "flash_attn": flash_attn_on(spec),
        "type_k": GGML_TYPES[spec.type_k],
        "type_v": GGML_TYPES[spec.type_v],
        "n_gpu_layers": spec.n_gpu_layers,
        "main_gpu": spec.main_gpu,
        "split_mode": getattr(lc, f"LLAMA_SPLIT_MODE_{spec.split_mode.upper()}"),
        "tensor_split": list(spec.tensor_split) or None,
        "offload_kqv": spec.offload_kqv,
    }


def _check_head_size(spec: ModelSpec, where: str) -> None:
    """A quantized K or V cache stores each attention head in blocks of 32 values: llama.cpp
    refuses (or, without flash attention, aborts the process on) a head size that is no multiple
    of 32. Checked from the GGUF header, so the answer is a one-line error before loading."""
    wanted = [
        (n, getattr(spec, n)) for n in ("type_k", "type_v") if getattr(spec, n) in model_options.QUANTIZED_KV_TYPES
    ]
    if not wanted:
        return
    try:
        md = read_header(spec.path).metadata
    except (GGUFError, OSError):
        return  # the load reports an unreadable file
    arch = md.get("general.architecture")
    heads, width = md.get(f"{arch}.attention.head_count"), md.get(f"{arch}.embedding_length")
    fallback = width // heads if isinstance(heads, int) and isinstance(width, int) and heads > 0 else None
    for name, kind in wanted:
        key = "key_length" if name == "type_k" else "value_length"
        size = md.get(f"{arch}.attention.{key}", fallback)
        if isinstance(size, int) and size % _KV_BLOCK:
            raise ConfigError(
                f"{where}{name}={kind} stores attention heads in blocks of {_KV_BLOCK} values, but this model's "
                f"heads have {size}; use {name} f16 (or bf16, f32) for it"
            )


def no_gpu_message(spec: ModelSpec) -> str | None:
    """What to say when ``spec`` asks for GPU layers and this llama-cpp-python has no GPU backend."""
    if spec.remote or spec.n_gpu_layers <= 0:
        return None
    lc = private.install_hooks()
    if lc.llama_supports_gpu_offload():
        return None
    return (
        f"{spec.display_name}: n_gpu_layers={spec.n_gpu_layers} asked for the GPU, but this llama-cpp-python "
        f"build has no GPU backend, so it runs on the CPU; {GPU_BUILD_HINT}"
    )


# ---- what a loaded model runs on, from llama.cpp's load log ------------------------------------

_USING = re.compile(r"using device (\S+) \((.*?)\)")
_LAYER = re.compile(r"load_tensors: layer\s+(\d+) assigned to device (\S+?),")
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_FLASH = re.compile(r"llama_context: flash_attn\s+=\s+(\w+)")
_FLASH_RESOLVED = re.compile(r"(Flash Attention|flash_attn) (enabled|not supported, set to disabled)", re.IGNORECASE)
_KV = re.compile(r"K \((\w+)\):.*V \((\w+)\):")


def device_info(llm: Any, spec: ModelSpec, log_lines: Iterable[str]) -> dict[str, Any]:
    """``device`` ("CPU", "CUDA0 (NVIDIA H200)", ...), ``gpu_layers`` ("offloaded/total", layers
    counted as llama.cpp does: the blocks plus the output layer), ``flash_attn`` ("on"/"off") and
    ``kv_type`` ("f16/f16") of a model just loaded, from the native log lines of its load.

    The lines must hold the whole load log (a Gemma 3 load writes ~900; pass a capture of several
    thousand): the per-layer device lines come early, the flash attention and KV lines last.
    What the log does not say comes from the spec and the model; a GPU build whose log says
    nothing about layers is reported as "unknown", never guessed."""
    lines = list(log_lines)
    described: dict[str, str] = {}
    layers: dict[int, str] = {}
    offloaded_line: tuple[int, int] | None = None
    flash: str | None = None
    kv: str | None = None
    for line in lines:
        if m := _USING.search(line):
            described.setdefault(m.group(1), m.group(2))
        elif m := _LAYER.search(line):
            layers[int(m.group(1))] = m.group(2)
        elif m := _OFFLOADED.search(line):
            offloaded_line = (int(m.group(1)), int(m.group(2)))
        elif m := _FLASH.search(line):
            flash = {"enabled": "on", "disabled": "off"}.get(m.group(1), flash)
        elif m := _FLASH_RESOLVED.search(line):
            flash = "on" if m.group(2).lower() == "enabled" else "off"
        elif kv is None and (m := _KV.search(line)):
            kv = f"{m.group(1)}/{m.group(2)}"
    if layers:
        on_gpu = [dev for dev in layers.values() if dev != "CPU"]
        used = list(dict.fromkeys(on_gpu))
        device = ", ".join(_named(d, described) for d in used) or "CPU"
        gpu_layers = f"{len(on_gpu)}/{len(layers)}"
    elif offloaded_line is not None and described:
        device = ", ".join(_named(d, described) for d in described) if offloaded_line[0] else "CPU"
        gpu_layers = f"{offloaded_line[0]}/{offloaded_line[1]}"
    else:
        total = _total_layers(llm)
        known = not private.install_hooks().llama_supports_gpu_offload() or spec.n_gpu_layers == 0
        device = "CPU" if known else "unknown"
        gpu_layers = f"0/{total}" if known and total else "unknown"
    return {
        "device": device,
        "gpu_layers": gpu_layers,
        "flash_attn": flash or ("on" if flash_attn_on(spec) else "off"),
        "kv_type": kv or f"{spec.type_k}/{spec.type_v}",
    }


def _named(device: str, described: dict[str, str]) -> str:
    return f"{device} ({described[device]})" if described.get(device) else device


def _total_layers(llm: Any) -> int | None:
    """The model's blocks plus the output layer, from its metadata."""
    md = getattr(llm, "metadata", None) or {}
    blocks = md.get(f"{md.get('general.architecture')}.block_count")
    try:
        return int(str(blocks)) + 1  # llama-cpp-python's metadata values are strings
    except ValueError:
        return None
