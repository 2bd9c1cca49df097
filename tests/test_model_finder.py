"""``%llm models`` and ``llm_magic.find_models()``: the GGUF files in ``AskMagics.model_dirs``, the
Hugging Face cache, Ollama's store, LM Studio's folders and llama.cpp's cache, described from their
headers only (never loaded), broken ones with a reason, fast on 100 files."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from test_hf_source import put_in_cache
from test_ollama_source import add_model

import llm_magic
from llm_magic import model_finder, settings

from conftest import run
from tiny_gguf import write_tiny_model


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Every place the finder looks, empty, under this test's tmp dir (HOME included)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    monkeypatch.delenv("LLAMA_CACHE", raising=False)
    return home


def test_every_source_is_listed_with_its_name_for_m(places, tmp_path, tiny_model, chat_model, corrupt_files):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(chat_model, folder / "chat-Q8_0.gguf")
    shutil.copy(corrupt_files["not_gguf"], folder / "x.gguf")
    shutil.copy(corrupt_files["truncated"], folder / "truncated.gguf")
    (folder / "notes.txt").write_text("not a model")
    settings.current().model_dirs = [str(folder)]
    put_in_cache(
        tmp_path / "hf", "org/Tiny-GGUF", {"tiny-Q4_K_M.gguf": Path(tiny_model), "mmproj-F16.gguf": Path(tiny_model)}
    )
    add_model(tmp_path / "ollama", "tiny", {"model": Path(tiny_model)}, "small")
    lm = places / ".lmstudio" / "models" / "pub" / "Tiny-GGUF"
    lm.mkdir(parents=True)
    shutil.copy(tiny_model, lm / "lm-tiny.gguf")
    llama_cache = places / ".cache" / "llama.cpp"
    llama_cache.mkdir(parents=True)
    shutil.copy(tiny_model, llama_cache / "org_Tiny-GGUF_tiny.gguf")

    rows = {r.name: r for r in llm_magic.find_models()}
    hf = rows["hf:org/Tiny-GGUF:tiny-Q4_K_M.gguf"]
    assert hf.source == "hf" and hf.architecture == "llama" and hf.context_length == 32768 and hf.error is None
    assert hf.quantization == "F32" and hf.chat_template is False  # general.file_type of the tiny model
    assert not any("mmproj" in n for n in rows)  # a projector is not a text model
    assert rows["ollama:tiny:small"].source == "ollama"
    chat = rows[str(folder / "chat-Q8_0.gguf")]
    assert chat.source == "folder" and chat.chat_template is True and chat.size_bytes == Path(chat_model).stat().st_size
    assert rows[str(lm / "lm-tiny.gguf")].source == "lmstudio"
    assert rows[str(llama_cache / "org_Tiny-GGUF_tiny.gguf")].source == "llama.cpp"
    assert "not a GGUF file" in rows[str(folder / "x.gguf")].error
    assert "truncated" in rows[str(folder / "truncated.gguf")].error
    assert str(folder / "notes.txt") not in rows
    # every name is one -m takes
    for name in ("hf:org/Tiny-GGUF:tiny-Q4_K_M.gguf", "ollama:tiny:small", str(lm / "lm-tiny.gguf")):
        assert llm_magic.ask("hi", model=name, max_tokens=1, timeout=60).n_tokens == 1
    assert rows[str(folder / "x.gguf")].as_dict()["error"]


def test_llama_cache_env_and_the_other_lm_studio_folder(places, tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("LLAMA_CACHE", str(tmp_path / "lc"))
    (tmp_path / "lc").mkdir()
    shutil.copy(tiny_model, tmp_path / "lc" / "a.gguf")
    other = places / ".cache" / "lm-studio" / "models" / "p" / "r"
    other.mkdir(parents=True)
    shutil.copy(tiny_model, other / "b.gguf")
    sources = {Path(r.path).name: r.source for r in llm_magic.find_models()}
    assert sources == {"a.gguf": "llama.cpp", "b.gguf": "lmstudio"}


def test_a_split_model_is_one_row_with_the_size_of_its_parts(places, tmp_path):
    folder = tmp_path / "split"
    first = write_tiny_model(folder / "big-F16.gguf", split_max_tensors=8)
    settings.current().model_dirs = [str(folder)]
    [row] = llm_magic.find_models()
    assert row.path == str(first) and row.size_bytes == sum(p.stat().st_size for p in folder.glob("*.gguf"))
    assert row.error is None and row.architecture == "llama"


def test_a_hundred_files_are_read_fast_from_their_headers(
    places, tmp_path, tiny_model, chat_model, llama_constructions
):
    folder = tmp_path / "hundred"
    folder.mkdir()
    for i in range(100):
        shutil.copy(chat_model if i % 2 else tiny_model, folder / f"model-{i:03d}.gguf")
    settings.current().model_dirs = [str(folder)]
    started = time.monotonic()
    rows = llm_magic.find_models()
    took = time.monotonic() - started
    assert len(rows) == 100 and all(r.error is None and r.architecture == "llama" for r in rows)
    assert sum(r.chat_template for r in rows) == 50
    assert took < 30, f"{took:.1f} s for 100 headers"  # generous: ~0.1 s alone on 2 cores
    assert llama_constructions["n"] == 0  # headers only: not one model loaded


def test_a_header_read_stops_before_the_tensor_data(tmp_path):
    """The token list is skipped by its lengths: a 50k-token vocabulary reads as fast as a tiny one."""
    big = write_tiny_model(tmp_path / "vocab.gguf", n_vocab_extra=20000)
    started = time.monotonic()
    for _ in range(10):
        row = model_finder.describe("folder", str(big), big)
    assert row.error is None and row.context_length == 2048
    assert time.monotonic() - started < 10


def test_llm_models_prints_the_table(places, shell, tmp_path, chat_model, corrupt_files, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(chat_model, folder / "chat.gguf")
    shutil.copy(corrupt_files["not_gguf"], folder / "x.gguf")
    monkeypatch.setenv("LLM_MAGIC_MODEL", chat_model)
    shell.run_line_magic("load_ext", "llm_magic")
    shell.run_line_magic("config", f"AskMagics.model_dirs = [{str(folder)!r}]")
    _, out = run(shell, "%llm models")
    header, *lines = out.strip().splitlines()
    for column in ("name (-m)", "size", "arch", "quant", "context", "template", "estimate", "problem"):
        assert column in header
    chat = next(line for line in lines if line.startswith(str(folder / "chat.gguf")))
    assert "llama" in chat and "32,768" in chat and "yes" in chat
    broken = next(line for line in lines if line.startswith(str(folder / "x.gguf")))
    assert "not a GGUF file" in broken
    assert "%llm models" in run(shell, "%llm help")[1]


def test_nothing_found_says_where_it_looked(places, shell, tiny_model, monkeypatch):
    monkeypatch.setenv("LLM_MAGIC_MODEL", tiny_model)
    shell.run_line_magic("load_ext", "llm_magic")
    _, out = run(shell, "%llm models")
    assert out.startswith("no GGUF models found") and "model_dirs" in out and ".ollama" not in out


def test_the_estimate_column_is_the_memory_estimate_with_the_settings(places, tmp_path, tiny_model):
    from llm_magic.memory_estimate import estimate_file

    settings.current().model_dirs = [str(Path(tiny_model).parent)]
    settings.current().n_ctx = 8192
    [row] = [r for r in llm_magic.find_models() if r.path == tiny_model]
    assert row.estimate_bytes == estimate_file(tiny_model, 8192).total_bytes
    assert row.estimate_bytes == llm_magic.estimate(tiny_model).total_bytes  # what a load would take
    assert row.estimate_bytes > estimate_file(tiny_model, 512).total_bytes  # the KV cache counts


def test_a_row_is_also_a_read_only_mapping(places, tmp_path, tiny_model):
    settings.current().model_dirs = [str(Path(tiny_model).parent)]
    [row] = [r for r in llm_magic.find_models() if r.path == tiny_model]
    assert row["name"] == row.name == tiny_model and row["source"] == "folder"
    assert "name" in row and "estimate_bytes" in row and "nonsense" not in row
    assert dict(row) == row.as_dict() and list(row) == list(row.as_dict()) and len(row) == len(row.as_dict())
    assert row.get("quantization") == row.quantization and row.get("nonsense", 7) == 7
    with pytest.raises(KeyError):
        row["nonsense"]
    with pytest.raises(TypeError):
        row["name"] = "x"  # type: ignore[index]
    assert {row: 1}[row] == 1 and row == model_finder.describe("folder", tiny_model, Path(tiny_model))


def test_each_header_is_read_once(places, tmp_path, tiny_model, chat_model, monkeypatch):
    from llm_magic import gguf_header, memory_estimate

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "tiny.gguf")
    shutil.copy(chat_model, folder / "chat.gguf")
    settings.current().model_dirs = [str(folder)]
    reads: list[str] = []

    def counting(path, *args, **kwargs):
        reads.append(str(path))
        return gguf_header.read_header(path, *args, **kwargs)

    monkeypatch.setattr(memory_estimate, "_headers", {})
    monkeypatch.setattr(memory_estimate, "read_header", counting)
    monkeypatch.setattr(model_finder, "read_header", counting, raising=False)
    rows = llm_magic.find_models()
    assert all(r.error is None and r.estimate_bytes for r in rows) and len(rows) == 2
    assert sorted(reads) == sorted(str(folder / n) for n in ("chat.gguf", "tiny.gguf"))
