"""llm_magic.gguf_header: ``read_header`` on a real tiny model (architecture, trained context, an
early stop with ``until``, ``full=True``'s data end) and on hand-written GGUF bytes; ``diagnose``
on files llama.cpp refuses (empty, not GGUF, header cut short, absurd lengths, tensor data missing)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from llm_magic.gguf_header import GGUFError, diagnose, read_header

from conftest import LONG_CTX

# ---- a minimal GGUF writer (little-endian, version 3) -------------------------------------------


def gstr(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def kv_str(key: str, value: str) -> bytes:
    return gstr(key) + struct.pack("<I", 8) + gstr(value)


def kv_u32(key: str, value: int) -> bytes:
    return gstr(key) + struct.pack("<II", 4, value)


def preamble(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def tensor_info(name: str, dims: list[int], ttype: int = 0, offset: int = 0) -> bytes:
    return (
        gstr(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", ttype, offset)
    )


def one_tensor_file(path: Path, *, alignment: int | None = None, ttype: int = 0, cut: int = 0) -> int:
    """A GGUF with one 8-element tensor (32 bytes in F32); returns where its data must end."""
    kvs = [kv_str("general.architecture", "llama")]
    if alignment is not None:
        kvs.append(kv_u32("general.alignment", alignment))
    head = preamble(1, len(kvs)) + b"".join(kvs) + tensor_info("t", [8], ttype)
    align = alignment or 32
    start = -(-len(head) // align) * align
    data = head + b"\0" * (start - len(head)) + b"\1" * 32
    path.write_bytes(data[: len(data) - cut])
    return start + 32


# ---- read_header on a real model ----------------------------------------------------------------


def test_read_header_of_the_tiny_model(tiny_model):
    h = read_header(tiny_model)
    assert h.version == 3 and h.n_tensors == 21  # token_embd, 9 per block x 2, output_norm, output
    assert h.architecture == "llama" and h.context_length == LONG_CTX
    assert h.metadata["general.name"] == "tiny-test" and h.metadata["llama.block_count"] == 2
    assert h.metadata["tokenizer.ggml.add_bos_token"] is True
    assert h.metadata["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert "tokenizer.ggml.tokens" in h.metadata and h.metadata["tokenizer.ggml.tokens"] is None  # arrays skipped
    assert h.data_end is None  # only a full read computes it


def test_until_stops_reading_as_soon_as_it_has_what_it_needs(tiny_model):
    seen: list[int] = []

    def until(metadata):
        seen.append(len(metadata))
        return "llama.context_length" in metadata

    h = read_header(tiny_model, until=until)
    assert h.context_length == LONG_CTX
    assert list(h.metadata) == ["general.architecture", "general.name", "general.file_type", "llama.context_length"]
    assert seen == [1, 2, 3, 4]  # called once per key, never again after it said stop


def test_until_that_never_holds_reads_every_key(tiny_model):
    assert read_header(tiny_model, until=lambda m: False).metadata == read_header(tiny_model).metadata


def test_full_read_gives_where_tensor_data_ends(tiny_model):
    h = read_header(tiny_model, full=True, until=lambda m: True)  # full reads everything regardless
    assert h.context_length == LONG_CTX and "tokenizer.ggml.tokens" in h.metadata
    assert h.data_end == os.path.getsize(tiny_model)
    assert diagnose(tiny_model) is None


def test_full_read_of_a_hand_written_file(tmp_path):
    path = tmp_path / "one.gguf"
    end = one_tensor_file(path)
    h = read_header(path, full=True)
    assert (h.version, h.n_tensors, h.architecture, h.context_length) == (3, 1, "llama", None)
    assert h.data_end == end == path.stat().st_size and end % 32 == 0
    assert diagnose(path) is None


def test_general_alignment_moves_the_data_start(tmp_path):
    path = tmp_path / "aligned.gguf"
    end = one_tensor_file(path, alignment=256)
    assert (end - 32) % 256 == 0
    assert read_header(path, full=True).data_end == end


def test_a_tensor_type_it_does_not_know_is_not_guessed(tmp_path):
    path = tmp_path / "unknown_type.gguf"
    one_tensor_file(path, ttype=200, cut=16)
    assert read_header(path, full=True).data_end is None
    assert diagnose(path) is None  # cannot tell: llama.cpp will say


def test_version_2_is_read(tmp_path):
    path = tmp_path / "v2.gguf"
    path.write_bytes(preamble(0, 1, version=2) + kv_str("general.architecture", "gemma3"))
    assert read_header(path).architecture == "gemma3"


# ---- what is wrong with a bad file --------------------------------------------------------------


def test_corrupt_fixture_files(corrupt_files):
    assert diagnose(corrupt_files["not_gguf"]) == (
        "not a GGUF file (it starts with b'this', a GGUF file starts with b'GGUF'; size 41 bytes)"
    )
    reason = diagnose(corrupt_files["truncated"])
    size = corrupt_files["truncated"].stat().st_size
    assert reason.startswith(f"truncated: tensor data needs {2 * size} bytes but the file has {size}")
    assert read_header(corrupt_files["truncated"]).architecture == "llama"  # the header itself is whole


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(GGUFError, match=r"^the file is empty \(0 bytes\)$"):
        read_header(path)
    assert diagnose(path) == "the file is empty (0 bytes)"


@pytest.mark.parametrize("data", [b"GG", b"GGML" + b"\0" * 60, b"PK\x03\x04zipfile"])
def test_not_gguf(tmp_path, data):
    path = tmp_path / "x.gguf"
    path.write_bytes(data)
    reason = diagnose(path)
    assert reason == (
        f"not a GGUF file (it starts with {data[:4]!r}, a GGUF file starts with b'GGUF'; size {len(data)} bytes)"
    )


@pytest.mark.parametrize("keep", [4, 6, 12, 24, 40, 100, 5000])
def test_header_cut_short(tiny_model, tmp_path, keep):
    path = tmp_path / "cut.gguf"
    path.write_bytes(Path(tiny_model).read_bytes()[:keep])
    with pytest.raises(GGUFError, match=rf"^truncated: the GGUF header stops early \(file is only {keep} bytes\)$"):
        read_header(path, full=True)
    assert diagnose(path).startswith("truncated")


def test_a_string_length_of_2_62_is_a_clean_truncation(tmp_path):
    path = tmp_path / "huge_string.gguf"
    path.write_bytes(preamble(0, 1) + struct.pack("<Q", 2**62) + b"general.architecture")
    with pytest.raises(GGUFError, match="truncated"):
        read_header(path)
    assert diagnose(path) == f"truncated: the GGUF header stops early (file is only {path.stat().st_size} bytes)"


def test_a_string_array_count_of_2_62_is_a_clean_truncation(tmp_path):
    path = tmp_path / "huge_string_array.gguf"
    path.write_bytes(preamble(0, 1) + gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**62) + gstr("a"))
    with pytest.raises(GGUFError, match="truncated"):
        read_header(path)
    assert diagnose(path).startswith("truncated")


def test_a_scalar_array_count_of_2_40_is_a_clean_truncation(tmp_path):
    path = tmp_path / "big_array.gguf"
    path.write_bytes(preamble(0, 1) + gstr("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2**40))
    with pytest.raises(GGUFError, match="truncated"):
        read_header(path)
    assert diagnose(path).startswith("truncated")


def test_a_scalar_array_count_of_2_62_is_a_clean_truncation(tmp_path):
    path = tmp_path / "huge_array.gguf"
    path.write_bytes(preamble(0, 1) + gstr("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2**62))
    assert diagnose(path).startswith("truncated")
    with pytest.raises(GGUFError, match="truncated"):
        read_header(path)


def test_a_tensor_count_larger_than_the_file(tmp_path):
    path = tmp_path / "many_tensors.gguf"
    path.write_bytes(preamble(2**40, 1) + kv_str("general.architecture", "llama"))
    assert read_header(path).architecture == "llama"  # the metadata alone is fine
    assert diagnose(path).startswith("truncated: the GGUF header stops early")


def test_unsupported_version_and_unknown_value_type(tmp_path):
    path = tmp_path / "v99.gguf"
    path.write_bytes(preamble(0, 0, version=99))
    assert diagnose(path) == "unsupported GGUF version 99"
    path.write_bytes(preamble(0, 1) + gstr("key") + struct.pack("<I", 77) + b"\0" * 8)
    with pytest.raises(GGUFError, match=r"^unknown metadata value type 77$"):
        read_header(path)


@pytest.mark.parametrize("cut", [1, 16, 32])
def test_tensor_data_missing_at_the_end(tmp_path, cut):
    path = tmp_path / "short_data.gguf"
    end = one_tensor_file(path, cut=cut)
    assert read_header(path, full=True).data_end == end  # the header reads fine
    assert diagnose(path) == (
        f"truncated: tensor data needs {end} bytes but the file has {end - cut} (an interrupted download or copy?)"
    )


def test_files_that_cannot_be_read(tmp_path):
    assert diagnose(tmp_path / "missing.gguf") == "cannot read it: No such file or directory"
    assert diagnose(tmp_path) == "cannot read it: Is a directory"
    with pytest.raises(FileNotFoundError):
        read_header(tmp_path / "missing.gguf")
