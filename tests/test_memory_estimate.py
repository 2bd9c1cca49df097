"""Issue 13 part 3: ``llm_magic.estimate()`` from the GGUF header, compared with the memory a real
load adds; a load that cannot fit (``memory_budget`` on its own, or the RAM available once the
idle models are evicted) is refused before loading with a one-line error saying what would fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic import default_model, runtime
from llm_magic.cache_entry import READY, Entry
from llm_magic.errors import ConfigError, ModelLoadError, ModelTooLarge
from llm_magic.eviction import lru_victims
from llm_magic.memory_estimate import estimate_file
from llm_magic.specs import ModelSpec

from conftest import run
from tiny_gguf import write_tiny_model

HERE = Path(__file__).parent

# One load in a fresh process: the resident memory it adds once a prompt longer than a micro-batch
# (512 tokens) and a few tokens have run, against the estimate. A warm-up load of another model
# first, so llama.cpp's one-time set-up (backends, thread pool) is not counted as the model's.
MEASURE = """
import gc, json, sys
sys.path.insert(0, sys.argv[1])
import psutil, llm_magic
from tiny_gguf import write_tiny_model
warm = str(write_tiny_model(sys.argv[2] + "/warm.gguf", seed=99))
llm_magic.ask("hi", model=warm, max_tokens=4)
llm_magic.unload(all=True)
llm_magic.current_settings().n_ctx = int(sys.argv[4])
gc.collect()
before = psutil.Process().memory_info().rss
llm_magic.ask("Tell me about Paris. " * 150, model=sys.argv[3], max_tokens=16)
grown = psutil.Process().memory_info().rss - before
print(json.dumps({"grown": grown, "estimate": llm_magic.estimate(sys.argv[3]).total_bytes}))
"""


def measured(model: str, n_ctx: int, tmp_path: Path) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(HERE), str(tmp_path), model, str(n_ctx)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return row["grown"], row["estimate"]


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> str:
    """A tiny model wide enough (24 MB of weights) that its memory is more than llama.cpp's fixed cost."""
    d = tmp_path_factory.mktemp("wide")
    return str(write_tiny_model(d / "wide.gguf", n_embd=512, n_ctx_train=32768))


@pytest.mark.parametrize("n_ctx", [2048, 8192])
def test_estimate_matches_the_memory_a_load_takes_tiny(wide_model, n_ctx, tmp_path):
    grown, est = measured(wide_model, n_ctx, tmp_path)
    assert 0.75 * grown <= est <= 1.25 * grown, (grown, est)


@pytest.mark.skipif(not default_model.is_installed(), reason="the default model (Gemma 3 270M) is not installed")
@pytest.mark.parametrize("n_ctx", [1024, 8192])
def test_estimate_matches_the_memory_a_load_takes_gemma(n_ctx, tmp_path):
    grown, est = measured(str(default_model.ensure()), n_ctx, tmp_path)
    assert 0.75 * grown <= est <= 1.25 * grown, (grown, est)


def test_estimate_reads_the_header(wide_model, tiny_model):
    est = llm_magic.estimate(wide_model, n_ctx=4096)
    # 2 layers x 4096 positions x (K + V: 2 KV heads x 128 wide each) x 2 bytes (f16)
    assert est.kv_bytes == 2 * 4096 * 2 * (2 * 128) * 2
    assert est.weights_bytes <= os.path.getsize(wide_model) <= est.weights_bytes + (1 << 20)
    assert est.total_bytes == est.weights_bytes + est.kv_bytes + est.compute_bytes
    assert est["total_bytes"] == est.total_bytes and set(dict(est)) >= {"weights_bytes", "kv_bytes", "total_bytes"}
    assert est.gpu_bytes == 0 and est.n_ctx == 4096  # this build runs on the CPU
    assert llm_magic.estimate(wide_model, n_ctx=10**6).n_ctx == 32768  # capped at the trained length, as a load is
    q8 = llm_magic.estimate(wide_model, n_ctx=4096, type_k="q8_0", type_v="q8_0")
    assert q8.kv_bytes == est.kv_bytes * 34 // 64  # 34 bytes per 32 values instead of 64
    assert llm_magic.estimate(wide_model, n_ctx=8192).kv_bytes == 2 * est.kv_bytes
    assert "KV cache" in est.summary() and "n_ctx 4096" in est.summary()


def test_estimate_gpu_share(wide_model):
    """The GPU's share when offloading, placed as llama.cpp places it: the output layer first,
    then the last blocks (with their part of the KV cache); the token embeddings stay in RAM."""
    from llm_magic.memory_estimate import _header

    tensors = _header(wide_model).tensor_bytes
    output = tensors["output.weight"] + tensors["output_norm.weight"]
    last_block = sum(v for k, v in tensors.items() if k.startswith("blk.1."))
    none = estimate_file(wide_model, 4096)
    one = estimate_file(wide_model, 4096, n_gpu_layers=1)
    two = estimate_file(wide_model, 4096, n_gpu_layers=2)
    every = estimate_file(wide_model, 4096, n_gpu_layers=-1)
    assert none.gpu_bytes == 0 and one.gpu_layers == 1 and every.gpu_layers == 3
    assert one.gpu_bytes == output  # the output layer alone
    assert two.gpu_bytes == output + last_block + none.kv_bytes // 2  # and the last block with its KV
    assert two.gpu_bytes < every.gpu_bytes <= every.total_bytes
    assert every.host_bytes == every.total_bytes - every.gpu_bytes >= tensors["token_embd.weight"]


def test_a_split_model_counts_every_part(tmp_path):
    whole = write_tiny_model(tmp_path / "whole.gguf", n_embd=256)
    write_tiny_model(tmp_path / "split" / "m.gguf", n_embd=256, split_max_tensors=6)
    parts = sorted((tmp_path / "split").glob("*.gguf"))
    assert len(parts) >= 3 and "-00001-of-" in parts[0].name
    one, split = estimate_file(whole, 2048), estimate_file(parts[0], 2048)
    assert split.weights_bytes == one.weights_bytes and split.total_bytes == one.total_bytes


def test_the_estimate_is_a_mapping(wide_model):
    est = llm_magic.estimate(wide_model)
    assert "kv_bytes" in est and est.get("nothing") is None and dict(est)["total_bytes"] == est.total_bytes
    assert len(est) == len(list(est)) and {"weights_bytes", "gpu_bytes", "host_bytes"} <= set(est)
    for bad in (-5, 0, "abc", 1.5, True):
        with pytest.raises(ConfigError, match="n_ctx"):
            llm_magic.estimate(wide_model, n_ctx=bad)


def test_the_room_a_container_leaves(tmp_path):
    """cgroup v2 and v1 limits (Docker, Kubernetes): the room is the limit less the usage."""
    from llm_magic.memory_estimate import cgroup_room

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("1073741824\n")
    (v2 / "memory.current").write_text("268435456\n")
    assert cgroup_room(str(v2)) == 768 << 20
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_room(str(v2)) is None
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(str(512 << 20))
    (v1 / "memory.usage_in_bytes").write_text(str(100 << 20))
    assert cgroup_room(str(tmp_path / "v1")) == 412 << 20
    (v1 / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # v1's "no limit"
    assert cgroup_room(str(tmp_path / "v1")) is None


def test_a_load_under_way_counts_against_the_memory_available(wide_model, monkeypatch):
    """Two loads at once: the one still loading has not allocated yet, but its estimate is taken."""
    from llm_magic import memory_estimate

    est = llm_magic.estimate(wide_model)
    cache = runtime.get().cache
    other = Entry(spec=ModelSpec(path="/m/loading.gguf"), state="loading", memory_bytes=est.total_bytes)
    cache._entries[other.spec.key] = other
    try:
        monkeypatch.setattr(memory_estimate, "available_memory", lambda: int(est.total_bytes * 1.5))
        with pytest.raises(ModelTooLarge, match="of RAM is available"):
            llm_magic.ask("x", model=wide_model, max_tokens=2)
    finally:
        del cache._entries[other.spec.key]
    assert llm_magic.ask("x", model=wide_model, max_tokens=2).n_tokens == 2  # alone, it fits


def test_estimate_bad_input(corrupt_files, tmp_path):
    for path in corrupt_files.values():
        with pytest.raises((ModelLoadError, llm_magic.ModelNotFound)) as info:
            llm_magic.estimate(str(path))
        assert "\n" not in str(info.value)
    with pytest.raises(llm_magic.ModelNotFound):
        llm_magic.estimate(str(tmp_path / "missing.gguf"))
    llm_magic.current_settings().models = {"far": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    with pytest.raises(ConfigError, match="remote"):
        llm_magic.estimate("far")


def test_over_the_memory_budget_is_refused_before_loading(wide_model):
    cache = runtime.get().cache
    est = llm_magic.estimate(wide_model, n_ctx=8192)
    llm_magic.current_settings().n_ctx = 8192
    llm_magic.current_settings().memory_budget = est.total_bytes - est.kv_bytes * 4 // 10
    with pytest.raises(ModelTooLarge) as info:
        llm_magic.ask("x", model=wide_model, max_tokens=2)
    message = str(info.value)
    assert "\n" not in message and "memory_budget is" in message and "not loaded" in message
    assert f"{est.total_bytes / (1 << 20):.0f} MB" in message  # the estimate
    assert "n_ctx=" in message and "q8_0" in message  # what would make it fit
    assert cache.constructions == 0  # refused before llama.cpp allocated anything
    # what the message suggests fits
    llm_magic.current_settings().type_k = llm_magic.current_settings().type_v = "q8_0"
    assert llm_magic.ask("x", model=wide_model, max_tokens=2).n_tokens == 2


def test_more_than_the_machine_has_is_refused(tmp_path):
    """A context whose KV cache alone is twice the RAM available: a one-line error, and the
    process never tried (without the check llama.cpp would allocate it, or the OOM killer end it)."""
    path = str(write_tiny_model(tmp_path / "long.gguf", n_ctx_train=2**31 - 1))
    per_token = 2 * 2 * 16 * 2 * 2  # 2 layers x (K + V) x 2 KV heads x 16 wide x 2 bytes... per head pair
    n_ctx = 2 * psutil.virtual_memory().available // per_token
    llm_magic.current_settings().n_ctx = int(n_ctx)
    rss = psutil.Process().memory_info().rss
    with pytest.raises(ModelTooLarge) as info:
        llm_magic.ask("x", model=path, max_tokens=2)
    assert "of RAM is available" in str(info.value) and "n_ctx=" in str(info.value)
    assert psutil.Process().memory_info().rss - rss < 200 << 20
    assert runtime.get().cache.constructions == 0


def test_refusal_in_a_cell_and_in_the_status(ip, wide_model):
    run(ip, f"%llm alias big {wide_model} --n-ctx 8192")
    llm_magic.current_settings().memory_budget = "1MB"
    with pytest.raises(UsageError) as info:
        run(ip, "%%ask -m big -n 2\nhi")
    assert "needs about" in str(info.value) and "\n" not in str(info.value)
    [entry] = llm_magic.preload("big")  # a background load: the refusal is kept, shown in the status
    assert entry.future is not None
    with pytest.raises(ModelTooLarge):
        entry.future.result(timeout=60)
    row = next(r for r in llm_magic.models() if r["name"] == "big" and r.get("error"))
    assert "memory_budget" in row["error"]
    assert "needs about" in llm_magic.status_table()


def _entry(name: str, memory: int, idle_since: float, active: int = 0) -> Entry:
    entry = Entry(spec=ModelSpec(path=f"/m/{name}"), state=READY, memory_bytes=memory)
    entry.idle_since, entry.active = idle_since, active
    return entry


def test_idle_models_are_evicted_to_fit_the_memory_available():
    old, recent, busy = _entry("old", 300, 1.0), _entry("recent", 300, 2.0), _entry("busy", 300, 0.5, active=1)
    incoming = Entry(spec=ModelSpec(path="/m/new"), memory_bytes=500)
    victims, over = lru_victims([old, recent, busy], incoming, 0, 0, free=250)
    assert [v.spec.path for v, _ in victims] == ["/m/old"] and over is None  # 250 + 300 >= 500
    victims, over = lru_victims([old, recent, busy], incoming, 0, 0, free=0)
    assert [v.spec.path for v, _ in victims] == ["/m/old", "/m/recent"] and over is None
    assert lru_victims([old, recent, busy], incoming, 0, 0, free=10**9) == ([], None)
