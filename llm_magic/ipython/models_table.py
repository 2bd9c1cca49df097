"""``%llm models``: the GGUF models found on this machine (``llm_magic.find_models()``) as a text
table: the name ``-m`` takes, size, architecture, quantization, trained context, chat template,
the memory estimate, and for a broken file why."""

from __future__ import annotations

from ..hf_source import cache_dir
from ..model_finder import FoundModel, llama_cpp_dir, lmstudio_dirs
from ..ollama_source import store
from ..settings import current
from .status_table import fmt_size

HEADERS = ("name (-m)", "source", "size", "arch", "quant", "context", "template", "estimate", "problem")


def places() -> str:
    """Where ``%llm models`` looks, for the empty table's message."""
    folders = [*current().model_dirs, str(cache_dir()), str(store()), *map(str, lmstudio_dirs()), str(llama_cpp_dir())]
    return ", ".join(folders)


def models_table(rows: list[FoundModel]) -> str:
    if not rows:
        return (
            f"no GGUF models found (looked in {places()}); "
            "add folders with %config AskMagics.model_dirs = ['/path/to/models']"
        )
    table = [
        (
            r.name,
            r.source,
            fmt_size(r.size_bytes),
            r.architecture or "-",
            r.quantization or "-",
            f"{r.context_length:,}" if r.context_length else "-",
            "-" if r.error else ("yes" if r.chat_template else "no"),
            fmt_size(r.estimate_bytes),
            r.error or "",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(HEADERS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    return "\n".join(lines)
