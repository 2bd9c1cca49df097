"""Remote row (issue 5): time to first token and tokens/s through `%%ask -m srv` against the same
`python -m llama_cpp.server` called with the bare `openai` client, same tiny model, interleaved."""

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


def run(model: str | None = None, reps: int = 7, max_tokens: int = 128) -> tuple[dict[str, Any], str]:
    sys.path.insert(0, str(ROOT / "tests"))
    import openai
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    import llm_magic

    from llama_server import Server
    from tiny_gguf import write_tiny_model

    tiny = str(write_tiny_model(Path(tempfile.mkdtemp()) / "tiny.gguf"))
    srv = Server(tiny)
    try:
        client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
        cfg = Config()
        cfg.HistoryManager.enabled = False
        shell = InteractiveShell.instance(config=cfg)
        shell.run_line_magic("load_ext", "llm_magic")
        shell.run_line_magic("config", f"AskMagics.models = {{'srv': {{'base_url': {srv.url!r}, 'model': 'tiny'}}}}")
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
        shell.run_line_magic("unload_ext", "llm_magic")
    finally:
        srv.stop()
    s = {k: {m: summary(r[m] for r in v) for m in ("ttft_ms", "tps")} for k, v in results.items()}
    ratio = s["ours"]["tps"]["median"] / s["bare"]["tps"]["median"]
    diff = s["ours"]["ttft_ms"]["median"] - s["bare"]["ttft_ms"]["median"]
    table = (
        "| remote, tiny model on `llama_cpp.server` | `%%ask -m srv` | bare `openai` client | ratio / diff |\n"
        "|---|---|---|---|\n"
        f"| tokens/s | {fmt(s['ours']['tps'], '', 0)} | {fmt(s['bare']['tps'], '', 0)} | {ratio:.3f} |\n"
        f"| time to first token | {fmt(s['ours']['ttft_ms'], ' ms', 1)} | {fmt(s['bare']['ttft_ms'], ' ms', 1)} | "
        f"{diff:+.1f} ms |\n\n{reps} interleaved repetitions, {max_tokens} tokens each."
    )
    return {"reps": reps, "results": results, "ratio_tps": ratio, "ttft_diff_ms": diff}, table


if __name__ == "__main__":
    data, table = run()
    print(table)
