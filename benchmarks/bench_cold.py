"""Rows 1 and 2: cold and warm asks, and preloading — each repetition in fresh real kernels.

Three kinds of fresh kernel, interleaved (A B C, C B A, …):

* ``cold``: ``%load_ext llm_magic`` without preload, then two ``%%ask`` cells. The first waits for
  the model construction (``Answer.load_wait_s``), the second finds it in the cache.
* ``per_call``: what jupyter-ai and llm-llama-cpp do — every call builds a new ``Llama`` (same file,
  n_ctx, threads, mmap), streams the same completion prompt, and closes it.
* ``preload``: ``%load_ext llm_magic`` with the model in ``AskMagics.preload``: the wall time of
  ``%load_ext``, a trivial cell run while the model loads in the background (client round trip),
  then, once the preload finished, the first ``%%ask``.

Times to first token are measured inside the kernel from the start of the request (for ``%%ask``
``Answer.ttft_s``, which includes waiting for the model); the client also records when the first
answer text arrived on iopub, counted from sending the cell.
"""

from __future__ import annotations

from typing import Any

from common import PLAIN_PARAMS, Kernel, fmt, interleaved, md_table, ok, ratio, summary, threads_for

QUESTION = "What is the capital of France?"
MAX_TOKENS = 16

_TIMINGS = "import json; print(json.dumps({{**{var}.timings(), 'text': {var}.text}}))"


def _client_first_text(result: dict[str, Any]) -> float | None:
    """Seconds from sending the cell to the first display message carrying answer text."""
    for t, kind, content in result["msgs"]:
        if kind in ("display_data", "update_display_data"):
            text = content.get("data", {}).get("text/plain", "")
            if text and text != "▌" and not text.startswith("["):
                return t - result["t_sent"]
    return None


def _ask(k: Kernel, var: str) -> dict[str, Any]:
    r = k.execute(f"%%ask -n {MAX_TOKENS} --temperature 0 --seed 1 -o {var}\n{QUESTION}")
    out = k.value(_TIMINGS.format(var=var))
    out["client_first_text_s"] = _client_first_text(r)
    out["cell_s"] = r["t_idle"] - r["t_sent"]
    return out


def _configure(k: Kernel, model: str, preload: bool) -> None:
    k.execute(f"%config AskMagics.model = {model!r}\n%config AskMagics.preload = {[model] if preload else []!r}")


LOAD_EXT = """
import time, json
_t0 = time.perf_counter()
get_ipython().run_line_magic('load_ext', 'llm_magic')
_load_ext_s = time.perf_counter() - _t0
from llm_magic.runtime import get as _runtime
_e = _runtime().cache.entries()
print(json.dumps({'load_ext_s': _load_ext_s, 'state': _e[0].state if _e else None}))
"""

TRIVIAL = "_state = __import__('llm_magic.runtime').runtime.get().cache.entries()[0].state"

WAIT_READY = """
import time, json
from llm_magic.runtime import get as _runtime
_e = _runtime().cache.entries()[0]
while _e.state == 'loading':
    time.sleep(0.005)
print(json.dumps({'state': _e.state, 'load_s': _e.load_s, 'mlock': getattr(_e.model, 'mlock', None),
                  'constructions': _runtime().cache.constructions}))
"""

PER_CALL = (
    """
import time, json
_t0 = time.perf_counter()
import llama_cpp
"""
    + PLAIN_PARAMS
    + """
_llm = llama_cpp.Llama(model_path={model!r}, n_ctx={n_ctx}, n_threads={threads}, n_threads_batch={threads},
                       use_mmap=True, verbose=False)
_t1 = time.perf_counter()
_first, _text = None, ''
for _chunk in _llm.create_completion({prompt!r}, max_tokens={max_tokens}, temperature=0, seed=1, stream=True,
                                     stop=['\\nQ:']):
    _piece = _chunk['choices'][0]['text']
    if _piece and _first is None:
        _first = time.perf_counter()
    _text += _piece
_llm.close()
print(json.dumps({{'construction_s': _t1 - _t0, 'ttft_s': _first - _t0 if _first else None, 'text': _text}}))
"""
)


def _n_ctx(model: str) -> int:
    import llm_magic

    return min(llm_magic.current_settings().n_ctx, 4096)


def run_cold(model: str) -> dict[str, Any]:
    with Kernel() as k:
        _configure(k, model, preload=False)
        k.value(LOAD_EXT)
        idle = k.execute("x = 1 + 1")
        first = _ask(k, "_a1")
        info = k.value(WAIT_READY)
        second = _ask(k, "_a2")
    return {"first": first, "second": second, "idle_trivial_cell_s": idle["t_idle"] - idle["t_sent"], **info}


def run_preload(model: str) -> dict[str, Any]:
    with Kernel() as k:
        _configure(k, model, preload=True)
        t0 = __import__("time").perf_counter()
        load_ext = k.value(LOAD_EXT)
        load_ext["client_cell_s"] = __import__("time").perf_counter() - t0
        trivial = k.execute(TRIVIAL)
        state_during = k.value("print(__import__('json').dumps(_state))")
        info = k.value(WAIT_READY)
        first = _ask(k, "_a1")
    return {
        "load_ext": load_ext,
        "trivial_cell_s": trivial["t_idle"] - trivial["t_sent"],
        "state_during_trivial": state_during,
        "first": first,
        **info,
    }


def run_per_call(model: str) -> dict[str, Any]:
    code = PER_CALL.format(
        model=model, n_ctx=_n_ctx(model), threads=threads_for(model), prompt=f"Q: {QUESTION}\nA:", max_tokens=MAX_TOKENS
    )
    with Kernel() as k:
        first = k.value(code)
        second = k.value(code)
    return {"first": first, "second": second}


def run(model: str, reps: int = 5) -> tuple[dict[str, Any], str]:
    fns = {"cold": run_cold, "per_call": run_per_call, "preload": run_preload}
    results: dict[str, list] = {k: [] for k in fns}
    for _i, side in interleaved(reps, *fns):
        results[side].append(fns[side](model))
    c, p, pc = results["cold"], results["preload"], results["per_call"]
    S = lambda rows, f: summary(f(r) for r in rows)  # noqa: E731
    cold_wait1 = S(c, lambda r: r["first"]["load_wait_s"])
    cold_ttft1 = S(c, lambda r: r["first"]["ttft_s"])
    cold_wait2 = S(c, lambda r: r["second"]["load_wait_s"])
    cold_ttft2 = S(c, lambda r: r["second"]["ttft_s"])
    pc_con1, pc_ttft1 = S(pc, lambda r: r["first"]["construction_s"]), S(pc, lambda r: r["first"]["ttft_s"])
    pc_con2, pc_ttft2 = S(pc, lambda r: r["second"]["construction_s"]), S(pc, lambda r: r["second"]["ttft_s"])
    load_ext = S(p, lambda r: r["load_ext"]["load_ext_s"])
    load_s = S(p, lambda r: r["load_s"])
    trivial = S(p, lambda r: r["trivial_cell_s"] * 1000)
    idle = S(c, lambda r: r["idle_trivial_cell_s"] * 1000)
    during = sorted({r["state_during_trivial"] for r in p})
    pre_first = S(p, lambda r: r["first"]["ttft_s"])
    client_cold = S(c, lambda r: r["first"]["client_first_text_s"])
    client_pre = S(p, lambda r: r["first"]["client_first_text_s"])
    constructions = sorted({r["constructions"] for r in c})
    mlock = sorted({str(r["mlock"]) for r in c + p})
    same = (
        len({r["first"]["text"] for r in c} | {r["second"]["text"] for r in c} | {r["first"]["text"] for r in p}) == 1
    )
    rows = [
        (
            "1st `%%ask`, fresh kernel: model construction (`load_wait_s`)",
            fmt(cold_wait1, " s"),
            f"new `Llama` per call, 1st: {fmt(pc_con1, ' s')}",
            f"{ratio(cold_wait1, pc_con1):.2f}×",
            "—",
            "—",
        ),
        (
            "1st `%%ask`, fresh kernel: time to first token",
            fmt(cold_ttft1, " s"),
            f"new `Llama` per call, 1st: {fmt(pc_ttft1, ' s')}",
            f"{ratio(cold_ttft1, pc_ttft1):.2f}×",
            "—",
            "—",
        ),
        (
            "2nd `%%ask`: model construction",
            fmt(cold_wait2, " s", 4),
            f"new `Llama` per call, 2nd: {fmt(pc_con2, ' s')}",
            f"{ratio(cold_wait2, pc_con2):.4f}×",
            f"≈ 0 s, 1 model built (built: {constructions})",
            ok(cold_wait2["max"] < 0.01 and constructions == [1]),
        ),
        (
            "2nd `%%ask`: time to first token",
            fmt(cold_ttft2, " s"),
            f"new `Llama` per call, 2nd: {fmt(pc_ttft2, ' s')}",
            f"{ratio(cold_ttft2, pc_ttft2):.3f}×",
            "—",
            "—",
        ),
        (
            "`%load_ext llm_magic` with a preload configured",
            fmt(load_ext, " s"),
            f"the model load itself: {fmt(load_s, ' s')}",
            f"{ratio(load_ext, load_s):.2f}× of a load",
            "≤ 0.2 s",
            ok(load_ext["n"] > 0 and load_ext["max"] <= 0.2),
        ),
        (
            f"trivial cell while the model loads (client round trip; model state then: {', '.join(during)})",
            fmt(trivial, " ms", 1),
            f"same cell, idle kernel: {fmt(idle, ' ms', 1)}",
            f"{ratio(trivial, idle):.2f}×",
            "≤ 50 ms",
            ok(trivial["n"] > 0 and trivial["max"] <= 50),
        ),
        (
            "1st `%%ask` after the preload finished: time to first token",
            fmt(pre_first, " s"),
            f"without any preload: {fmt(cold_ttft1, ' s')}",
            f"{ratio(pre_first, cold_ttft1):.3f}×",
            "—",
            "—",
        ),
        (
            "… the same seen by the client (cell sent → first answer text on iopub)",
            fmt(client_pre, " s"),
            f"without any preload: {fmt(client_cold, ' s')}",
            f"{ratio(client_pre, client_cold):.3f}×",
            "—",
            "—",
        ),
    ]
    table = md_table(["measure", "llm_magic median [min–max]", "baseline", "ratio", "target", "result"], rows)
    table += (
        f"\n\n{reps} repetitions, each in 3 fresh kernels interleaved (no preload / new `Llama` per call / "
        f"preload); {MAX_TOKENS} greedy tokens of `Q: {QUESTION}`. Times to first token count from the "
        f"start of the request, construction included. mlock: {', '.join(mlock)} (the per-call baseline "
        f"uses none). Identical answers in every llm_magic kernel: {same}."
    )
    headline = [
        (
            "1 cold/warm",
            "2nd `%%ask`: time to first token",
            fmt(cold_ttft2, " s"),
            f"new `Llama` per call: {fmt(pc_ttft2, ' s')}",
            f"{ratio(cold_ttft2, pc_ttft2):.3f}×",
            "—",
        ),
        (
            "2 preload",
            "`%load_ext` wall time",
            fmt(load_ext, " s"),
            f"model load: {fmt(load_s, ' s')}",
            f"{ratio(load_ext, load_s):.2f}×",
            ok(load_ext["n"] > 0 and load_ext["max"] <= 0.2) + " (≤ 0.2 s)",
        ),
        (
            "2 preload",
            "1st `%%ask` after preload: time to first token",
            fmt(pre_first, " s"),
            f"no preload: {fmt(cold_ttft1, ' s')}",
            f"{ratio(pre_first, cold_ttft1):.3f}×",
            "—",
        ),
    ]
    data = {"reps": reps, "results": results, "headline": headline}
    return data, table


if __name__ == "__main__":
    import sys

    data, table = run(sys.argv[1], reps=int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    print(table)
