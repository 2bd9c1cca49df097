"""llm_magic.settings: one object for every option, validated once, set from Python or %config."""

from __future__ import annotations

import pytest
from traitlets import TraitError

import llm_magic
from llm_magic import settings
from llm_magic.errors import ConfigError

from conftest import run, run_error


def test_every_trait_is_configurable_and_documented():
    names = settings.Settings.class_trait_names(config=True)
    assert {"model", "timeout", "max_tokens", "n_ctx", "json_grammar", "memory_budget", "keep_alive"} <= set(names)
    for name in names:
        assert settings.Settings.class_traits()[name].help, f"{name} has no help text"


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("timeout", 0, "must be > 0 seconds"),
        ("max_tokens", -1, "must be > 0"),
        ("n_ctx", 0, "must be > 0"),
        ("top_p", 1.5, "in (0, 1]"),
        ("temperature", -0.1, ">= 0"),
        ("memory_budget", "lots", "bytes, '8GB' or '50%'"),
        ("keep_alive", "soon", "seconds or 'forever'"),
        ("max_loaded_models", -2, ">= 0"),
        ("kv_cache_budget", "lots", "bytes, '8GB' or '50%'"),
        ("frequency_penalty", float("nan"), "a finite number (0 = off)"),
        ("presence_penalty", float("-inf"), "a finite number"),
        ("flash_attn", "yes", "must be one of auto, on, off"),
        ("type_k", "q3_k", "must be one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl"),
        ("type_v", "fp16", "must be one of f32, f16"),
        ("n_gpu_layers", -2, "must be -1 (all layers), 0 (none: CPU only) or a number of layers"),
        ("main_gpu", -1, "must be a GPU index >= 0"),
        ("split_mode", "tensor", "must be one of none, layer, row"),
        ("tensor_split", [1.0, -2.0], "must be a list of proportions >= 0, one per GPU"),
    ],
)
def test_bad_values_are_refused_with_the_rule(name, value, rule):
    s = settings.Settings()
    with pytest.raises(TraitError, match=f"Settings.{name} .*{rule.replace('(', '.').replace(')', '.')}"):
        setattr(s, name, value)


def test_parsed_values():
    s = settings.Settings(memory_budget="512MB", keep_alive="2.5")
    assert s.memory_budget_bytes == 512 << 20
    assert s.kv_cache_budget_bytes == 1 << 30  # the default, 1GB
    assert settings.Settings(kv_cache_budget=0).kv_cache_budget_bytes == 0
    assert settings.Settings(kv_cache_budget="256MB").kv_cache_budget_bytes == 256 << 20
    assert s.keep_alive_s == 2.5
    assert settings.Settings().keep_alive_s is None
    assert settings.parse_bytes("1.5GB") == int(1.5 * (1 << 30))
    assert settings.parse_bytes("50%") > 0


def test_model_load_option_defaults():
    s = settings.Settings()
    assert (s.flash_attn, s.type_k, s.type_v, s.n_gpu_layers) == ("auto", "f16", "f16", -1)
    assert (s.main_gpu, s.split_mode, s.tensor_split, s.offload_kqv) == (0, "layer", [], True)
    assert (s.frequency_penalty, s.presence_penalty) == (0.0, 0.0)


def test_models_are_checked_when_set():
    s = settings.Settings()
    with pytest.raises(TraitError, match=r"models: model 'm': type_k must be one of f32, f16"):
        s.models = {"m": {"path": "/x.gguf", "type_k": "q3"}}
    with pytest.raises(TraitError, match=r"model 'm': type_v=q4_0 \(a quantized V cache\) needs flash attention"):
        s.models = {"m": {"path": "/x.gguf", "type_v": "q4_0", "flash_attn": "off"}}
    with pytest.raises(TraitError, match=r"model 'm': n_gpu_layers is not an option of a remote"):
        s.models = {"m": {"base_url": "http://h/v1", "n_gpu_layers": 1}}
    with pytest.raises(TraitError, match=r"unknown option.*n_gpu.*valid keys"):
        s.models = {"m": {"path": "/x.gguf", "n_gpu": 1}}
    with pytest.raises(TraitError, match="either 'path' or 'base_url'"):
        s.models = {"m": {"path": "/x.gguf", "base_url": "http://h/v1"}}


def test_request_options_are_checked():
    settings.check_request(1.0, 5, {"temperature": 0.0, "stop": ["x"]})
    with pytest.raises(ConfigError, match=r"unknown option.*colour"):
        settings.check_request(None, None, {"colour": 1})
    with pytest.raises(ConfigError, match="timeout must be a positive"):
        settings.check_request(0, None, {})


def test_python_and_config_set_the_same_object(ip):
    """%config and llm_magic.current_settings() are one object while the extension is loaded."""
    run(ip, "%config AskMagics.max_tokens = 3")
    assert llm_magic.current_settings().max_tokens == 3
    assert llm_magic.ask("hi").n_tokens == 3  # the plain-Python API reads it
    llm_magic.current_settings().max_tokens = 4  # and the other way round
    run(ip, "%ask -o a hello")
    assert ip.user_ns["a"].n_tokens == 4
    run(ip, "%config AskMagics.json_grammar = 'root ::= \"x\"'")  # formerly left out of the sync
    assert llm_magic.current_settings().json_grammar == 'root ::= "x"'


def test_bad_config_value_is_one_line_and_keeps_the_old_value(ip):
    _, out = run(ip, "%config AskMagics.timeout = -5")  # IPython's %config reports, never raises
    assert "AskMagics.timeout must be > 0 seconds, got -5" in out and "Traceback" not in out
    assert llm_magic.current_settings().timeout == 120.0
    error, _ = run_error(ip, "%ask -t -1 hello")
    assert "timeout must be a positive" in str(error)


def test_values_set_before_load_ext_carry_over_and_survive_unload(shell, use_model):
    llm_magic.current_settings().timeout = 33.0
    shell.run_line_magic("load_ext", "llm_magic")
    assert type(llm_magic.current_settings()).__name__ == "AskMagics"
    assert llm_magic.current_settings().timeout == 33.0
    run(shell, "%config AskMagics.max_tokens = 7")
    shell.run_line_magic("unload_ext", "llm_magic")
    assert type(llm_magic.current_settings()) is settings.Settings
    assert (llm_magic.current_settings().timeout, llm_magic.current_settings().max_tokens) == (33.0, 7)


def test_ipython_config_file_values_apply(shell, use_model):
    from traitlets.config import Config

    shell.config.AskMagics = Config({"max_tokens": 2, "temperature": 0.0})
    shell.run_line_magic("load_ext", "llm_magic")
    assert llm_magic.current_settings().max_tokens == 2
    run(shell, "%ask -o a hello")
    assert shell.user_ns["a"].n_tokens == 2


def test_stop_is_checked_when_set():
    s = settings.Settings()
    with pytest.raises(TraitError, match=r"Settings\.stop must be non-empty strings"):
        s.stop = [""]
    s.stop = ["\n\n"]
    assert s.stop == ["\n\n"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "/x.gguf", "model": "m"}, "model is not an option of a local (path) model"),
        ({"base_url": "http://h/v1", "n_ctx": 8}, "n_ctx is not an option of a remote (base_url) model"),
    ],
)
def test_local_and_remote_alias_keys_do_not_mix(options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.check_alias("m", options)


def test_a_refused_config_value_does_not_break_the_next_load(ip, caplog):
    run(ip, "%config AskMagics.timeout = -1")  # refused, but IPython keeps it in shell.config
    assert ip.config.AskMagics.timeout == -1
    with caplog.at_level("WARNING", logger="llm_magic"):
        run(ip, "%reload_ext llm_magic")
    assert "ignoring AskMagics.timeout from the configuration: AskMagics.timeout must be > 0" in caplog.text
    assert "timeout" not in ip.config.AskMagics
    assert llm_magic.current_settings().timeout == 120.0
    run(ip, "%ask -n 2 -o a hello")
    assert ip.user_ns["a"].n_tokens == 2
