"""Issue 15's rows: asking about data. ``make bench BENCH_ONLY=context``.

- a 10,000 × 30 DataFrame summarised for ``{df}``: every column name and dtype present, prompt tokens
  counted with the model's own tokenizer (≤ 1000), time to summarise (< 50 ms);
- a 1 GB numpy array summarised (< 50 ms);
- ``%%ask --cache`` replaying an identical ask from the log: the whole cell (< 20 ms), 0 model calls;
- one log write (< 2 ms);
- ``%llm log --search`` over a 100,000-ask log (< 200 ms).

Summaries and searches alternate with each other rep by rep; each figure is a median [min–max].
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import fmt, md_table, ok, summary

ROOT = Path(__file__).resolve().parent.parent
LOG_ROWS = 100_000
WORDS = ("apples", "pears", "plums", "cherries", "quinces", "figs", "dates", "limes", "grapes", "melons")


def _frame() -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.random((10_000, 30)), columns=[f"measurement_{i:02d}" for i in range(30)])
    df["measurement_03"] = df["measurement_03"].map("{:.3f}".format)  # strings (object dtype)
    df["measurement_07"] = pd.date_range("2024-01-01", periods=10_000, freq="min")
    df["measurement_11"] = rng.integers(0, 100, 10_000)
    df.loc[::9, "measurement_05"] = np.nan
    return df


def _row(i: int) -> dict[str, Any]:
    word = WORDS[i % len(WORDS)]
    prompt = f"Question {i}: what do you know about {word} grown in region {i % 97}? " * 3
    return {
        "created": "2026-01-01T00:00:00+00:00",
        "model": "gemma-3-270m-q4_k_m.gguf",
        "model_sha256": "0" * 64,
        "request_key": f"{i:064x}",
        "prompt": prompt,
        "model_prompt": f"Q: {prompt}\nA:",
        "answer": f"An answer about {word} number {i}. " * 4,
        "finish_reason": "stop",
        "n_prompt_tokens": 60,
        "n_tokens": 40,
        "total_s": 0.5,
        "parts": {"prompt": prompt, "max_tokens": 512, "seed": None},
        "metadata": {"model": "gemma", "sampling": {"temperature": 0.7}, "versions": {"llm_magic": "x"}},
    }


def _fill(book: Any, n: int) -> None:
    """Bulk-load ``n`` rows through the log's own connection (one transaction; the FTS trigger runs)."""
    import json

    from llm_magic import ask_log

    conn = book._connect()
    names = list(_row(0))
    sql = f"INSERT INTO asks ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"

    def values(i: int) -> list[Any]:
        r = _row(i)
        r["parts"], r["metadata"] = json.dumps(r["parts"]), json.dumps(r["metadata"])
        return [r[k] for k in names]

    conn.execute("BEGIN")
    conn.executemany(sql, (values(i) for i in range(n)))
    conn.execute("COMMIT")
    assert isinstance(book, ask_log.AskLog)


def run(model: str, reps: int = 7) -> tuple[dict[str, Any], str]:
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    import llm_magic
    from llm_magic import ask_log, provenance, runtime
    from llm_magic.summaries import summarize
    from llm_magic.token_count import TokenCounter

    data_dir = tempfile.mkdtemp(prefix="bench-context-")
    os.environ["LLM_MAGIC_DATA_DIR"] = data_dir
    llm_magic.preload(model)
    runtime.get().cache.get(llm_magic.resolve(model))
    counter = TokenCounter(model)
    counter.resolve()
    assert counter.exact, "the model's own tokenizer is needed for the token row"

    df = _frame()
    big = np.random.default_rng(1).random((16_384, 8_192))  # 1 GiB of float64
    frame_ms: list[float] = []
    array_ms: list[float] = []
    frame_tokens: list[int] = []
    all_columns = True
    for _ in range(reps):
        t0 = time.perf_counter()
        s = summarize(df, budget=1000, count=counter)
        frame_ms.append((time.perf_counter() - t0) * 1000)
        frame_tokens.append(counter(s.text))
        all_columns &= all(f"{c}: {t}" in s.text for c, t in df.dtypes.items())
        t0 = time.perf_counter()
        summarize(big, budget=1000, count=counter)
        array_ms.append((time.perf_counter() - t0) * 1000)
    del big

    # replay: the whole %%ask --cache cell, in a shell, against a real earlier answer
    cfg = Config()
    cfg.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=cfg)
    shell.run_line_magic("load_ext", "llm_magic")
    shell.run_line_magic("config", f"AskMagics.model = {model!r}")
    cell = "%%ask -n 32 --seed 1 -f text -o a\nWhat is the capital of France?"
    with contextlib.redirect_stdout(io.StringIO()):
        shell.run_cell(cell)
    name = shell.user_ns["a"].model
    provenance.HASHES.wait(model)  # Run All after a restart: the file's hash is known (on disk)
    uses = next(r["uses"] for r in llm_magic.models() if r["name"] == name)
    replay_ms: list[float] = []
    replayed = True
    for _ in range(reps):
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            shell.run_cell(cell.replace("-o a", "-o b --cache"))
            replay_ms.append((time.perf_counter() - t0) * 1000)
        replayed &= bool(shell.user_ns["b"].replayed)
    model_calls = next(r["uses"] for r in llm_magic.models() if r["name"] == name) - uses

    # the log: single writes, then a 100,000-ask log searched through %llm log --search
    book = ask_log.AskLog(Path(data_dir) / "bench-log.db")
    book.append(_row(0))  # the connection and the schema: once per process, not per write
    write_ms: list[float] = []
    for i in range(max(50, reps * 20)):
        row = _row(i)
        t0 = time.perf_counter()
        book.append(row)
        write_ms.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    _fill(book, LOG_ROWS - book.count())
    fill_s = time.perf_counter() - t0
    n_rows = book.count()
    shell.run_line_magic("config", f"AskMagics.log = {str(book.path)!r}")
    search_ms: list[float] = []
    found = 0
    for i in range(reps):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            t0 = time.perf_counter()
            shell.run_line_magic("llm", f"log 10 --search {WORDS[i % len(WORDS)]} region")
            search_ms.append((time.perf_counter() - t0) * 1000)
        found = out.getvalue().count("\n  Q: ")
    shell.run_line_magic("unload_ext", "llm_magic")
    llm_magic.cleanup_models()

    fs, arr, rp, wr, se = (summary(x) for x in (frame_ms, array_ms, replay_ms, write_ms, search_ms))
    tokens = summary(frame_tokens)
    rows = [
        (
            "15 data",
            "`{df}` of a 10,000 × 30 DataFrame: every column name and dtype; prompt tokens; time to summarise",
            f"all columns: {all_columns}; {int(tokens['max'])} tokens; {fmt(fs, ' ms', 1)}",
            "pandas' own repr: columns elided",
            "—",
            ok(all_columns and tokens["max"] <= 1000 and fs["median"] < 50) + " (≤ 1000 tokens, < 50 ms)",
        ),
        (
            "15 array",
            "`{a}` of a 1 GB float64 numpy array",
            fmt(arr, " ms", 1),
            "—",
            "—",
            ok(arr["median"] < 50) + " (< 50 ms)",
        ),
        (
            "15 replay",
            "`%%ask --cache` cell answered from the log",
            f"{fmt(rp, ' ms', 1)}; model calls {model_calls}; replayed {replayed}",
            "—",
            "—",
            ok(rp["median"] < 20 and model_calls == 0 and replayed) + " (< 20 ms, 0 calls)",
        ),
        (
            "15 log write",
            "one ask appended to the SQLite log (WAL, FTS5)",
            fmt(wr, " ms", 3),
            "—",
            "—",
            ok(wr["median"] < 2) + " (< 2 ms)",
        ),
        (
            "15 log search",
            f"`%llm log 10 --search WORD region` over {n_rows:,} asks",
            f"{fmt(se, ' ms', 1)}; {found} shown",
            "—",
            "—",
            ok(se["median"] < 200) + " (< 200 ms)",
        ),
    ]
    table = md_table(["issue row", "measure", "llm_magic median [min–max]", "baseline", "ratio", "target"], rows)
    table += (
        f"\n\n{reps} repetitions. Tokens counted with the model's own tokenizer. Replays start once the model "
        "file's hash is known (as after a restart: it is cached on disk; right after the very first answer "
        "of a new file a replay waits for the background hash). The 100,000-ask log was "
        f"filled in {fill_s:.1f} s (one transaction); searches use SQLite FTS5 (prefix match of every word)."
    )
    data = {
        "frame_ms": frame_ms,
        "frame_tokens": frame_tokens,
        "all_columns": all_columns,
        "array_ms": array_ms,
        "replay_ms": replay_ms,
        "model_calls": model_calls,
        "write_ms": write_ms,
        "search_ms": search_ms,
        "log_rows": n_rows,
        "headline": rows,
    }
    return data, table
