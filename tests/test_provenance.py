"""llm_magic.provenance: the model file's sha256 computed once per file (memory and disk, keyed by
inode/size/mtime), in the background after an answer; the metadata every answer carries."""

from __future__ import annotations

import hashlib
import os
import threading

import llm_magic
from llm_magic import provenance
from llm_magic.provenance import FileHashes
from llm_magic.specs import resolve


def test_a_file_is_hashed_once_and_remembered_on_disk(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(os.urandom(3 << 20))
    expected = hashlib.sha256(f.read_bytes()).hexdigest()
    hashes = FileHashes(tmp_path / "cache")
    assert hashes.known(str(f)) is None
    assert hashes.compute(str(f)) == expected
    restarted = FileHashes(tmp_path / "cache")  # a new process: from the file, without reading the model
    assert restarted.known(str(f)) == expected
    os.utime(f, ns=(1, 1))  # another mtime: another file as far as the cache knows
    assert restarted.known(str(f)) is None


def test_hash_later_calls_back_from_a_thread_once_per_file(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"x" * 1000)
    hashes = FileHashes(tmp_path / "cache")
    got: list[str] = []
    done = threading.Event()

    def then(digest: str | None) -> None:
        got.append(digest)
        if len(got) == 2:
            done.set()

    hashes.hash_later(str(f), then)
    hashes.hash_later(str(f), then)  # joins the running one (or finds it known)
    assert done.wait(10)
    assert got == [hashlib.sha256(b"x" * 1000).hexdigest()] * 2
    assert not hashes.pending(str(f))


def test_every_answer_carries_its_provenance(use_model):
    answer = llm_magic.ask("hello", max_tokens=3, seed=7, temperature=0.5, top_k=5)
    meta = answer.provenance
    assert meta["model"] == os.path.basename(use_model) and meta["file"] == os.path.basename(use_model)
    assert meta["seed"] == 7 and meta["max_tokens"] == 3 and meta["grammar"] is False
    assert meta["sampling"]["temperature"] == 0.5 and meta["sampling"]["top_k"] == 5
    assert meta["finish_reason"] == answer.finish_reason and meta["n_tokens"] == answer.n_tokens
    assert meta["n_prompt_tokens"] == answer.n_prompt_tokens > 0
    assert set(meta["timings"]) >= {"ttft_s", "total_s", "tokens_per_s", "load_wait_s"}
    assert meta["versions"]["llm_magic"] == llm_magic.__version__
    assert meta["versions"]["llama_cpp_python"] and meta["versions"]["llama_cpp"]
    with open(use_model, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    for _ in range(200):  # hashed in the background after the answer
        if meta.get("sha256"):
            break
        threading.Event().wait(0.05)
    assert meta["sha256"] == digest


def test_remote_models_are_identified_by_url_and_model():
    llm_magic.current_settings().models = {"srv": {"base_url": "http://127.0.0.1:9/v1", "model": "m1"}}
    ident = provenance.model_identity(resolve("srv"))
    assert ident == {"model": "srv", "base_url": "http://127.0.0.1:9/v1", "remote_model": "m1"}
    key = provenance.request_key(ident, {"prompt": "x"})
    assert key and key != provenance.request_key(ident, {"prompt": "y"})
    assert provenance.request_key({"model": "local", "sha256": None}, {"prompt": "x"}) is None
