"""Row 6: memory — RSS after loading (mmap) and after unloading, and a second process loading the same file.

Every measurement runs in a fresh Python process. ``llm_magic`` (load through the cache, one short
answer, ``unload``) is interleaved with plain llama-cpp-python (``Llama(...)``, the same answer,
``close()``) as the baseline.

Page-cache sharing: ``cold`` evicts the file's pages from the page cache first
(``posix_fadvise(DONTNEED)``, which only drops pages nobody has mapped) and loads it; ``second``
loads it while another process holds the same model loaded. The second process's load time, and
its PSS (shared pages count half), show the sharing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from common import PLAIN_PARAMS, ROOT, fmt, interleaved, md_table, ratio, run_json, summary

PROBE = r"""
import gc, json, os, sys, time
def mem():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k = line.split(":")[0]
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(line.split()[1]) / 1024
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out
"""

OURS = (
    PROBE
    + r"""
model, mode = sys.argv[1], sys.argv[2]
if mode == "cold":
    fd = os.open(model, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
import llama_cpp, llm_magic  # both imported before the baseline, as in the plain process
from llm_magic.runtime import get as _runtime
before = mem()
t0 = time.perf_counter()
a = llm_magic.ask("What is the capital of France?", model=model, max_tokens=8, temperature=0)
entry = _runtime().cache.entries()[0]
info = entry.info()
loaded = mem()
llm_magic.unload(all=True)
gc.collect()
unloaded = mem()
print(json.dumps({"before": before, "loaded": loaded, "unloaded": unloaded, "load_s": entry.load_s,
                  "mlock": info.get("mlock")}))
"""
)

PLAIN = (
    PROBE
    + r"""
model, threads = sys.argv[1], int(sys.argv[2])
import llama_cpp
"""
    + PLAIN_PARAMS
    + r"""
before = mem()
t0 = time.perf_counter()
llm = llama_cpp.Llama(model_path=model, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
load_s = time.perf_counter() - t0
llm.create_completion("Q: What is the capital of France?\nA:", max_tokens=8, temperature=0)
loaded = mem()
llm.close(); del llm
gc.collect()
unloaded = mem()
print(json.dumps({"before": before, "loaded": loaded, "unloaded": unloaded, "load_s": load_s}))
"""
)

HOLDER = r"""
import sys, llm_magic
llm_magic.ask("hi", model=sys.argv[1], max_tokens=1)
print("ready", flush=True)
sys.stdin.readline()
"""


def _holder(model: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, model],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise RuntimeError("the holder process did not load the model")
    return proc


def run(model: str, reps: int = 5) -> tuple[dict[str, Any], str]:
    from common import threads_for

    results: dict[str, list] = {"ours": [], "plain": [], "cold": [], "second": []}
    for _i, side in interleaved(reps, "ours", "plain"):
        if side == "ours":
            results["ours"].append(run_json(OURS, model, "warm"))
        else:
            results["plain"].append(run_json(PLAIN, model, str(threads_for(model))))
    for _i, side in interleaved(reps, "cold", "second"):
        if side == "cold":
            results["cold"].append(run_json(OURS, model, "cold"))
        else:
            holder = _holder(model)
            try:
                results["second"].append(run_json(OURS, model, "warm"))
            finally:
                holder.stdin.write("\n")
                holder.stdin.flush()
                holder.wait(timeout=30)
    S = lambda rows, f: summary(f(r) for r in rows)  # noqa: E731
    d = lambda r, k, m: r[k][m] - r["before"][m]  # noqa: E731
    size_mb = os.path.getsize(model) / 2**20
    o_l, p_l = (
        S(results["ours"], lambda r: d(r, "loaded", "VmRSS")),
        S(results["plain"], lambda r: d(r, "loaded", "VmRSS")),
    )
    o_lf = S(results["ours"], lambda r: d(r, "loaded", "RssFile"))
    o_la = S(results["ours"], lambda r: d(r, "loaded", "RssAnon"))
    p_lf = S(results["plain"], lambda r: d(r, "loaded", "RssFile"))
    p_la = S(results["plain"], lambda r: d(r, "loaded", "RssAnon"))
    o_u, p_u = (
        S(results["ours"], lambda r: d(r, "unloaded", "VmRSS")),
        S(results["plain"], lambda r: d(r, "unloaded", "VmRSS")),
    )
    c_t, s_t = S(results["cold"], lambda r: r["load_s"]), S(results["second"], lambda r: r["load_s"])
    c_p, s_p = (
        S(results["cold"], lambda r: d(r, "loaded", "Pss")),
        S(results["second"], lambda r: d(r, "loaded", "Pss")),
    )
    rows = [
        (
            "RSS growth after loading + one answer (mmap)",
            fmt(o_l, " MB", 0),
            f"plain `Llama`: {fmt(p_l, ' MB', 0)}",
            f"{ratio(o_l, p_l):.2f}×",
        ),
        (
            "… of which file-backed (mapped model pages) / anonymous",
            f"{fmt(o_lf, ' MB', 0)} / {fmt(o_la, ' MB', 0)}",
            f"{fmt(p_lf, ' MB', 0)} / {fmt(p_la, ' MB', 0)}",
            f"{ratio(o_lf, p_lf):.2f}× / {ratio(o_la, p_la):.2f}×",
        ),
        (
            "RSS growth left after unloading (`llm_magic.unload` / `Llama.close()`)",
            fmt(o_u, " MB", 0),
            f"plain `Llama`: {fmt(p_u, ' MB', 0)}",
            f"{ratio(o_u, p_u):.2f}×",
        ),
        (
            "load time, second process while another holds the same model",
            fmt(s_t, " s"),
            f"file evicted from the page cache first: {fmt(c_t, ' s')}",
            f"{ratio(s_t, c_t):.2f}×",
        ),
        (
            "PSS growth of that second process (shared pages count half)",
            fmt(s_p, " MB", 0),
            f"alone: {fmt(c_p, ' MB', 0)}",
            f"{ratio(s_p, c_p):.2f}×",
        ),
    ]
    mlock = sorted({str(r.get("mlock")) for r in results["ours"] + results["cold"] + results["second"]})
    table = md_table(["measure", "llm_magic median [min–max]", "baseline", "ratio"], rows)
    table += (
        f"\n\nModel file {size_mb:.0f} MB. Fresh process per measurement, {reps} interleaved repetitions; "
        f"growth over the process before loading (Python and the libraries already imported). "
        f"llm_magic mlock: {', '.join(mlock)}; plain `Llama` without mlock."
    )
    headline = [
        (
            "6 memory",
            "RSS growth after load / after unload",
            f"{fmt(o_l, ' MB', 0)} / {fmt(o_u, ' MB', 0)}",
            f"plain `Llama`: {fmt(p_l, ' MB', 0)} / {fmt(p_u, ' MB', 0)}",
            f"{ratio(o_l, p_l):.2f}× / {ratio(o_u, p_u):.2f}×",
            "—",
        ),
        (
            "6 memory",
            "second process: load time / PSS growth",
            f"{fmt(s_t, ' s')} / {fmt(s_p, ' MB', 0)}",
            f"alone, page cache evicted: {fmt(c_t, ' s')} / {fmt(c_p, ' MB', 0)}",
            f"{ratio(s_t, c_t):.2f}× / {ratio(s_p, c_p):.2f}×",
            "—",
        ),
    ]
    return {"reps": reps, "model_mb": size_mb, "results": results, "headline": headline}, table


if __name__ == "__main__":
    data, table = run(sys.argv[1], reps=int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    print(table)
