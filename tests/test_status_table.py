"""llm_magic.ipython.status_table: %llm status's text table."""

from __future__ import annotations

import os
import time
from datetime import datetime

import llm_magic
from llm_magic.ipython.status_table import fmt_size, status_table

from conftest import run

HEADER = (
    "model",
    "options",
    "state",
    "size",
    "memory",
    "load s",
    "uses",
    "last used",
    "device",
    "mlock",
    "template",
    "kv cache",
    "error / note",
)
NOTE = HEADER.index("error / note")


def row(**kw):
    base = {
        "name": "m.gguf",
        "path": "/models/m.gguf",
        "state": "ready",
        "size_bytes": 1536,
        "memory_bytes": 3072,
        "load_s": 0.25,
        "uses": 3,
        "last_used": None,
        "error": None,
        "mlock": "on",
    }
    base.update(kw)
    return base


def cells(line: str, header: str) -> list[str]:
    """Split a table line at the header's column starts."""
    starts = [header.index(h) for h in HEADER]
    return [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]


def test_no_rows():
    assert status_table([]) == "no models loaded or configured (see %llm help)"


def test_fmt_size():
    assert [fmt_size(n) for n in (None, 0, 500, 2048, 5 * 2**20, 3 * 2**30, 5 * 2**40)] == [
        "-",
        "-",
        "500 B",
        "2.0 KB",
        "5.0 MB",
        "3.0 GB",
        "5120.0 GB",
    ]


def test_columns_line_up_and_cells_are_formatted():
    used = time.time()
    table = status_table(
        [
            row(),
            row(
                name="a-much-longer-name.gguf",
                state="failed",
                size_bytes=0,
                memory_bytes=None,
                load_s=None,
                uses=0,
                last_used=used,
                error="cannot load: " + "x" * 300,
                mlock=None,
            ),
        ]
    )
    header, rule, first, second = table.splitlines()
    assert header.split() == [
        "model",
        "options",
        "state",
        "size",
        "memory",
        "load",
        "s",
        "uses",
        "last",
        "used",
        "device",
        "mlock",
        "template",
        "kv",
        "cache",
        "error",
        "/",
        "note",
    ]
    assert set(rule.replace("  ", "")) == {"-"}
    assert cells(first, header) == [
        "m.gguf",
        "-",
        "ready",
        "1.5 KB",
        "3.0 KB",
        "0.25",
        "3",
        "-",
        "-",
        "on",
        "-",
        "-",
        "",
    ]
    second_cells = cells(second, header)
    assert second_cells[:11] == [
        "a-much-longer-name.gguf",
        "-",
        "failed",
        "-",
        "-",
        "-",
        "0",
        datetime.fromtimestamp(used).strftime("%H:%M:%S"),
        "-",
        "-",
        "-",
    ]
    assert second_cells[NOTE] == ("cannot load: " + "x" * 300)[:200]  # long errors are cut
    assert all(line == line.rstrip() for line in table.splitlines())


def test_states_and_notes():
    rows = [
        row(name="loading.gguf", state="loading", loading_s=2.26),
        row(name="evicted.gguf", state="unloaded", note="evicted (LRU) at 12:01:02"),
        row(name="remote", state="remote", kind="remote", path="http://127.0.0.1:8080/v1", latency_s=0.0123),
        row(name="vision", kind="vision", mmproj="/models/mmproj-f16.gguf", chat_handler="llava15"),
        row(name="noted", note="reloaded: the file changed", error=None),
    ]
    table = status_table(rows)
    header, _, *lines = table.splitlines()
    by_name = {cells(line, header)[0]: cells(line, header) for line in lines}
    assert by_name["loading.gguf"][2] == "loading (2.3 s)"
    assert (
        by_name["evicted.gguf"][2] == "unloaded (evicted)"
        and by_name["evicted.gguf"][NOTE] == "evicted (LRU) at 12:01:02"
    )
    assert by_name["remote"][NOTE] == "http://127.0.0.1:8080/v1, 12 ms"
    assert by_name["vision"][NOTE] == "mmproj mmproj-f16.gguf, handler llava15"
    assert by_name["noted"][NOTE] == "reloaded: the file changed"


def test_device_and_kv_cache_columns():
    rows = [
        row(name="cpu", device="CPU", gpu_layers="0/19", kv_states=0, kv_bytes=0),
        row(name="gpu", device="CUDA0 (NVIDIA H200)", gpu_layers="19/19", kv_states=2, kv_bytes=int(3.1 * 2**20)),
        row(name="half", device="CUDA0 (NVIDIA H200)", gpu_layers="10/19", kv_states=1, kv_bytes=2048),
        row(name="remote", state="remote", kind="remote", path="http://127.0.0.1:8080/v1"),
    ]
    header, _, *lines = status_table(rows).splitlines()
    by_name = {cells(line, header)[0]: cells(line, header) for line in lines}
    device, kv = HEADER.index("device"), HEADER.index("kv cache")
    assert [by_name[n][device] for n in ("cpu", "gpu", "half", "remote")] == [
        "CPU",
        "CUDA0 (NVIDIA H200), 19/19 layers",
        "CUDA0 (NVIDIA H200), 10/19 layers",
        "-",
    ]
    assert [by_name[n][kv] for n in ("cpu", "gpu", "half", "remote")] == [
        "0 saved",
        "2 saved, 3.1 MB",
        "1 saved, 2.0 KB",
        "-",
    ]


def test_options_tell_two_entries_of_one_file_apart():
    table = status_table(
        [
            row(options="n_ctx=8192"),
            row(options="n_ctx=4096 n_batch=64", state="closing", note="replaced by n_ctx=8192: closes when ..."),
        ]
    )
    header, _, new, old = table.splitlines()
    assert cells(new, header)[:3] == ["m.gguf", "n_ctx=8192", "ready"]
    assert cells(old, header)[:3] == ["m.gguf", "n_ctx=4096 n_batch=64", "closing"]
    assert cells(old, header)[NOTE].startswith("replaced by n_ctx=8192")


def test_status_of_real_models(ip, tiny_model):
    run(ip, f"%config AskMagics.models = {{'later': {{'path': {tiny_model!r}, 'n_ctx': 128}}}}")
    run(ip, "%%ask -n 2\nhi")
    table = llm_magic.status_table()
    header, _, *lines = table.splitlines()
    rows = {cells(line, header)[0]: cells(line, header) for line in lines}
    assert (
        rows["tiny.gguf"][2] == "ready"
        and rows["tiny.gguf"][6] == "1"
        and rows["tiny.gguf"][3] == fmt_size(os.path.getsize(tiny_model))
        and rows["tiny.gguf"][4] == fmt_size(llm_magic.estimate(tiny_model).total_bytes)
        and rows["tiny.gguf"][1] == "-"  # the default options
    )
    assert rows["later"][1:7] == ["n_ctx=128", "unloaded", "-", "-", "-", "0"]  # configured, not loaded yet
    _, out = run(ip, "%llm status")
    assert out.strip() == table


def test_the_chat_template_column():
    table = status_table([row(chat_template="qwen3 87a2728c"), row(name="base.gguf")])
    header, _, first, second = table.splitlines()
    at = HEADER.index("template")
    assert cells(first, header)[at] == "qwen3 87a2728c" and cells(second, header)[at] == "-"
