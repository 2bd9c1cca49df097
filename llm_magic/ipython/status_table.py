"""``%llm status``: the rows of ``llm_magic.models()`` as a text table, one row per model, with the
load options that are not the defaults (``n_ctx=8192``) in a column of their own, the memory it
takes loaded (the estimate: weights, KV cache, buffers), where it runs (``CPU``, or a GPU with the
layers offloaded), the chat template it uses (family and short hash) and the conversation KV state
it keeps."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any


def fmt_size(n: float | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _kind_note(row: dict[str, Any]) -> str:
    """Remote: the URL and latency. Vision: the projector file and the chat handler."""
    if row.get("kind") == "remote":
        latency = f", {row['latency_s'] * 1000:.0f} ms" if row.get("latency_s") is not None else ""
        return f"{row['path']}{latency}"
    if row.get("kind") == "vision":
        handler = f", handler {row['chat_handler']}" if row.get("chat_handler") else ""
        return f"mmproj {os.path.basename(row['mmproj'])}{handler}"
    return ""


def _state(row: dict[str, Any]) -> str:
    state = str(row["state"])
    if row.get("note") and state == "unloaded" and "evicted" in row["note"]:
        return "unloaded (evicted)"
    if state == "loading" and row.get("loading_s") is not None:
        return f"loading ({row['loading_s']:.1f} s)"
    return state


def _device(row: dict[str, Any]) -> str:
    """``CPU``, or the GPU and how many layers it holds: ``CUDA0 (NVIDIA H200), 19/19 layers``."""
    device = row.get("device")
    if not device:
        return "-"
    layers = row.get("gpu_layers")
    return f"{device}, {layers} layers" if device != "CPU" and layers else str(device)


def _kv_cache(row: dict[str, Any]) -> str:
    """The saved conversation KV states: ``2 saved, 3.1 MB``."""
    if row.get("kv_states") is None:
        return "-"
    size = f", {fmt_size(row['kv_bytes'])}" if row.get("kv_bytes") else ""
    return f"{row['kv_states']} saved{size}"


def status_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no models loaded or configured (see %llm help)"
    header = (
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
    lines = [
        (
            str(r["name"]),
            r.get("options") or "-",
            _state(r),
            fmt_size(r["size_bytes"]),
            fmt_size(r.get("memory_bytes")),
            f"{r['load_s']:.2f}" if r["load_s"] is not None else "-",
            str(r["uses"]),
            datetime.fromtimestamp(r["last_used"]).strftime("%H:%M:%S") if r["last_used"] else "-",
            _device(r),
            r.get("mlock") or "-",
            r.get("chat_template") or "-",
            _kv_cache(r),
            str(r["error"] or r.get("note") or _kind_note(r))[:200],
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip()]
        + [fmt.format(*line).rstrip() for line in lines]
    )
