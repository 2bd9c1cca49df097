"""Remote row (issue 5; llama-server since issue 13): time to first token and tokens/s through `%%ask -m srv`
against the same server called with the bare `openai` client, same tiny model, interleaved — on
`python -m llama_cpp.server` and on llama.cpp's own `llama-server` (built once, see llama_cpp_build.py)."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import fmt, summary

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Tell me about Paris."


class _Sink:
    def __init__(self):
        self.marks: list[float] = []

    def write(self, s: str) -> int:
        if s.strip():
            self.marks.append(time.perf_counter())
        return len(s)

    def flush(self) -> None:
        pass


SERVERS = ("llama_cpp.server", "llama-server")


def _measure(srv: Any, shell: Any, reps: int, max_tokens: int) -> dict[str, list]:
    """Interleaved `%%ask -m srv` and bare-client runs against one server."""
    import openai

    import llm_magic

    client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
    shell.run_line_magic("config", f"AskMagics.models = {{'srv': {{'base_url': {srv.url!r}, 'model': 'tiny'}}}}")
    llm_magic.unload(all=True)
    llm_magic.ask("warm", model="srv", max_tokens=4)

    def bare() -> dict[str, float]:
        t0 = time.perf_counter()
        marks = []
        for chunk in client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                marks.append(time.perf_counter())
        return {"ttft_ms": (marks[0] - t0) * 1000, "tps": (len(marks) - 1) / (marks[-1] - marks[0])}

    def ours() -> dict[str, float]:
        sink = _Sink()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sink):
            shell.run_cell(f"%%ask -m srv -n {max_tokens} --temperature 0 -o _r\n{PROMPT}")
        a = shell.user_ns["_r"]
        marks = sink.marks[:-1] if len(sink.marks) > a.n_tokens else sink.marks
        return {"ttft_ms": (marks[0] - t0) * 1000, "tps": (a.n_tokens - 1) / (marks[-1] - marks[0])}

    results: dict[str, list] = {"bare": [], "ours": []}
    for i in range(reps):
        for fn in (bare, ours) if i % 2 == 0 else (ours, bare):
            results[fn.__name__].append(fn())
    client.close()
    return results


def run(model: str | None = None, reps: int = 7, max_tokens: int = 512) -> tuple[dict[str, Any], str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from llama_server import llama_cpp_tools, start_server
    from tiny_gguf import write_tiny_model

    tiny = str(write_tiny_model(Path(tempfile.mkdtemp()) / "tiny.gguf"))
    cfg = Config()
    cfg.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=cfg)
    shell.run_line_magic("load_ext", "llm_magic")
    per_server: dict[str, dict[str, Any]] = {}
    try:
        for kind in SERVERS:
            if kind == "llama-server":
                tools, why = llama_cpp_tools()
                if not tools:
                    per_server[kind] = {"why": why}
                    continue
            srv = start_server(kind, tiny)
            try:
                per_server[kind] = {"results": _measure(srv, shell, reps, max_tokens)}
            finally:
                srv.stop()
    finally:
        shell.run_line_magic("unload_ext", "llm_magic")
    rows = []
    for kind, d in per_server.items():
        if "results" not in d:
            rows.append(f"| `{kind}` | not measured: {d['why']} | | |")
            continue
        s = {k: {m: summary(r[m] for r in v) for m in ("ttft_ms", "tps")} for k, v in d["results"].items()}
        d["ratio_tps"] = s["ours"]["tps"]["median"] / s["bare"]["tps"]["median"]
        d["ttft_diff_ms"] = s["ours"]["ttft_ms"]["median"] - s["bare"]["ttft_ms"]["median"]
        rows.append(
            f"| `{kind}`: tokens/s | {fmt(s['ours']['tps'], '', 0)} | {fmt(s['bare']['tps'], '', 0)} | "
            f"{d['ratio_tps']:.3f} |"
        )
        rows.append(
            f"| `{kind}`: time to first token | {fmt(s['ours']['ttft_ms'], ' ms', 1)} | "
            f"{fmt(s['bare']['ttft_ms'], ' ms', 1)} | {d['ttft_diff_ms']:+.1f} ms |"
        )
    table = (
        "| remote, tiny model | `%%ask -m srv` | bare `openai` client | ratio / diff |\n"
        "|---|---|---|---|\n" + "\n".join(rows) + f"\n\n{reps} interleaved repetitions, {max_tokens} tokens each."
    )
    first = per_server.get("llama_cpp.server", {})
    data: dict[str, Any] = {
        "reps": reps,
        "servers": per_server,
        # the issue-5 headline (llama_cpp.server), as before
        "results": first.get("results"),
        "ratio_tps": first.get("ratio_tps"),
        "ttft_diff_ms": first.get("ttft_diff_ms"),
    }
    return data, table


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    data, table = run(reps=parser.parse_args().reps)
    print(table)
