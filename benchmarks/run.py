"""`make bench`: run the benchmark suite (issue 7), write benchmarks/results/, refresh the README tables.

    python benchmarks/run.py [--model PATH] [--reps N] [--only cold,memory,stream,conversation,panel]

The model defaults to the embedded Gemma 3 270M (assembled once into the user cache). Results:
benchmarks/results/<name>.json (raw measurements), <name>.md (tables), *.png (plots), and the README
sections between <!-- bench:NAME:start/end --> markers. llama.cpp's own llama-bench is built once
(in the background while the first rows run) and cached under ~/.cache/llm_magic/llama-bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, ROOT, fmt, machine, machine_line, md_table, ok, update_readme, write_results  # noqa: E402

ALL = ("cold", "memory", "stream", "conversation", "panel", "remote", "vision", "lowlevel")

# Rows whose bench file another engineer owns run in their own process: a failure or a global patch
# (the panel's recording comm) cannot touch the other rows.
FOREIGN = r"""
import json, sys
sys.path.insert(0, "benchmarks")
import importlib
from common import machine_line, write_results
name, model, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
data, table = importlib.import_module("bench_" + name).run(None if model == "-" else model, reps=reps)
table = machine_line(model) + "\n\n" + table if model != "-" else table
write_results(name, data, table)
print(json.dumps({"table": table, "data": data}, default=str))
"""

PANEL = r"""
import json, sys
sys.path.insert(0, "benchmarks")
import bench_panel
from common import machine_line, write_results
data, table = bench_panel.run(sys.argv[1], reps=int(sys.argv[2]))
table = machine_line(sys.argv[1]) + "\n\n" + table
write_results("panel", data, table)
u = data["updates"]["panel"]
print(json.dumps({"table": table, "updates_per_s": [r["updates_per_s"] for r in u],
                  "max_in_any_1s": [r["max_in_any_1s"] for r in u], "tps": [r["tps"] for r in u],
                  "updates": data["updates"]}, default=str))
"""


def run_panel(model: str, reps: int) -> tuple[dict | None, str]:
    """bench_panel.py belongs to the panel's engineer: run its ``run(model, reps)`` in its own process."""
    if not (HERE / "bench_panel.py").exists():
        return None, "pending: benchmarks/bench_panel.py does not exist yet"
    proc = subprocess.run(
        [sys.executable, "-c", PANEL, model, str(reps)], capture_output=True, text=True, cwd=ROOT, timeout=1200
    )
    if proc.returncode != 0:
        return None, f"bench_panel.run failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


def run_foreign(name: str, model: str | None, reps: int, timeout: float = 1200) -> tuple[dict | None, str]:
    if not (HERE / f"bench_{name}.py").exists():
        return None, f"pending: benchmarks/bench_{name}.py does not exist yet"
    proc = subprocess.run(
        [sys.executable, "-c", FOREIGN, name, model or "-", str(reps)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )
    if proc.returncode != 0:
        return None, f"bench_{name}.run failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


def conversation_headline(data: dict) -> tuple:
    from common import summary

    r = data["results"]
    a = summary(x["ttft_ms"] for x in r["reuse"])
    b = summary(x["ttft_ms"] for x in r["no_reuse"])
    return (
        "5 conversation",
        "turn 2 time to first token, prefix reuse vs none",
        fmt(a, " ms", 1),
        fmt(b, " ms", 1),
        f"{data['ttft_ratio']:.2f}×",
        "—",
    )


def panel_headline(panel: dict | None, why: str) -> tuple:
    from common import summary

    if panel is None:
        return ("7 updates", "panel updates/s, tiny model at full speed", "not measured", "—", "—", why)
    ups = summary(panel["updates_per_s"])
    tps = summary(panel["tps"])
    return (
        "7 updates",
        "panel updates/s, tiny model at full speed",
        fmt(ups, "/s", 1),
        fmt(tps, " tokens/s", 0),
        "—",
        ok(ups["n"] > 0 and ups["max"] <= 30) + " (≤ 30/s)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("BENCH_MODEL") or None, help="GGUF to benchmark")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per comparison (>= 5)")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    args = parser.parse_args()
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(ALL)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    model = args.model
    if not model:
        from llm_magic import default_model

        model = str(default_model.ensure())
    model = str(Path(model).expanduser().resolve())
    reps = max(5, args.reps)
    started = time.perf_counter()

    # llama-bench: build (once) in the background while the first rows run
    import llama_bench_build

    built: dict = {}
    builder = threading.Thread(
        target=lambda: built.update(
            zip(("path", "why"), llama_bench_build.build(log=lambda s: print(s, file=sys.stderr)), strict=False)
        ),
        daemon=True,
    )
    if "stream" in only:
        builder.start()

    header = machine_line(model)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "machine.json").write_text(json.dumps({**machine(), "model": model}, indent=2) + "\n")
    headline: list[tuple] = []
    plots: dict[str, str] = {}
    import plots as plot

    def section(name: str, data: dict, table: str) -> None:
        table = header + "\n\n" + table
        write_results(name, {"machine": machine(), "model": model, **data}, table)
        update_readme(name, table)
        print(f"\n## {name}\n\n{table}\n", flush=True)

    def try_plot(name: str, fn, *a) -> None:
        try:
            plots[name] = str(fn(*a, RESULTS / f"{name}.png").relative_to(ROOT))
        except Exception as e:  # noqa: BLE001 - a missing plot must not lose the numbers
            print(f"plot {name} failed: {type(e).__name__}: {e}", file=sys.stderr)

    cold = mem = stream = None
    if "cold" in only:
        import bench_cold

        cold, table = bench_cold.run(model, reps=max(5, reps - 2))
        section("cold", cold, table)
        headline += cold["headline"]
        try_plot("ttft", plot.ttft, cold)
    if "memory" in only:
        import bench_memory

        mem, table = bench_memory.run(model, reps=5)
        section("memory", mem, table)
        headline += mem["headline"]
        try_plot("memory", plot.memory, mem)
    if "stream" in only:
        import bench_stream

        builder.join()
        stream, table = bench_stream.run(model, reps=reps)
        section("streaming", stream, table)
        headline += stream["headline"]
        try_plot("tokens_per_s", plot.tokens_per_s, stream)
    if "conversation" in only:
        import bench_conversation

        conv, table = bench_conversation.run(model, reps=reps)
        import llm_magic

        llm_magic.cleanup_models()
        section("conversation", conv, table)
        headline.append(conversation_headline(conv))
    panel = None
    if "panel" in only:
        panel, why = run_panel(model, reps=5)
        if panel is not None:
            update_readme("panel", panel["table"])
        headline.append(panel_headline(panel, why))
    if stream is not None:
        try_plot("updates", plot.updates, stream, panel)
    if "remote" in only:  # issue 5's row (bench_remote.py, tiny model on llama_cpp.server)
        remote, why = run_foreign("remote", None, reps=5)
        if remote is not None:
            update_readme("remote", remote["table"])
            d = remote["data"]
            headline.append(
                (
                    "5b remote",
                    "`%%ask -m srv` vs bare `openai` client: tokens/s ratio, TTFT diff",
                    "—",
                    "—",
                    f"{d['ratio_tps']:.3f}, {d['ttft_diff_ms']:+.1f} ms",
                    "—",
                )
            )
        else:
            headline.append(("5b remote", "`%%ask -m srv` vs bare `openai` client", "not measured", "—", "—", why))
    if "vision" in only:  # issue 6's row (bench_vision.py, the generated tiny vision pair)
        vision, why = run_foreign("vision", None, reps=7)
        if vision is not None:
            update_readme("vision", vision["table"])
            d = vision["data"]
            from common import summary

            headline.append(
                (
                    "6b vision",
                    "preload of a vision pair; warm ask with one image: time to first token",
                    f"{summary(d['preload_s'])['median']:.3f} s; {summary(d['warm_ttft_ms'])['median']:.1f} ms",
                    f"same ask without the image: {summary(d['text_ttft_ms'])['median']:.1f} ms",
                    "—",
                    "—",
                )
            )
        else:
            headline.append(("6b vision", "vision pair preload and warm ask", "not measured", "—", "—", why))
    if "lowlevel" in only:  # stretch: a prototype loop on the low-level API, not llm_magic's engine
        low, why = run_foreign("lowlevel", model, reps=5)
        if low is not None:
            update_readme("lowlevel", low["table"])
        else:
            print(f"lowlevel: {why}", file=sys.stderr)

    order = {k: i for i, k in enumerate(("1", "2", "3", "4", "5", "5b", "6", "6b", "7"))}
    headline.sort(key=lambda r: order.get(r[0].split()[0], 9))
    table = (
        header
        + "\n\n"
        + md_table(["issue row", "measure", "llm_magic median [min–max]", "baseline", "ratio", "target"], headline)
    )
    table += (
        f"\n\nDetails: `benchmarks/results/*.md`; raw data: `*.json`; plots: "
        f"{', '.join(f'`{p}`' for p in plots.values()) or 'none'}. Run took {time.perf_counter() - started:.0f} s."
    )
    if set(only) == set(ALL):
        write_results("summary", {"machine": machine(), "model": model, "rows": headline, "plots": plots}, table)
        update_readme("core", table)
    print(f"\n## summary\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
