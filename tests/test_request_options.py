"""llm_magic.request_options: ``resolve_options`` completes a request's options from
``llm_magic.current_settings()`` (timeout, max_tokens, sampling, seed, stop, system), validates them
once (``ConfigError`` before anything loads), refuses images for a text-only model naming the
configured vision aliases, and picks ``vision_model`` for images given without a model."""

from __future__ import annotations

import os

import numpy as np
import pytest

import llm_magic
from llm_magic import runtime
from llm_magic.errors import ConfigError, ModelNotFound
from llm_magic.images import Image, png_from_array
from llm_magic.request_options import RequestOptions, resolve_options


def resolve(model=None, timeout=None, max_tokens=None, system=None, images=None, **sampling) -> RequestOptions:
    return resolve_options(model, timeout, max_tokens, system, images, sampling)


def png() -> bytes:
    return png_from_array(np.zeros((4, 6, 3), dtype=np.uint8))


# ---- defaults from the settings -----------------------------------------------------------------


def test_defaults_come_from_the_settings(use_model):
    opts = resolve()
    assert opts.spec.path == os.path.realpath(use_model) and opts.spec.display_name == "tiny.gguf"
    assert (opts.timeout, opts.max_tokens, opts.system, opts.images) == (120.0, 512, None, [])
    assert opts.sampling == {
        "temperature": 0.7,
        "top_p": 0.95,
        "top_k": 40,
        "repeat_penalty": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
    }
    assert runtime.get().cache_if_open() is None  # resolving loads nothing


def test_changed_settings_are_read_at_each_request(use_model):
    s = llm_magic.current_settings()
    s.timeout, s.max_tokens, s.temperature, s.top_k = 30.0, 64, 0.0, 5
    s.seed, s.stop, s.system = 7, ["END", "\n\n"], "Be brief."
    s.frequency_penalty, s.presence_penalty = 0.5, -0.25
    opts = resolve()
    assert (opts.timeout, opts.max_tokens, opts.system) == (30.0, 64, "Be brief.")
    assert opts.sampling == {
        "temperature": 0.0,
        "top_p": 0.95,
        "top_k": 5,
        "repeat_penalty": 1.0,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.25,
        "seed": 7,
        "stop": ["END", "\n\n"],
    }
    assert opts.sampling["stop"] is not s.stop  # a copy: the request cannot change the settings


def test_seed_comes_from_the_settings_only_when_not_negative(use_model):
    s = llm_magic.current_settings()
    s.seed = -1
    assert "seed" not in resolve().sampling
    s.seed = 0
    assert resolve().sampling["seed"] == 0
    assert resolve(seed=123).sampling["seed"] == 123  # the caller's wins


def test_the_callers_values_win(use_model):
    s = llm_magic.current_settings()
    s.stop, s.system, s.temperature = ["END"], "settings system", 0.9
    opts = resolve(timeout=5, max_tokens=3, system="mine", temperature=0.1, min_p=0.05, stop=["X"])
    assert (opts.timeout, opts.max_tokens, opts.system) == (5, 3, "mine")
    assert opts.sampling["temperature"] == 0.1 and opts.sampling["min_p"] == 0.05
    assert opts.sampling["stop"] == ["X"]


def test_a_stop_string_becomes_a_list_and_an_empty_stop_takes_the_settings(use_model):
    assert resolve(stop="Q:").sampling["stop"] == ["Q:"]
    assert not resolve(stop=[]).sampling.get("stop") and "stop" not in resolve(stop=None).sampling
    llm_magic.current_settings().stop = ["END"]
    assert resolve(stop=[]).sampling["stop"] == ["END"]
    assert resolve(stop="").sampling["stop"] == ["END"]
    assert resolve(stop=None).sampling["stop"] == ["END"]


def test_an_empty_stop_string_without_settings_stops_means_no_stop(use_model):
    assert not resolve(stop="").sampling.get("stop")


def test_options_left_as_none_are_dropped(use_model):
    sampling = resolve(temperature=None, min_p=None, grammar=None, seed=None).sampling
    assert sampling["temperature"] == 0.7  # None means "the default"
    assert "min_p" not in sampling and "grammar" not in sampling and "seed" not in sampling


def test_the_callers_dict_is_not_changed(use_model):
    sampling = {"stop": "END", "temperature": None}
    resolve_options(None, None, None, None, None, sampling)
    assert sampling == {"stop": "END", "temperature": None}


# ---- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
        ({"timeout": -3}, "timeout must be a positive"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer, got 0"),
        ({"temperature": -0.5}, r"temperature must be >= 0, got -0.5"),
        ({"top_p": 0}, r"top_p must be in \(0, 1\], got 0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"repeat_penalty": 0}, "repeat_penalty must be > 0"),
        ({"min_p": 2}, r"min_p must be in \[0, 1\]"),
        ({"frequency_penalty": float("nan")}, r"frequency_penalty must be a finite number \(0 = off\), got nan"),
        ({"presence_penalty": float("inf")}, r"presence_penalty must be a finite number"),
        ({"stop": [""]}, "stop must be a string or a list of non-empty strings"),
        ({"stop": ["ok", 3]}, "stop must be a string or a list of non-empty strings"),
        ({"bogus": 1, "other": 2}, "unknown option\\(s\\) bogus, other; valid: temperature, "),
    ],
)
def test_bad_values_are_config_errors(use_model, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        resolve(**kwargs)


def test_bad_values_are_refused_before_the_model_is_looked_up(tmp_path):
    with pytest.raises(ConfigError, match="timeout"):
        resolve(model=str(tmp_path / "missing.gguf"), timeout=0)
    with pytest.raises(ModelNotFound, match="model file not found"):
        resolve(model=str(tmp_path / "missing.gguf"))
    assert runtime.get().cache_if_open() is None


def test_an_alias_is_resolved(tiny_model):
    llm_magic.current_settings().models = {"small": {"path": tiny_model, "n_ctx": 256}}
    opts = resolve(model="small")
    assert opts.spec.name == "small" and opts.spec.n_ctx == 256 and opts.spec.path == os.path.realpath(tiny_model)


# ---- images -------------------------------------------------------------------------------------


def test_images_for_a_text_only_model_are_refused_naming_the_vision_aliases(tiny_model, tiny_model_b):
    s = llm_magic.current_settings()
    with pytest.raises(ConfigError) as err:
        resolve(model=tiny_model, images=[png()])
    assert "tiny.gguf is a text-only model and cannot take images; vision models configured: none" in str(err.value)
    s.models = {
        "text": {"path": tiny_model},
        "eye": {"path": tiny_model, "mmproj": tiny_model_b},
        "look": {"path": tiny_model_b, "mmproj": tiny_model},
    }
    with pytest.raises(ConfigError, match="text is a text-only model and cannot take images; ") as err:
        resolve(model="text", images=[png()])
    assert "vision models configured: eye, look (a vision alias has 'path' and 'mmproj'" in str(err.value)
    assert "AskMagics.vision_model" in str(err.value)


def test_vision_model_is_used_for_images_without_a_model(use_model, tiny_model, tiny_model_b):
    s = llm_magic.current_settings()
    s.models = {"eye": {"path": tiny_model, "mmproj": tiny_model_b}}
    s.vision_model = "eye"
    opts = resolve(images=[png()])
    assert opts.spec.name == "eye" and opts.spec.mmproj == os.path.realpath(tiny_model_b)
    assert len(opts.images) == 1 and isinstance(opts.images[0], Image)
    assert opts.images[0].mime == "image/png" and opts.images[0].size == (6, 4)
    assert resolve().spec.mmproj == ""  # without images: the default model
    with pytest.raises(ConfigError, match="text-only"):  # a model named by the caller wins
        resolve(model=use_model, images=[png()])


def test_images_without_a_vision_model_use_the_default_model(use_model):
    with pytest.raises(ConfigError, match=r"tiny\.gguf is a text-only model"):
        resolve(images=[png()])


def test_images_are_loaded_once_and_images_given_as_image_pass_through(tiny_model, tiny_model_b, tmp_path):
    llm_magic.current_settings().models = {"eye": {"path": tiny_model, "mmproj": tiny_model_b}}
    path = tmp_path / "pic.png"
    path.write_bytes(png())
    given = Image(data=png(), mime="image/png", source="mine")
    opts = resolve(model="eye", images=[str(path), given, png()])
    assert [i.source for i in opts.images] == [str(path), "mine", "bytes"]
    assert opts.images[1] is given


def test_a_remote_model_may_take_images():
    llm_magic.current_settings().models = {"server": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    opts = resolve(model="server", images=[png()])
    assert opts.spec.remote and len(opts.images) == 1
