"""`make bench`: run the benchmark suite (issues 7 and 12), write benchmarks/results/, refresh the README tables.

    python benchmarks/run.py [--model PATH] [--reps N] [--only PART,...] [--out DIR] [--no-readme]

Parts: cold, memory, stream, engine, flash, positions, lookup, conversation, panel, remote, vision, context,
inline. The model defaults to the embedded Gemma 3 270M (assembled once into the user cache). Results:
benchmarks/results/<name>.json (raw measurements), <name>.md (tables), *.png (plots), and the README
sections between <!-- bench:NAME:start/end --> markers; the summary table (`core`) keeps the rows of
parts not run this time. llama.cpp's own llama-bench is built once (in the background while the
first rows run) and cached under ~/.cache/llm_magic/llama-bench/. Development runs: ``--reps 1
--out /tmp/bench --no-readme`` leaves the committed results and the README alone.
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

ALL = (
    "cold",
    "memory",
    "stream",
    "engine",
    "flash",
    "positions",
    "lookup",
    "conversation",
    "panel",
    "remote",
    "vision",
    "context",
    "inline",
)
# issue 12's parts: each in a process of its own (a crash in the generation loop loses one part, not the run)
OWN_PROCESS = ("engine", "flash", "positions", "lookup", "conversation", "context", "inline")  # 15, 16
NEEDS_LLAMA_BENCH = ("engine", "flash", "positions")


def part_reps(name: str, reps: int) -> int:
    """Repetitions per part: the long ones (minutes per repetition) get fewer."""
    return {"flash": min(reps, 3), "positions": 1 if reps < 5 else 2, "lookup": min(reps, 5)}.get(name, reps)


# A part of ours in its own process: ``bench_NAME.run(model, reps)``; the parent writes the results.
PART = r"""
import json, sys
sys.path.insert(0, "benchmarks")
import importlib
name, model, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
data, table = importlib.import_module("bench_" + name).run(model, reps=reps)
print("\n" + json.dumps({"table": table, "data": data}, default=str))
"""


def run_part(name: str, model: str, reps: int, timeout: float = 3600) -> tuple[dict | None, str]:
    """Run one of our parts in a fresh process; its stderr goes to ours as it comes (progress, the
    reasons a side failed). Returns ({"table", "data"}, "") or (None, why it failed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PART, name, model, str(reps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    tail: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(f"[{name}] {line}")
            tail.append(line.rstrip())
            del tail[:-20]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    # stdout is read here and stderr only by the pump: communicate() would read stderr too, and lose
    # the race for a line to the pump, then block in that read while the part blocks writing its result
    late = threading.Event()
    timer = threading.Timer(timeout, lambda: (late.set(), proc.kill()))
    timer.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait()
    finally:
        timer.cancel()
    if late.is_set():
        return None, f"bench_{name} took longer than {timeout:.0f} s"
    reader.join(timeout=5)
    if proc.returncode != 0:
        last = next((ln for ln in reversed(tail) if ln.strip()), f"exit status {proc.returncode}")
        return None, f"bench_{name} failed: {last}"
    try:
        return json.loads(out.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return None, f"bench_{name} printed no result"


# The summary's rows by part, to keep the rows of parts a partial run did not measure. Rows written
# before the parts were recorded are told apart by their label.
OLD_ROW_PARTS = {"1": "cold", "2": "cold", "3": "stream", "5": "conversation", "5b": "remote", "6": "memory"}
OLD_ROW_PARTS |= {"6b": "vision"}


def _old_part(row: list) -> str | None:
    key = str(row[0]).split()[0]
    if key == "7":
        return "panel" if "panel" in str(row[1]) else "stream"
    return OLD_ROW_PARTS.get(key)  # "4 llama.cpp" is issue 12's engine part now: dropped


def previous_rows(keep: set[str]) -> list[tuple[str, tuple]]:
    try:
        old = json.loads((RESULTS / "summary.json").read_text())
    except (OSError, ValueError):
        return []
    rows = []
    for r in old.get("rows", []):
        part, row = (r["part"], r["row"]) if isinstance(r, dict) else (_old_part(r), r)
        if part in keep:
            rows.append((part, tuple(row)))
    return rows


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
    parser.add_argument("--reps", type=int, default=7, help="repetitions per comparison (>= 5 for results)")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--out", help="write the results here instead of benchmarks/results/")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    args = parser.parse_args()
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(ALL)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    global RESULTS
    if args.out:  # for this process (common.write_results) and the parts' processes
        import common

        RESULTS = common.RESULTS = Path(args.out).resolve()
        os.environ["BENCH_RESULTS"] = str(RESULTS)
    if args.no_readme:
        os.environ["BENCH_NO_README"] = "1"
    model = args.model
    if not model:
        from llm_magic import default_model

        model = str(default_model.ensure())
    model = str(Path(model).expanduser().resolve())
    reps = max(1, args.reps)
    if reps < 5:
        print(f"--reps {reps}: fewer than 5 repetitions, for development only", file=sys.stderr)
    started = time.perf_counter()

    # llama-bench: build (once) in the background while the first rows run
    import llama_bench_build

    builder = threading.Thread(target=lambda: llama_bench_build.build(log=lambda s: print(s, file=sys.stderr)))
    if set(only) & set(NEEDS_LLAMA_BENCH):
        builder.start()

    header = machine_line(model)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "machine.json").write_text(json.dumps({**machine(), "model": model}, indent=2) + "\n")
    headline: list[tuple[str, tuple]] = []  # (part, row)
    plots: dict[str, str] = {}
    data_of: dict[str, dict] = {}
    import plots as plot

    def section(name: str, data: dict, table: str) -> None:
        table = header + "\n\n" + table
        write_results(name, {"machine": machine(), "model": model, **data}, table)
        update_readme(name, table)
        print(f"\n## {name}\n\n{table}\n", flush=True)

    def rows_of(part: str, rows: list) -> None:
        headline.extend((part, tuple(r)) for r in rows)

    def try_plot(name: str, fn, *a) -> None:
        try:
            out = fn(*a, RESULTS / f"{name}.png")
            plots[name] = str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)
        except Exception as e:  # noqa: BLE001 - a missing plot must not lose the numbers
            print(f"plot {name} failed: {type(e).__name__}: {e}", file=sys.stderr)

    def failed(part: str, label: str, why: str) -> None:
        print(f"{part}: {why}", file=sys.stderr)
        rows_of(part, [(label, "not measured", "—", "—", "—", why)])

    if "cold" in only:
        import bench_cold

        cold, table = bench_cold.run(model, reps=max(5, reps - 2) if reps >= 5 else reps)
        section("cold", cold, table)
        rows_of("cold", cold["headline"])
        try_plot("ttft", plot.ttft, cold)
    if "memory" in only:
        import bench_memory

        mem, table = bench_memory.run(model, reps=5 if reps >= 5 else reps)
        section("memory", mem, table)
        rows_of("memory", mem["headline"])
        try_plot("memory", plot.memory, mem)
    stream = None
    if "stream" in only:
        import bench_stream

        try:
            stream, table = bench_stream.run(model, reps=reps)
            section("streaming", stream, table)
            rows_of("stream", stream["headline"])
        except Exception as e:  # noqa: BLE001 - the other parts still run
            failed("stream", "3 streaming", f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
    for part in OWN_PROCESS:
        if part not in only:
            continue
        if part in NEEDS_LLAMA_BENCH and builder.is_alive():
            builder.join()  # one build at a time: the parts use the cached binary
        result, why = run_part(part, model, part_reps(part, reps))
        if result is None:
            failed(part, f"12 {part}", why)
            continue
        data_of[part] = result["data"]
        section(part, result["data"], result["table"])
        rows_of(part, result["data"].get("headline", []))
    if stream is not None or "engine" in data_of:
        try_plot("tokens_per_s", plot.tokens_per_s, stream, data_of.get("engine"))
    if "positions" in data_of:
        try_plot("positions", plot.positions, data_of["positions"])
    panel = None
    if "panel" in only:
        panel, why = run_panel(model, reps=5 if reps >= 5 else reps)
        if panel is not None:
            update_readme("panel", panel["table"])
        rows_of("panel", [panel_headline(panel, why)])
    if stream is not None:
        try_plot("updates", plot.updates, stream, panel)
    if "remote" in only:  # issue 5's row (bench_remote.py, tiny model on llama_cpp.server and llama-server)
        remote, why = run_foreign("remote", None, reps=5 if reps >= 5 else reps)
        if remote is not None:
            update_readme("remote", remote["table"])
            d = remote["data"]
            ls = d.get("servers", {}).get("llama-server", {})
            row = (
                "5b remote",
                "`%%ask -m srv` vs bare `openai` client: tokens/s ratio, TTFT diff (llama_cpp.server; llama-server)",
                "—",
                "—",
                f"{d['ratio_tps']:.3f}, {d['ttft_diff_ms']:+.1f} ms"
                + (f"; {ls['ratio_tps']:.3f}, {ls['ttft_diff_ms']:+.1f} ms" if ls.get("ratio_tps") else ""),
                "—",
            )
        else:
            row = ("5b remote", "`%%ask -m srv` vs bare `openai` client", "not measured", "—", "—", why)
        rows_of("remote", [row])
    if "vision" in only:  # issue 6's row (bench_vision.py, the generated tiny vision pair)
        vision, why = run_foreign("vision", None, reps=7 if reps >= 5 else reps)
        if vision is not None:
            update_readme("vision", vision["table"])
            d = vision["data"]
            from common import summary

            row = (
                "6b vision",
                "preload of a vision pair; warm ask with one image: time to first token",
                f"{summary(d['preload_s'])['median']:.3f} s; {summary(d['warm_ttft_ms'])['median']:.1f} ms",
                f"same ask without the image: {summary(d['text_ttft_ms'])['median']:.1f} ms",
                "—",
                "—",
            )
        else:
            row = ("6b vision", "vision pair preload and warm ask", "not measured", "—", "—", why)
        rows_of("vision", [row])

    # the summary: this run's rows, and the previous run's rows of the parts not run now
    headline += previous_rows(set(ALL) - set(only))
    order = {k: i for i, k in enumerate(("1", "2", "3", "4", "5", "5b", "6", "6b", "7", "12", "15", "16"))}
    headline = [
        pr
        for _, pr in sorted(
            enumerate(headline),
            key=lambda ipr: (
                order.get(str(ipr[1][1][0]).split()[0], 99),
                ALL.index(ipr[1][0]) if ipr[1][0] in ALL else 99,
                ipr[0],
            ),
        )
    ]
    rows = [r for _, r in headline]
    elapsed = time.perf_counter() - started
    table = (
        header
        + "\n\n"
        + md_table(["issue row", "measure", "llm_magic median [min–max]", "baseline", "ratio", "target"], rows)
    )
    pngs = [Path(p).name for p in plots.values()] + [p.name for p in RESULTS.glob("*.png") if p.name != "soak.png"]
    all_plots = sorted({f"benchmarks/results/{name}" for name in pngs})
    table += (
        f"\n\nDetails: `benchmarks/results/*.md`; raw data: `*.json`; plots: "
        f"{', '.join(f'`{p}`' for p in all_plots) or 'none'}. "
        + (
            f"Run took {elapsed:.0f} s."
            if set(only) == set(ALL)
            else f"This run ({', '.join(only)}) took {elapsed:.0f} s; the other rows are from earlier runs."
            if only
            else "Rows from the parts' latest runs."
        )
    )
    summary_rows = [{"part": part, "row": list(r)} for part, r in headline]
    write_results("summary", {"machine": machine(), "model": model, "rows": summary_rows, "plots": plots}, table)
    update_readme("core", table)
    print(f"\n## summary\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
