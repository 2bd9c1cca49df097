"""llm_magic.ipython.status_table: %llm status's text table."""

from __future__ import annotations

import os
import time
from datetime import datetime

import llm_magic
from llm_magic.ipython.status_table import fmt_size, status_table

from conftest import run

HEADER = ("model", "state", "size", "load s", "uses", "last used", "mlock", "error / note")


def row(**kw):
    base = {
        "name": "m.gguf",
        "path": "/models/m.gguf",
        "state": "ready",
        "size_bytes": 1536,
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
        "state",
        "size",
        "load",
        "s",
        "uses",
        "last",
        "used",
        "mlock",
        "error",
        "/",
        "note",
    ]
    assert set(rule.replace("  ", "")) == {"-"}
    assert cells(first, header) == ["m.gguf", "ready", "1.5 KB", "0.25", "3", "-", "on", ""]
    second_cells = cells(second, header)
    assert second_cells[:7] == [
        "a-much-longer-name.gguf",
        "failed",
        "-",
        "-",
        "0",
        datetime.fromtimestamp(used).strftime("%H:%M:%S"),
        "-",
    ]
    assert second_cells[7] == ("cannot load: " + "x" * 300)[:200]  # long errors are cut
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
    assert by_name["loading.gguf"][1] == "loading (2.3 s)"
    assert (
        by_name["evicted.gguf"][1] == "unloaded (evicted)" and by_name["evicted.gguf"][7] == "evicted (LRU) at 12:01:02"
    )
    assert by_name["remote"][7] == "http://127.0.0.1:8080/v1, 12 ms"
    assert by_name["vision"][7] == "mmproj mmproj-f16.gguf, handler llava15"
    assert by_name["noted"][7] == "reloaded: the file changed"


def test_status_of_real_models(ip, tiny_model):
    run(ip, f"%config AskMagics.models = {{'later': {{'path': {tiny_model!r}, 'n_ctx': 128}}}}")
    run(ip, "%%ask -n 2\nhi")
    table = llm_magic.status_table()
    header, _, *lines = table.splitlines()
    rows = {cells(line, header)[0]: cells(line, header) for line in lines}
    assert (
        rows["tiny.gguf"][1] == "ready"
        and rows["tiny.gguf"][4] == "1"
        and rows["tiny.gguf"][2] == fmt_size(os.path.getsize(tiny_model))
    )
    assert rows["later"][1:5] == ["unloaded", "-", "-", "0"]  # configured, not loaded yet
    _, out = run(ip, "%llm status")
    assert out.strip() == table
