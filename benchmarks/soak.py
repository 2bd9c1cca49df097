"""`make soak`: the long reliability runs (issue 8), with their figures in the README.

- Soak: 200 asks rotating over 3 models with max_loaded_models=2 — errors, evictions, threads
  and RSS over time (plotted).
- Leak: 50 load/ask/unload cycles of the same model through llm_magic, against the same cycles in
  plain llama-cpp-python — RSS growth of each.

    python benchmarks/soak.py [--model PATH] [--asks 200] [--cycles 50]

The model defaults to the embedded Gemma 3 270M (copied three times for the soak).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, update_readme, write_results

PROMPTS = [
    "What is the capital of France?",
    "Name a large planet.",
    "What colour is the sky?",
    "How many legs does a spider have?",
]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def llm_threads() -> int:
    return sum(t.name.startswith("llm_magic") for t in threading.enumerate())


def soak(models: list[str], asks: int) -> dict:
    import llm_magic
    from llm_magic.runtime import get as _runtime

    llm_magic.current_settings().max_loaded_models = 2
    samples, errors, finishes = [], [], {}
    threads_after_warmup = None
    anon_after_warmup = float("nan")
    t0 = time.monotonic()
    for i in range(asks):
        model = models[i % len(models)]
        try:
            a = llm_magic.ask(PROMPTS[i % len(PROMPTS)], model=model, max_tokens=16, temperature=0, timeout=120)
            finishes[a.finish_reason] = finishes.get(a.finish_reason, 0) + 1
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(e).__name__}: {e}")
        loaded = sum(e.state == "ready" for e in _runtime().cache.entries())
        if i == len(models):
            threads_after_warmup = llm_threads()
            anon_after_warmup = rss_anon_mb()
        samples.append(
            {
                "i": i,
                "t": time.monotonic() - t0,
                "rss_mb": rss_mb(),
                "anon_mb": rss_anon_mb(),
                "loaded": loaded,
                "threads": llm_threads(),
            }
        )
    evictions = sum(1 for e in _runtime().cache.entries() if e.note and "evicted" in e.note)
    constructions = _runtime().cache.constructions
    llm_magic.cleanup_models()
    llm_magic.current_settings().max_loaded_models = 0
    return {
        "asks": asks,
        "models": len(models),
        "errors": errors,
        "finishes": finishes,
        "samples": samples,
        "constructions": constructions,
        "max_loaded_seen": max(s["loaded"] for s in samples),
        "threads_after_warmup": threads_after_warmup,
        "threads_max": max(s["threads"] for s in samples),
        "threads_after_cleanup": llm_threads(),
        "entries_evicted_at_end": evictions,
        "anon_after_warmup_mb": anon_after_warmup,
        "anon_end_mb": samples[-1]["anon_mb"],
        "seconds": time.monotonic() - t0,
    }


def rss_anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rotation_baseline(asks: str | int, *models: str) -> dict:
    """The same rotation in plain llama-cpp-python (at most 2 `Llama` alive, least recently used
    closed first): how much anonymous memory grows without llm_magic."""
    import llama_cpp

    from common import same_params_as_llm_magic

    same_params_as_llm_magic()

    asks = int(asks)
    loaded: dict = {}
    order: list = []
    start = None
    for i in range(asks):
        m = models[i % len(models)]
        if m not in loaded:
            if len(loaded) == 2:
                loaded.pop(order.pop(0)).close()
            loaded[m] = llama_cpp.Llama(model_path=m, n_ctx=4096, verbose=False)
        if m in order:
            order.remove(m)
        order.append(m)
        list(
            loaded[m].create_completion(
                f"Q: {PROMPTS[i % len(PROMPTS)]}\nA:", max_tokens=16, temperature=0, stream=True
            )
        )
        if i == len(models):
            start = rss_anon_mb()
    end = rss_anon_mb()
    for llm in loaded.values():
        llm.close()
    return {"anon_after_warmup_mb": start, "anon_end_mb": end}


def leak_one(kind: str, model: str, cycles: str | int) -> dict:
    """``cycles`` load/ask/unload cycles of one model, in this (fresh) process: RSS at each step."""
    cycles = int(cycles)
    import llama_cpp

    from common import same_params_as_llm_magic

    same_params_as_llm_magic()

    import llm_magic

    def ours() -> None:
        llm_magic.ask("What is the capital of France?", model=model, max_tokens=8, temperature=0)
        llm_magic.unload(model)

    def plain() -> None:
        llm = llama_cpp.Llama(model_path=model, n_ctx=4096, verbose=False)
        list(llm.create_completion("Q: What is the capital of France?\nA:", max_tokens=8, stream=True))
        llm.close()

    fn = ours if kind == "llm_magic" else plain
    for _ in range(3):  # warm up allocators and caches before measuring
        fn()
    gc.collect()
    start = rss_mb()
    curve = []
    for _ in range(cycles):
        fn()
        curve.append(rss_mb())
    gc.collect()
    return {"start_mb": start, "end_mb": rss_mb(), "growth_mb": rss_mb() - start, "curve": curve}


def in_fresh_process(function: str, *args: str) -> dict:
    """Run ``soak.<function>(*args)`` in a new Python process, so no run inherits another's heap."""
    import json
    import subprocess

    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import soak; "
        f"print(json.dumps(soak.{function}(*sys.argv[2:])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parent), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def leak(model: str, cycles: int) -> dict:
    return {
        kind: in_fresh_process("leak_one", kind, model, str(cycles)) for kind in ("plain llama-cpp-python", "llm_magic")
    }


def plot(soak_data: dict, leak_data: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    s = soak_data["samples"]
    ax1.plot([x["i"] for x in s], [x["rss_mb"] for x in s], label="RSS (MB)")
    ax1b = ax1.twinx()
    ax1b.step([x["i"] for x in s], [x["loaded"] for x in s], color="tab:orange", where="post", label="models loaded")
    ax1.set_xlabel("ask"), ax1.set_ylabel("RSS (MB)"), ax1b.set_ylabel("models loaded")
    ax1.set_title(f"soak: {soak_data['asks']} asks over {soak_data['models']} models, max_loaded_models=2")
    for name, d in leak_data.items():
        ax2.plot(range(1, len(d["curve"]) + 1), [v - d["start_mb"] for v in d["curve"]], label=name)
    ax2.set_xlabel("load/ask/unload cycle"), ax2.set_ylabel("RSS growth (MB)"), ax2.legend()
    ax2.set_title("leak: the same model loaded and freed")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("BENCH_MODEL"))
    parser.add_argument("--asks", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()
    model = args.model
    if not model:
        from llm_magic import default_model

        model = str(default_model.ensure())
    tmp = Path(tempfile.mkdtemp(prefix="llm_magic_soak_"))
    try:
        models = []
        for i in range(3):  # three distinct files (three cache entries) with the same weights
            copy = tmp / f"model-{i}.gguf"
            shutil.copy(model, copy)
            models.append(str(copy))
        soak_data = soak(models, args.asks)
        # the baseline in a fresh process of its own, so neither run inherits the other's heap
        soak_data["plain_rotation"] = in_fresh_process("rotation_baseline", str(args.asks), *models)
        leak_data = leak(model, args.cycles)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = plot(soak_data, leak_data, RESULTS / "soak.png")
    s = soak_data
    rss = [x["rss_mb"] for x in s["samples"]]
    lines = [
        f"Model: `{Path(model).name}` (3 copies for the soak).",
        "",
        "| run | result |",
        "|---|---|",
        (
            f"| soak: {s['asks']} asks over {s['models']} models, `max_loaded_models=2` | {len(s['errors'])} errors; "
            f"finish reasons {s['finishes']}; at most {s['max_loaded_seen']} models loaded at once; "
            f"{s['constructions']} model loads (evictions and reloads) in {s['seconds']:.0f} s |"
        ),
        (
            f"| soak: worker threads | {s['threads_after_warmup']} after warm-up, at most {s['threads_max']}, "
            f"{s['threads_after_cleanup']} after `cleanup_models()` |"
        ),
        f"| soak: RSS | {rss[0]:.0f} MB at the start, {max(rss):.0f} MB peak, {rss[-1]:.0f} MB at the end |",
        (
            f"| soak: anonymous memory after warm-up → end (allocator growth from rotating models) | llm_magic "
            f"{s['anon_after_warmup_mb']:.0f} → {s['anon_end_mb']:.0f} MB; the same rotation in plain llama-cpp-python "
            f"{s['plain_rotation']['anon_after_warmup_mb']:.0f} → {s['plain_rotation']['anon_end_mb']:.0f} MB |"
        ),
    ]
    for name, d in leak_data.items():
        lines.append(
            f"| leak: {args.cycles} load/ask/unload cycles, {name} | RSS {d['start_mb']:.0f} → "
            f"{d['end_mb']:.0f} MB ({d['growth_mb']:+.1f} MB) |"
        )
    if png:
        lines += ["", f"![soak and leak](benchmarks/results/{png})"]
    table = "\n".join(lines)
    write_results("soak", {"soak": soak_data, "leak": leak_data}, table)
    update_readme("soak", table)
    print(table)
    if s["errors"]:
        print("\n".join(s["errors"][:10]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
