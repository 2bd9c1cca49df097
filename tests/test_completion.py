"""``%%ask -m <Tab>``: aliases and the models on this machine, through IPython's real completer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from IPython.core.completer import provisionalcompleter
from test_hf_source import put_in_cache
from test_ollama_source import add_model

from llm_magic.ipython import completion


@pytest.fixture
def found(tmp_path, monkeypatch, tiny_model):
    """A model folder, an HF cache and an Ollama store, each with one model."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    monkeypatch.delenv("LLAMA_CACHE", raising=False)
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "my-model.gguf")
    put_in_cache(tmp_path / "hf", "org/Tiny-GGUF", {"tiny-Q4_K_M.gguf": Path(tiny_model)})
    add_model(tmp_path / "ollama", "tiny", {"model": Path(tiny_model)}, "small")
    monkeypatch.setattr(completion, "_names", (0.0, []))  # no scan remembered from another test
    return folder


@pytest.fixture
def cshell(shell, found, use_model):
    shell.run_line_magic("load_ext", "llm_magic")
    shell.run_line_magic("config", f"AskMagics.model_dirs = [{str(found)!r}]")
    shell.run_line_magic("llm", f"alias tiny-alias {use_model}")
    return shell


def complete(shell, text: str, cursor: int | None = None) -> list[str]:
    cursor = len(text) if cursor is None else cursor
    with provisionalcompleter():
        return [c.text for c in shell.Completer.completions(text, cursor)]


def replaced(shell, text: str) -> list[str]:
    """What the line becomes with each completion applied (the replaced range included)."""
    with provisionalcompleter():
        return [text[: c.start] + c.text + text[c.end :] for c in shell.Completer.completions(text, len(text))]


def test_cell_magic_model_names(cshell, found):
    assert "tiny-alias" in complete(cshell, "%%ask -m tin")
    assert replaced(cshell, "%%ask -m hf:") == ["%%ask -m hf:org/Tiny-GGUF:tiny-Q4_K_M.gguf"]
    assert replaced(cshell, "%%ask -t 5 --model ollama:t") == ["%%ask -t 5 --model ollama:tiny:small"]
    assert replaced(cshell, f"%%ask -m {found}/my") == [f"%%ask -m {found}/my-model.gguf"]
    # in a whole cell, with the cursor on the first line
    text = "%%ask -m hf:org\nWhat is {x}?"
    with provisionalcompleter():
        [c] = [c for c in cshell.Completer.completions(text, len("%%ask -m hf:org")) if c.type == "model"]
    assert c.text == "hf:org/Tiny-GGUF:tiny-Q4_K_M.gguf"


def test_line_magic_and_llm_commands(cshell):
    assert "tiny-alias" in complete(cshell, "%ask -m ti")
    assert "ollama:tiny:small" in complete(cshell, "%llm load oll")
    assert "ollama:tiny:small" in complete(cshell, "%llm unload ollama:")
    assert "hf:org/Tiny-GGUF:tiny-Q4_K_M.gguf" in complete(cshell, "%llm alias small hf:")
    assert complete(cshell, "%ask -m ")  # everything, with nothing typed yet


def test_no_model_names_elsewhere(cshell):
    assert "tiny-alias" not in complete(cshell, "%ask -t tin")
    assert "tiny-alias" not in complete(cshell, "tin")
    assert "tiny-alias" not in complete(cshell, "%%ask -m x\ntin")


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_shell_complete_and_unload_ext(cshell):
    _, matches = cshell.complete("", "%ask -m ollama:", len("%ask -m ollama:"))
    assert any(m.endswith("tiny:small") for m in matches)
    cshell.run_line_magic("unload_ext", "llm_magic")
    assert completion.model_matcher not in cshell.Completer.custom_matchers


def test_vision_projectors_are_not_offered(cshell, found, tiny_model, tmp_path):
    shutil.copy(tiny_model, found / "mmproj-my-model-f16.gguf")
    put_in_cache(
        tmp_path / "hf",
        "org/Vision-GGUF",
        {"vision-Q4_K_M.gguf": Path(tiny_model), "mmproj-F16.gguf": Path(tiny_model)},
    )
    completion._names = (0.0, [])
    names = complete(cshell, "%%ask -m ")
    assert str(found / "my-model.gguf") in names and "hf:org/Vision-GGUF:vision-Q4_K_M.gguf" in names
    assert not [n for n in names if "mmproj" in n.lower()]
    with provisionalcompleter():  # (IPython's own file completion may still offer the path)
        text = f"%%ask -m {found}/mm"
        assert [c for c in cshell.Completer.completions(text, len(text)) if c.type == "model"] == []
