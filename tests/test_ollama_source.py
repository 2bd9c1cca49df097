"""``-m ollama:NAME[:TAG]``: Ollama's own store read with no Ollama server (a store built here,
manifests and blobs as ``ollama pull`` leaves them, holding real tiny GGUF files)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import llm_magic
from llm_magic import ollama_source
from llm_magic.errors import ConfigError, ModelNotFound
from llm_magic.specs import resolve

from conftest import run, run_error


def add_model(store: Path, name: str, files: dict[str, Path | bytes], tag: str = "latest", *, ns="library",
              registry=ollama_source.REGISTRY) -> Path:  # fmt: skip
    """An Ollama manifest with one layer per media type (``model``, ``projector``, ``template`` ...)."""
    layers = []
    for kind, src in files.items():
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        blob = store / "blobs" / f"sha256-{digest}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        layers.append(
            {"mediaType": f"application/vnd.ollama.image.{kind}", "digest": f"sha256:{digest}", "size": len(data)}
        )
    manifest = store / "manifests" / registry / ns / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "config": {}, "layers": layers}))
    return manifest


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "ollama-models"
    root.mkdir()
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ollama:tiny", ("registry.ollama.ai", "library", "tiny", "latest")),
        ("ollama:tiny:q4", ("registry.ollama.ai", "library", "tiny", "q4")),
        ("ollama:someone/tiny:v1.5", ("registry.ollama.ai", "someone", "tiny", "v1.5")),
        ("ollama:example.com:5000/team/tiny:7b", ("example.com:5000", "team", "tiny", "7b")),
        ("ollama:hf.co/org/tiny-GGUF:Q4_K_M", ("hf.co", "org", "tiny-GGUF", "Q4_K_M")),
    ],
)
def test_names(name, expected):
    ref = ollama_source.parse(name)
    assert (ref.registry, ref.namespace, ref.model, ref.tag) == expected


@pytest.mark.parametrize(
    "bad", ["ollama:", "ollama:tiny:", "ollama:tiny:bad tag", "ollama:tiny:a/b:c:", "ollama:a/b/c/d"]
)
def test_a_bad_name_or_tag_is_one_line(bad):
    with pytest.raises(ConfigError) as info:
        ollama_source.parse(bad)
    assert "\n" not in str(info.value) and "ollama:NAME" in str(info.value)


def test_the_default_tag_is_latest_and_the_model_answers(store, tiny_model):
    add_model(store, "tiny", {"model": Path(tiny_model), "template": b"{{ .Prompt }}", "params": b"{}"})
    spec = resolve("ollama:tiny")
    assert spec.path.startswith(str(store / "blobs" / "sha256-")) and spec.display_name == "ollama:tiny:latest"
    assert resolve("ollama:tiny:latest").key == spec.key  # one model, whichever way it is named
    answer = llm_magic.ask("hello", model="ollama:tiny", max_tokens=3, timeout=60)
    assert answer.n_tokens == 3 and answer.model == "ollama:tiny:latest"
    assert llm_magic.estimate("ollama:tiny").total_bytes == llm_magic.estimate(tiny_model).total_bytes


def test_other_namespaces_and_registries(store, tiny_model):
    add_model(store, "tiny", {"model": Path(tiny_model)}, "v1", ns="someone")
    add_model(store, "tiny-GGUF", {"model": Path(tiny_model)}, "Q4_K_M", ns="org", registry="hf.co")
    assert resolve("ollama:someone/tiny:v1").display_name == "ollama:someone/tiny:v1"
    assert resolve("ollama:hf.co/org/tiny-GGUF:Q4_K_M").path == resolve("ollama:someone/tiny:v1").path
    names = [n for n, _ in ollama_source.list_models()]
    assert names == ["ollama:hf.co/org/tiny-GGUF:Q4_K_M", "ollama:someone/tiny:v1"]


def test_a_projector_layer_makes_a_vision_model(store, tmp_path):
    from tiny_vision_gguf import png_bytes, write_tiny_vision_pair

    text, mmproj = write_tiny_vision_pair(tmp_path / "vision")
    add_model(store, "tiny-vision", {"model": text, "projector": mmproj})
    spec = resolve("ollama:tiny-vision")
    assert spec.mmproj and Path(spec.mmproj).read_bytes() == mmproj.read_bytes()
    answer = llm_magic.ask("what is it?", model="ollama:tiny-vision", images=[png_bytes()], max_tokens=3, timeout=60)
    assert answer.n_tokens >= 1


def test_an_unknown_name_lists_what_the_store_has(store, tiny_model, shell, monkeypatch):
    add_model(store, "tiny", {"model": Path(tiny_model)})
    add_model(store, "tiny", {"model": Path(tiny_model)}, "small")
    with pytest.raises(ModelNotFound) as info:
        resolve("ollama:llama3.2")
    message = str(info.value)
    assert "ollama:llama3.2:latest" in message and "ollama:tiny:latest" in message and "ollama:tiny:small" in message
    monkeypatch.setenv("LLM_MAGIC_MODEL", tiny_model)
    shell.run_line_magic("load_ext", "llm_magic")
    error, _ = run_error(shell, "%ask -m ollama:llama3.2 hi")
    assert type(error).__name__ == "UsageError" and "ollama:tiny:small" in str(error) and "\n" not in str(error)
    error, _ = run_error(shell, "%%ask -m 'ollama:tiny:no good'\nhi")
    assert "not a valid Ollama tag" in str(error)
    _, _ = run(shell, "%ask -n 2 still fine")
    assert llm_magic.last_answer().n_tokens == 2


def test_a_broken_store_is_one_line(store, tiny_model, tmp_path, monkeypatch):
    manifest = add_model(store, "tiny", {"model": Path(tiny_model)})
    manifest.write_text("{not json")
    with pytest.raises(ModelNotFound, match="corrupt") as info:
        resolve("ollama:tiny")
    assert "\n" not in str(info.value)
    manifest.write_text(
        json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64}]})
    )
    with pytest.raises(ModelNotFound, match="no model layer"):
        resolve("ollama:tiny")
    add_model(store, "tiny", {"model": Path(tiny_model)})
    shutil.rmtree(store / "blobs")
    with pytest.raises(ModelNotFound, match=r"blob .* is missing"):
        resolve("ollama:tiny")
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotFound, match="no Ollama store"):
        resolve("ollama:tiny")


def test_the_store_defaults_to_the_home_folder(tmp_path, monkeypatch, tiny_model):
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    add_model(tmp_path / ".ollama" / "models", "tiny", {"model": Path(tiny_model)})
    assert resolve("ollama:tiny").path.startswith(str(tmp_path / ".ollama" / "models" / "blobs"))
