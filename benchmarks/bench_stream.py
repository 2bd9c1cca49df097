"""Rows 3 and 7: streaming through ``%%ask`` in a real kernel, against the engine called directly.

Row 3 — one real kernel (ipykernel, driven over jupyter_client as a front end would): a ``%%ask``
cell streams its answer as display updates on iopub, and in the same kernel the engine
(``LocalModel.prepare`` + ``LocalModel.stream``) is called directly on the same warm model, holding
the model's queue as a request does, with the same prompt tokens, seed, max_tokens, sampling
(``request_options.resolve_options``) and stop strings. The difference is what the request, the
magic and the cell output cost. Timing is taken inside the kernel: ``Answer.tokens_per_s`` /
``Answer.ttft_s`` for ``%%ask``, the same formulas around the direct loop ((n − 1) / (last − first
token); first token counted from tokenizing the prompt). The client also records what it received:
display updates, their rate, and when the first text arrived.

Row 7 (``%%ask`` part) — a kernel streaming the tiny test model at full speed: update_display_data
messages counted on the client over the stream's duration.

llama.cpp's own ``llama-bench`` is compared with the engine in bench_engine.py (issue 12's rows).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from common import ROOT, Kernel, fmt, interleaved, md_table, ok, ratio, summary, threads_for

# Raw text (no Q/A template, whose "\nQ:" stop would end the answer after ~20 tokens) and a stop string
# that does not occur, so both sides generate max_tokens with stop-string matching switched on.
PROMPT = "Once upon a time, a small robot who had never seen a painting"
STOP = "THE END"
SEED = 1234

KERNEL_HELPERS = r"""
import json, time
import llm_magic
from llm_magic.runtime import get as _runtime

def _bench_entry():
    return [e for e in _runtime().cache.entries() if e.state == "ready"][0]

def _bench_direct(prompt, max_tokens, seed, raw, stop):
    from llm_magic.engines.base import StreamStats
    from llm_magic.request_options import resolve_options

    entry = _bench_entry()
    local = entry.model
    sampling = resolve_options(None, None, max_tokens, None, None,
                               {"temperature": 0.0, "seed": seed, "stop": stop}).sampling
    with entry.queue.exclusive(60):  # the model's one slot, as a request holds it
        t0 = time.monotonic()
        prepared = local.prepare(prompt, raw=raw, max_tokens=max_tokens)
        stats = StreamStats()
        first = last = None
        text = ""
        pieces = local.stream(prepared, max_tokens=max_tokens, should_stop=lambda: False, stats=stats, **sampling)
        try:
            for piece in pieces:
                last = time.monotonic()
                if first is None:
                    first = last
                text += piece
        finally:
            pieces.close()
    n = stats.n_tokens
    tps = (n - 1) / (last - first) if first is not None and last > first else None
    return {"ttft_s": first - t0 if first else None, "tokens_per_s": tps, "n_tokens": n, "text": text,
            "n_prompt_tokens": len(prepared.tokens)}

def _bench_answer(a):
    return {**a.timings(), "text": a.text}
"""


def _updates(result: dict[str, Any]) -> dict[str, Any]:
    """What the client received for one %%ask cell."""
    t_sent = result["t_sent"]
    disp = [(t, c) for t, kind, c in result["msgs"] if kind in ("display_data", "update_display_data")]
    updates = [t for t, kind, _ in result["msgs"] if kind == "update_display_data"]
    first_text = next(
        (
            t
            for t, c in disp
            if (txt := c.get("data", {}).get("text/plain", "")) and txt != "▌" and not txt.startswith("[")
        ),
        None,
    )
    span = (updates[-1] - updates[0]) if len(updates) > 1 else None
    peak = max((sum(1 for u in updates if t <= u < t + 1.0) for t in updates), default=0)
    return {
        "n_updates": len(updates),
        "span_s": span,
        "updates_per_s": (len(updates) - 1) / span if span else None,  # intervals per second
        "max_in_any_1s": peak,
        "client_ttft_s": first_text - t_sent if first_text else None,
        "final_has_markdown": bool(disp) and "text/html" in disp[-1][1].get("data", {}),
    }


def _ask_cell(k: Kernel, max_tokens: int, prompt: str = PROMPT, timeout: float = 120) -> dict[str, Any]:
    r = k.execute(
        f"%%ask -n {max_tokens} --raw --stop '{STOP}' --temperature 0 --seed {SEED} -t {timeout:g} "
        f"-o _bench_a\n{prompt}",
        timeout=timeout + 60,
    )
    out = k.value("print(json.dumps(_bench_answer(_bench_a)))")
    out["client"] = _updates(r)
    return out


def _start_kernel(model: str) -> Kernel:
    k = Kernel()
    k.execute(f"%config AskMagics.model = {model!r}\n%config AskMagics.preload = []\n%load_ext llm_magic")
    k.execute(KERNEL_HELPERS)
    k.execute("%%ask -n 8 --temperature 0\nwarm up")
    return k


def bench_streaming(model: str, reps: int, max_tokens: int) -> dict[str, Any]:
    threads = threads_for(model)
    results: dict[str, list] = {"ours": [], "direct": []}
    with _start_kernel(model) as k:
        _ask_cell(k, 8)  # the prompt in the KV cache: from the first repetition on, both sides reuse it
        for _i, side in interleaved(reps, "ours", "direct"):
            if side == "ours":
                results["ours"].append(_ask_cell(k, max_tokens))
            else:
                results["direct"].append(
                    k.value(
                        f"print(json.dumps(_bench_direct({PROMPT + chr(10)!r}, {max_tokens}, {SEED}, True, [{STOP!r}])))"
                    )
                )
    # a --raw cell body keeps its final newline: the direct side gets PROMPT + "\n" too (checked here)
    texts = {r["text"] for r in results["ours"] + results["direct"]}
    n_prompt = {r["n_prompt_tokens"] for r in results["ours"] + results["direct"]}
    return {
        "reps": reps,
        "max_tokens": max_tokens,
        "threads": threads,
        "same_text": len(texts) == 1,
        "same_prompt_tokens": len(n_prompt) == 1,
        **results,
    }


def bench_updates_ask(reps: int, max_tokens: int = 1500) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_gguf import write_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tiny = str(write_tiny_model(Path(tmp) / "tiny.gguf"))
        runs = []
        with _start_kernel(tiny) as k:
            for _ in range(reps):
                runs.append(_ask_cell(k, max_tokens, prompt="Tell me a long story.", timeout=60))
    return {"reps": reps, "max_tokens": max_tokens, "runs": runs}


def run(model: str, reps: int = 7, max_tokens: int = 128) -> tuple[dict[str, Any], str]:
    s = bench_streaming(model, reps, max_tokens)
    upd = bench_updates_ask(max(5, reps // 2 + 2))
    S = lambda rows, f: summary(v for r in rows if (v := f(r)) is not None)  # noqa: E731
    o_tps, d_tps = S(s["ours"], lambda r: r["tokens_per_s"]), S(s["direct"], lambda r: r["tokens_per_s"])
    o_ttft, d_ttft = S(s["ours"], lambda r: r["ttft_s"] * 1000), S(s["direct"], lambda r: r["ttft_s"] * 1000)
    c_ttft = S(s["ours"], lambda r: r["client"]["client_ttft_s"] * 1000 if r["client"]["client_ttft_s"] else None)
    c_rate = S(s["ours"], lambda r: r["client"]["updates_per_s"])
    c_n = S(s["ours"], lambda r: r["client"]["n_updates"])
    n_o, n_d = S(s["ours"], lambda r: r["n_tokens"]), S(s["direct"], lambda r: r["n_tokens"])
    r_tps = ratio(o_tps, d_tps)
    diff = o_ttft["median"] - d_ttft["median"]
    rows = [
        (
            (
                f"tokens/s, `%%ask` in a kernel vs the engine called directly in the same kernel "
                f"({max_tokens} tokens max; generated {fmt(n_o, '', 0)} / {fmt(n_d, '', 0)})"
            ),
            fmt(o_tps, "", 1),
            fmt(d_tps, "", 1),
            f"{r_tps:.3f}",
            "≥ 0.97",
            ok(r_tps >= 0.97),
        ),
        (
            "time to first token (warm model, kernel-side)",
            fmt(o_ttft, " ms", 1),
            fmt(d_ttft, " ms", 1),
            f"{diff:+.1f} ms",
            "≤ +5 ms",
            ok(diff <= 5),
        ),
        ("… first answer text seen by the client (cell sent → iopub)", fmt(c_ttft, " ms", 1), "—", "—", "—", "—"),
        (
            "display updates received by the client during the answer",
            f"{fmt(c_rate, '/s', 1)}; {fmt(c_n, '', 0)} per answer",
            "—",
            "—",
            "≤ 30/s",
            ok(c_rate["n"] > 0 and c_rate["max"] <= 30),
        ),
    ]
    u = upd["runs"]
    u_rate = S(u, lambda r: r["client"]["updates_per_s"])
    u_peak = S(u, lambda r: r["client"]["max_in_any_1s"])
    u_tps = S(u, lambda r: r["tokens_per_s"])
    rows += [
        (
            (
                f"row 7: `%%ask` display updates/s on the client, tiny model streaming {upd['max_tokens']} tokens "
                f"at {fmt(u_tps, ' tokens/s', 0)}"
            ),
            fmt(u_rate, "/s", 1),
            "—",
            "—",
            "≤ 30/s",
            ok(u_rate["n"] > 0 and u_rate["max"] <= 30),
        ),
        (
            "row 7: most `%%ask` display updates in any 1 s window",
            fmt(u_peak, "", 0),
            "—",
            "—",
            "≤ 30",
            ok(u_peak["n"] > 0 and u_peak["max"] <= 30),
        ),
    ]
    table = md_table(["measure", "llm_magic median [min–max]", "baseline", "ratio / diff", "target", "result"], rows)
    table += (
        f"\n\n{s['reps']} interleaved repetitions (`%%ask`, the engine called directly; order reversed "
        f"every other repetition) in one real kernel "
        f"driven over jupyter_client; greedy, seed {SEED}, the same raw prompt and stop string (`{STOP}`, never reached); same prompt token count on both "
        f"sides: {s['same_prompt_tokens']}; identical text on both sides: {s['same_text']}. Final output rendered as Markdown in every run: "
        f"{all(r['client']['final_has_markdown'] for r in s['ours'] + u)}."
    )
    data = {
        "streaming": s,
        "updates_ask": upd,
        "ratio_tps": r_tps,
        "ttft_diff_ms": diff,
    }
    headline = [
        (
            "3 streaming",
            "tokens/s, `%%ask` vs the engine called directly (kernel-side)",
            fmt(o_tps, "", 1),
            fmt(d_tps, "", 1),
            f"{r_tps:.3f}",
            ok(r_tps >= 0.97) + " (≥ 0.97)",
        ),
        (
            "3 streaming",
            "time to first token, warm",
            fmt(o_ttft, " ms", 1),
            fmt(d_ttft, " ms", 1),
            f"{diff:+.1f} ms",
            ok(diff <= 5) + " (≤ +5 ms)",
        ),
    ]
    headline.append(
        (
            "7 updates",
            "`%%ask` display updates/s, tiny model at full speed",
            fmt(u_rate, "/s", 1),
            f"{fmt(u_tps, ' tokens/s', 0)}",
            "—",
            ok(u_rate["n"] > 0 and u_rate["max"] <= 30) + " (≤ 30/s)",
        )
    )
    data["headline"] = headline
    return data, table


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    data, table = run(sys.argv[1], reps=int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    print(table)
