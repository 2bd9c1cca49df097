"""llm_magic.engines.llama_options (and model_options): llama.cpp load options as Llama arguments,
checked before loading; the once-only warning for GPU layers on a CPU build; what a model runs on."""

from __future__ import annotations

import logging
from dataclasses import replace

import llama_cpp
import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic import model_options, runtime, specs
from llm_magic.engines import llama_options, llama_private
from llm_magic.errors import ConfigError
from llm_magic.specs import ModelSpec

from conftest import run, run_error
from tiny_gguf import write_tiny_model

GPU_BUILD = bool(llama_cpp.llama_supports_gpu_offload())
cpu_build_only = pytest.mark.skipif(GPU_BUILD, reason="this llama-cpp-python has a GPU backend")


@pytest.fixture(scope="session")
def wide_model(model_dir) -> str:
    """A tiny model whose attention heads are 32 wide: a quantized KV cache fits it."""
    return str(write_tiny_model(model_dir / "tiny-wide.gguf", n_embd=128))


@pytest.fixture
def warned_again(monkeypatch):
    """The once-per-process GPU warning may be said again in this test."""
    monkeypatch.setattr(runtime.get(), "gpu_warned", False)


def load(path: str, spec: ModelSpec):
    """A real Llama with the spec's options, and its native load log."""
    lc = llama_private.install_hooks()
    with llama_private.capture_native_log(maxlen=20000) as lines:
        llm = lc.Llama(model_path=path, n_ctx=256, n_threads=1, verbose=True, **llama_options.llama_kwargs(spec))
    llm.verbose = False
    return llm, list(lines)


# ---- arguments ------------------------------------------------------------------------------------


def test_defaults_are_all_layers_flash_attention_and_an_f16_cache(tiny_model):
    kwargs = llama_options.llama_kwargs(ModelSpec(path=tiny_model))
    assert kwargs == {
        "flash_attn": True,  # auto: on
        "type_k": llama_cpp.GGML_TYPE_F16,
        "type_v": llama_cpp.GGML_TYPE_F16,
        "n_gpu_layers": -1,
        "main_gpu": 0,
        "split_mode": llama_cpp.LLAMA_SPLIT_MODE_LAYER,
        "tensor_split": None,
        "offload_kqv": True,
    }


def test_every_option_maps_to_llama_cpp(wide_model):
    spec = ModelSpec(
        path=wide_model,
        flash_attn="off",
        type_k="q4_0",
        type_v="bf16",
        n_gpu_layers=0,
        main_gpu=1,
        split_mode="row",
        tensor_split=(3.0, 1.0),
        offload_kqv=False,
    )
    assert llama_options.llama_kwargs(spec) == {
        "flash_attn": False,
        "type_k": llama_cpp.GGML_TYPE_Q4_0,
        "type_v": 30,  # GGML_TYPE_BF16 (ggml.h; llama_cpp has no constant for it)
        "n_gpu_layers": 0,
        "main_gpu": 1,
        "split_mode": llama_cpp.LLAMA_SPLIT_MODE_ROW,
        "tensor_split": [3.0, 1.0],
        "offload_kqv": False,
    }
    assert set(llama_options.GGML_TYPES) == set(model_options.KV_TYPES)
    for name, ggml_type in llama_options.GGML_TYPES.items():  # the same ids as llama_cpp's constants
        assert getattr(llama_cpp, f"GGML_TYPE_{name.upper()}", ggml_type) == ggml_type
        assert llama_options.llama_kwargs(replace(spec, type_k=name, flash_attn="on"))["type_k"] == ggml_type
    assert llama_options.llama_kwargs(replace(spec, split_mode="none"))["split_mode"] == llama_cpp.LLAMA_SPLIT_MODE_NONE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flash_attn": "yes"}, "flash_attn must be one of auto, on, off, got 'yes'"),
        ({"type_k": "q3_k"}, "type_k must be one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, got 'q3_k'"),
        ({"type_v": "F16"}, "type_v must be one of f32, f16, bf16, q8_0"),
        ({"n_gpu_layers": -2}, "n_gpu_layers must be -1 (all layers), 0 (none: CPU only) or a number of layers"),
        ({"main_gpu": -1}, "main_gpu must be a GPU index >= 0, got -1"),
        ({"split_mode": "rows"}, "split_mode must be one of none, layer, row, got 'rows'"),
        ({"tensor_split": (1.0, -1.0)}, "tensor_split must be a list of proportions >= 0, one per GPU"),
        ({"tensor_split": (0.0, 0.0)}, "tensor_split must have a proportion > 0"),
        ({"tensor_split": (1.0,) * 17}, "tensor_split has 17 proportions, but this llama.cpp build supports at most"),
        ({"offload_kqv": "yes"}, "offload_kqv must be True or False"),
        ({"flash_attn": "off", "type_v": "q8_0"}, "type_v=q8_0 (a quantized V cache) needs flash attention"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_valid_ones(wide_model, change, message):
    with pytest.raises(ConfigError) as caught:
        llama_options.llama_kwargs(replace(ModelSpec(path=wide_model), **change))
    text = str(caught.value)
    assert text.startswith("model 'tiny-wide.gguf': ") and message in text and "\n" not in text


def test_a_quantized_cache_needs_heads_in_whole_blocks(tiny_model, wide_model):
    """The tiny model's heads are 16 wide: llama.cpp would refuse it (or abort without flash attention)."""
    for spec in (ModelSpec(path=tiny_model, type_k="q8_0"), ModelSpec(path=tiny_model, type_v="q4_0")):
        with pytest.raises(ConfigError, match=r"stores attention heads in blocks of 32 values, but this model's heads"):
            llama_options.llama_kwargs(spec)
    llama_options.llama_kwargs(ModelSpec(path=wide_model, type_k="q8_0", type_v="q4_0"))


# ---- a real load --------------------------------------------------------------------------------------


def test_a_quantized_kv_cache_with_flash_attention_loads_and_generates(wide_model):
    spec = ModelSpec(path=wide_model, type_k="q8_0", type_v="q8_0", flash_attn="on")
    llm, lines = load(wide_model, spec)
    try:
        text = llm.create_completion("hello", max_tokens=8, temperature=0.0)["choices"][0]["text"]
        assert text
        info = llama_options.device_info(llm, spec, lines)
    finally:
        llm.close()
    assert info["flash_attn"] == "on" and info["kv_type"] == "q8_0/q8_0"
    if not GPU_BUILD:
        assert info["device"] == "CPU" and info["gpu_layers"] == "0/3"  # 2 blocks + the output layer


def test_through_llm_magic_the_row_says_what_runs(wide_model):
    llm_magic.current_settings().models = {"q": {"path": wide_model, "type_k": "q8_0", "type_v": "q8_0"}}
    answer = llm_magic.ask("hello", model="q", max_tokens=6, temperature=0)
    assert answer.n_tokens == 6
    row = next(r for r in llm_magic.models() if r["name"] == "q")
    assert (row["flash_attn"], row["kv_type"]) == ("on", "q8_0/q8_0")
    if not GPU_BUILD:
        assert (row["device"], row["gpu_layers"]) == ("CPU", "0/3")


def test_flash_attention_off_is_what_llama_cpp_runs(wide_model):
    spec = ModelSpec(path=wide_model, flash_attn="off", type_k="q8_0")  # a quantized K alone needs no flash attention
    llm, lines = load(wide_model, spec)
    try:
        assert llama_options.device_info(llm, spec, lines)["flash_attn"] == "off"
        assert llama_options.device_info(llm, spec, lines)["kv_type"] == "q8_0/f16"
        # without the log, the spec says what was asked
        assert llama_options.device_info(llm, spec, [])["kv_type"] == "q8_0/f16"
    finally:
        llm.close()


KV_LINE = "llama_kv_cache: size = 0.12 MiB (512 cells, 2 layers, 1/1 seqs), K (f16): 0.06 MiB, V (f16): 0.06 MiB\n"


def test_device_info_reads_a_gpu_load_log(wide_model):
    """llama.cpp's own lines (format strings of llama.cpp and llama-model.cpp) for a partial offload."""
    spec = ModelSpec(path=wide_model, n_gpu_layers=2)
    llm, _ = load(wide_model, replace(spec, n_gpu_layers=0))
    try:
        lines = [
            "llama_model_load_from_file_impl: using device CUDA0 (NVIDIA H200) (0000:00:05.0) - 142586 MiB free\n",
            "load_tensors: layer   0 assigned to device CPU, is_swa = 0\n",
            "load_tensors: layer   1 assigned to device CUDA0, is_swa = 0\n",
            "load_tensors: layer   2 assigned to device CUDA0, is_swa = 0\n",
            "load_tensors: offloaded 2/3 layers to GPU\n",
            "llama_context: flash_attn            = enabled\n",
            KV_LINE,
        ]
        assert llama_options.device_info(llm, spec, lines) == {
            "device": "CUDA0 (NVIDIA H200)",
            "gpu_layers": "2/3",
            "flash_attn": "on",
            "kv_type": "f16/f16",
        }
        # only the summary line (the per-layer lines are debug output)
        summary = [lines[0], lines[4]]
        assert llama_options.device_info(llm, spec, summary)["device"] == "CUDA0 (NVIDIA H200)"
        assert llama_options.device_info(llm, spec, summary)["gpu_layers"] == "2/3"
    finally:
        llm.close()


# ---- the GPU warning ------------------------------------------------------------------------------


@cpu_build_only
def test_gpu_layers_asked_for_on_a_cpu_build_are_said_once(tiny_model, caplog, warned_again):
    llm_magic.current_settings().models = {"g": {"path": tiny_model, "n_gpu_layers": 20}}
    with caplog.at_level(logging.WARNING, logger="llm_magic"):
        specs.resolve("g")
        specs.resolve("g")
        specs.resolve(tiny_model, n_gpu_layers=5)
    warnings = [r.getMessage() for r in caplog.records if "GPU" in r.getMessage()]
    assert len(warnings) == 1
    assert "g: n_gpu_layers=20 asked for the GPU, but this llama-cpp-python build has no GPU backend" in warnings[0]
    assert (
        'CMAKE_ARGS="-DGGML_CUDA=on" python -m pip install --force-reinstall --no-cache-dir llama-cpp-python'
        in (warnings[0])
    )
    assert "-DGGML_VULKAN=on" in warnings[0] and "Metal" in warnings[0]


@cpu_build_only
def test_the_default_and_cpu_only_are_silent(tiny_model, caplog, warned_again):
    with caplog.at_level(logging.WARNING, logger="llm_magic"):
        specs.resolve(tiny_model)  # -1, the default: all layers where there is a GPU
        specs.resolve(tiny_model, n_gpu_layers=0)
    assert not caplog.records and not runtime.get().gpu_warned


@cpu_build_only
def test_the_trait_counts_as_asked_for(tiny_model, caplog, warned_again):
    llm_magic.current_settings().n_gpu_layers = 99
    with caplog.at_level(logging.WARNING, logger="llm_magic"):
        spec = specs.resolve(tiny_model)
    assert spec.n_gpu_layers == 99
    assert "n_gpu_layers=99 asked for the GPU" in caplog.text


# ---- specs, aliases, %llm -------------------------------------------------------------------------------


def test_traits_are_defaults_and_aliases_override(tiny_model, wide_model):
    s = llm_magic.current_settings()
    s.type_k, s.tensor_split, s.offload_kqv = "q8_0", [1, 1], False
    s.models = {"w": {"path": wide_model, "type_k": "f16", "n_gpu_layers": 0, "tensor_split": [3, 1]}}
    plain = specs.resolve(wide_model)
    assert (plain.type_k, plain.tensor_split, plain.offload_kqv, plain.n_gpu_layers) == ("q8_0", (1.0, 1.0), False, -1)
    alias = specs.resolve("w")
    assert (alias.type_k, alias.tensor_split, alias.n_gpu_layers) == ("f16", (3.0, 1.0), 0)
    assert alias.key != specs.resolve(wide_model, type_k="f16", n_gpu_layers=0).key  # tensor_split differs
    assert alias.key == specs.resolve(wide_model, type_k="f16", n_gpu_layers=0, tensor_split=[3, 1]).key


def test_flash_attention_off_with_a_quantized_v_is_refused_before_loading(tiny_model):
    llm_magic.current_settings().flash_attn = "off"
    with pytest.raises(ConfigError, match=r"type_v=q8_0 \(a quantized V cache\) needs flash attention"):
        specs.resolve(tiny_model, type_v="q8_0")
    llm_magic.current_settings().models = {"q": {"path": tiny_model, "type_v": "q8_0"}}
    with pytest.raises(ConfigError, match="model 'q': type_v=q8_0"):
        llm_magic.ask("hi", model="q", max_tokens=2)
    assert runtime.get().cache_if_open() is None  # nothing was loaded


def test_alias_flags_round_trip(ip, wide_model):
    _, out = run(
        ip,
        f"%llm alias big {wide_model} --n-gpu-layers 0 --flash-attn on --type-k q8_0 --type-v q4_0 "
        "--main-gpu 1 --split-mode row --tensor-split 3,1 --no-offload-kqv",
    )
    options = llm_magic.current_settings().session_aliases["big"]
    assert options == {
        "path": wide_model,
        "flash_attn": "on",
        "type_k": "q8_0",
        "type_v": "q4_0",
        "n_gpu_layers": 0,
        "main_gpu": 1,
        "split_mode": "row",
        "tensor_split": [3.0, 1.0],
        "offload_kqv": False,
    }
    assert "n_gpu_layers=0" in out and "tensor_split=[3.0, 1.0]" in out
    spec = specs.resolve("big")
    assert (spec.flash_attn, spec.type_k, spec.type_v, spec.n_gpu_layers) == ("on", "q8_0", "q4_0", 0)
    assert (spec.main_gpu, spec.split_mode, spec.tensor_split, spec.offload_kqv) == (1, "row", (3.0, 1.0), False)
    _, out = run(ip, "%llm aliases")
    assert "type_k=q8_0" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--flash-attn maybe", "flash_attn must be one of auto, on, off"),
        ("--type-k q3", "type_k must be one of f32, f16, bf16, q8_0"),
        ("--n-gpu-layers -3", "n_gpu_layers must be -1 (all layers)"),
        ("--split-mode rows", "split_mode must be one of none, layer, row"),
        ("--tensor-split 3,x", "--tensor-split takes proportions per GPU like 3,1"),
        ("--flash-attn off --type-v q8_0", "needs flash attention, but flash_attn is 'off'"),
    ],
)
def test_bad_alias_flags_are_one_line_usage_errors(ip, tiny_model, flags, message):
    error, out = run_error(ip, f"%llm alias x {tiny_model} {flags}")
    assert isinstance(error, UsageError) and message in str(error) and "\n" not in str(error)
    assert "x" not in llm_magic.current_settings().aliases()


def test_an_alias_that_clashes_with_the_settings_is_refused_and_the_old_one_kept(ip, tiny_model):
    run(ip, f"%llm alias x {tiny_model} --type-v q8_0")  # fine while flash_attn is auto
    run(ip, "%config AskMagics.flash_attn = 'off'")
    error, _ = run_error(ip, f"%llm alias x {tiny_model} --type-v q4_0")
    assert isinstance(error, UsageError) and "needs flash attention" in str(error)
    assert llm_magic.current_settings().session_aliases["x"]["type_v"] == "q8_0"


def test_gpu_options_are_not_options_of_a_remote_model(ip):
    error, _ = run_error(ip, "%llm alias r --base-url http://127.0.0.1:9/v1 --n-gpu-layers 3")
    assert isinstance(error, UsageError) and "n_gpu_layers is not an option of a remote (base_url) model" in str(error)


@cpu_build_only
def test_alias_with_gpu_layers_warns_at_once_on_a_cpu_build(ip, tiny_model, caplog, warned_again):
    with caplog.at_level(logging.WARNING, logger="llm_magic"):
        run(ip, f"%llm alias g {tiny_model} --n-gpu-layers 8")
        run(ip, f"%llm alias g2 {tiny_model} --n-gpu-layers 9")
    assert caplog.text.count("has no GPU backend") == 1 and "n_gpu_layers=8" in caplog.text


def test_status_shows_the_new_options_that_are_not_the_defaults(ip, wide_model):
    run(ip, f"%llm alias q {wide_model} --type-k q8_0 --n-gpu-layers 0 --tensor-split 3,1")
    run(ip, "%llm load q --wait")
    row = next(r for r in llm_magic.models() if r["name"] == "q")
    assert "type_k=q8_0" in row["options"] and "n_gpu_layers=0" in row["options"]
    assert "tensor_split=3,1" in row["options"] and "flash_attn" not in row["options"]
    _, out = run(ip, "%llm status")
    assert "type_k=q8_0" in out
