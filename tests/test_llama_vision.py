"""llm_magic.engines.llama_vision (and ``%%ask --image``): vision models — a generated tiny CLIP
encoder + LLaVA MLP projector and a matching tiny text model, loaded by llama.cpp's real mtmd
loader, with real images going through the real chat handler. The pure image functions of
llm_magic.images are in test_images.py."""

from __future__ import annotations

import os
import time

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic.engines import llama_vision
from llm_magic.images import MAX_SIDE, load_image
from llm_magic.specs import resolve

from conftest import run, run_error
from tiny_vision_gguf import n_image_tokens, png_bytes, write_mismatched_projector, write_tiny_vision_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("vision")
    text, mmproj = write_tiny_vision_pair(d)
    big_text, big_mmproj = write_tiny_vision_pair(d / "big", image_size=64)
    bad = write_mismatched_projector(d)
    image = d / "picture.png"
    image.write_bytes(png_bytes(40, 24))
    return {
        "text": str(text),
        "mmproj": str(mmproj),
        "bad_mmproj": str(bad),
        "image": str(image),
        "big_text": str(big_text),
        "big_mmproj": str(big_mmproj),
        "dir": d,
    }


@pytest.fixture
def vision_alias(pair):
    llm_magic.current_settings().models = {
        "vis": {"path": pair["text"], "mmproj": pair["mmproj"], "n_ctx": 2048, "n_threads": 1},
        "vis64": {"path": pair["big_text"], "mmproj": pair["big_mmproj"], "n_ctx": 512, "n_threads": 1},
        "bad": {"path": pair["text"], "mmproj": pair["bad_mmproj"], "n_ctx": 512},
    }
    return "vis"


def test_vision_pair_preloads_in_the_background_as_one_entry(vision_alias, pair):
    t0 = time.monotonic()
    [entry] = llm_magic.preload("vis")
    assert time.monotonic() - t0 < 0.5
    entry.future.result(30)
    [info] = [m for m in llm_magic.models() if m["name"] == "vis"]
    assert info["state"] == "ready" and info["kind"] == "vision"
    assert info["path"] == pair["text"] and info["mmproj"] == pair["mmproj"]
    assert info["chat_handler"] == "mtmd" and info["load_s"] > 0  # the text model has a chat template
    table = llm_magic.status_table()
    assert "vis" in table and os.path.basename(pair["mmproj"]) in table and "mtmd" in table


def test_image_tokens_reach_the_model(vision_alias, pair):
    with_image = llm_magic.ask(
        "What is in this picture?", model="vis", images=[pair["image"]], max_tokens=8, temperature=0
    )
    assert with_image.finish_reason == "length" and with_image.n_tokens == 8 and len(with_image) > 0
    big = llm_magic.ask("What is in this picture?", model="vis64", images=[pair["image"]], max_tokens=8, temperature=0)
    # the same text with a 64 px projector costs exactly 64 - 16 more image tokens
    assert big.n_prompt_tokens - with_image.n_prompt_tokens == n_image_tokens(64, 8) - n_image_tokens(32, 8)
    two = llm_magic.ask(
        "What is in this picture?", model="vis", images=[pair["image"], pair["image"]], max_tokens=4, temperature=0
    )
    assert two.n_prompt_tokens - with_image.n_prompt_tokens >= n_image_tokens(32, 8)


def test_the_handler_is_chosen_from_the_model(vision_alias, pair):
    spec = resolve("vis")
    assert llama_vision.has_chat_template(pair["text"])
    assert llama_vision.choose_handler(spec, has_template=True) == "mtmd"  # the text model's own template
    assert llama_vision.choose_handler(spec, has_template=False) == "llava15"  # from the projector type
    llm_magic.current_settings().models = {
        "forced": {"path": pair["text"], "mmproj": pair["mmproj"], "chat_handler": "llava15"}
    }
    assert llama_vision.choose_handler(resolve("forced"), has_template=True) == "llava15"


def test_magic_image_from_file_and_variables(ip, vision_alias, pair):
    import numpy as np
    from PIL import Image as PILImage

    ip.user_ns["arr"] = np.zeros((20, 30, 3), dtype=np.uint8)
    ip.user_ns["pil"] = PILImage.new("RGB", (16, 16), (255, 0, 0))
    ip.user_ns["raw"] = png_bytes(12, 12)
    run(ip, f"%%ask -m vis --image {pair['image']} -n 4 -o a\nDescribe it.")
    assert ip.user_ns["a"].n_tokens == 4 and ip.user_ns["a"].n_prompt_tokens > n_image_tokens(32, 8)
    for var in ("arr", "pil", "raw"):
        run(ip, f"%%ask -m vis --image {var} -n 3 -o b\nDescribe it.")
        assert ip.user_ns["b"].n_prompt_tokens > n_image_tokens(32, 8), var


def test_matplotlib_figure_is_rendered(ip, vision_alias):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    ip.user_ns["fig"] = fig
    try:
        run(ip, "%%ask -m vis --image fig --image fig -n 3 -o a\nWhat does the plot show?")
        image = load_image("fig", ip.user_ns)
    finally:
        plt.close(fig)
    assert image.mime == "image/png" and image.size[0] > 50
    assert ip.user_ns["a"].n_prompt_tokens > 2 * n_image_tokens(32, 8)  # both figures reached the model


def test_image_without_model_uses_vision_model(ip, vision_alias, pair):
    ip.run_line_magic("config", "AskMagics.vision_model = 'vis'")
    run(ip, f"%%ask --image {pair['image']} -n 3 -o a\nWhat is this?")
    assert ip.user_ns["a"].model == "vis" and ip.user_ns["a"].n_prompt_tokens > n_image_tokens(32, 8)


def test_bad_images(ip, vision_alias, pair, tiny_model):
    not_image = pair["dir"] / "notes.txt"
    not_image.write_text("hello")
    cases = [
        (f"%%ask -m vis --image {not_image}\nx", "is not an image"),
        ("%%ask -m vis --image /no/such/picture.png\nx", "no image file or variable named '/no/such/picture.png'"),
        (f"%%ask -m {tiny_model} --image {pair['image']}\nx", "text-only model"),
        ("%%ask -m vis --image undefined_var\nx", "no image file or variable"),
    ]
    ip.user_ns["notimg"] = 42
    cases.append(("%%ask -m vis --image notimg\nx", "is a int"))
    for cell, message in cases:
        error, out = run_error(ip, cell)
        assert isinstance(error, UsageError), (cell, repr(error), out)
        assert message in str(error), (cell, str(error))
    error, _ = run_error(ip, f"%%ask -m {tiny_model} --image {pair['image']}\nx")
    assert "vision models configured: vis, vis64, bad" in str(error)
    run(ip, "%%ask -m vis -n 2 -o ok\nstill alive")
    assert ip.user_ns["ok"].n_tokens == 2


def test_a_large_image_is_downscaled_with_a_note(ip, vision_alias, caplog):
    import numpy as np

    ip.user_ns["huge"] = np.random.default_rng(0).integers(0, 255, (MAX_SIDE + 500, 300, 3), dtype=np.uint8)
    run(ip, "%%ask -m vis --image huge -n 2 -o a\nx")
    assert "huge: downscaled from 300×2548 to" in caplog.text
    assert ip.user_ns["a"].n_tokens == 2 and ip.user_ns["a"].n_prompt_tokens > n_image_tokens(32, 8)


def test_mismatched_projector_is_reported_at_load_time(vision_alias, pair):
    [entry] = llm_magic.preload("bad")
    entry.future.exception(30)
    assert entry.state == "failed"
    assert (
        "does not fit" in entry.error
        and "mismatch between text model (n_embd = 64) and mmproj (n_embd = 32)" in entry.error
    )
    with pytest.raises(llm_magic.ModelLoadError, match="does not fit"):
        llm_magic.ask("x", model="bad", images=[pair["image"]])
    assert llm_magic.ask("x", model="vis", images=[pair["image"]], max_tokens=2).n_tokens == 2


def test_a_missing_projector_is_reported(vision_alias, pair, tmp_path):
    gone = tmp_path / "gone-mmproj.gguf"
    llm_magic.current_settings().models = {"lost": {"path": pair["text"], "mmproj": str(gone)}}
    with pytest.raises(llm_magic.ModelNotFound, match=r"not found: .*gone-mmproj.gguf"):
        llm_magic.ask("x", model="lost", images=[pair["image"]])
    assert [m["state"] for m in llm_magic.models() if m["name"] == "lost"] == ["unloaded"]  # never loaded


def test_vision_stop_and_timeout_keep_partial_text(vision_alias, pair):
    s = llm_magic.stream("Describe at length.", model="vis", images=[pair["image"]], max_tokens=400, timeout=60)
    got = []
    for chunk in s:
        got.append(chunk)
        if len(got) == 5:
            s.stop()
    assert s.answer.finish_reason == "cancelled" and 5 <= len(got) < 50
    assert s.answer == "".join(got)
    a = llm_magic.ask("Describe at length.", model="vis", images=[pair["image"]], max_tokens=100_000, timeout=0.5)
    assert a.finish_reason == "timeout" and "timed out after 0.5 s" in a.marker()
