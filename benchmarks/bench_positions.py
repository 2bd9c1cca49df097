"""Issue 12: speed over a long answer. Tokens/s against the position in the answer (0–2048).

- llm_magic: one greedy ``llm_magic.stream`` of 2048 tokens (raw prompt, a stop string never
  reached); the time each token arrives is recorded (``Stream.progress().n_tokens`` at each piece).
- plain llama-cpp-python: ``Llama.create_completion(stream=True)`` on a ``Llama`` of its own, loaded
  with the same llama.cpp parameters and flash-attention setting, the same prompt tokens, greedy,
  the same stop string; tokens counted with ``Llama.n_tokens``.
- llama.cpp: ``llama-bench -p 0 -n 128 -d D`` for D = 0, 256, …, 1792, 1920 (flash attention as
  llm_magic runs it): what generating tokens D+1 … D+128 costs with D tokens in the KV cache.
- ``llama_decode`` alone on the plain ``Llama``'s context (no sampling, no text) at the same depths:
  the ceiling of any loop on llama-cpp-python's build of llama.cpp (a shared library; llama-bench is
  a static build and runs with a context just large enough for the test, ``n_ctx = depth + 128``).

Rows: tokens 129–1152 of llm_magic's answer against ``llama-bench -n 1024 -d 128`` (the faster of
``-fa off``/``-fa on``), and llm_magic's 128-token windows against llama-bench at the same depth
(within 5%). Plot: benchmarks/results/positions.png (plots.positions).

    python benchmarks/bench_positions.py MODEL [REPS]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    arrival_times,
    best_fa,
    flash_attn_runs,
    flash_attn_setting,
    fmt,
    forget_context,
    guarded,
    lb_summary,
    llama_bench,
    llama_bench_binary,
    local_model,
    machine_line,
    md_table,
    not_measured,
    ok,
    rate_between,
    same_params_as_llm_magic,
    summary,
    threads_for,
)

PROMPT = "Once upon a time, a small robot who had never seen a painting"
STOP = "THE END"
SEED = 1234
N_TOKENS = 2048
WINDOW = 128
DEPTHS = (*range(0, N_TOKENS - WINDOW, 256), N_TOKENS - WINDOW)  # 0, 256, …, 1792, 1920
LONG = (128, 1152)  # tokens 129–1152 of the answer
LONG_TARGET, CURVE_TARGET = 0.95, 0.95


def windows(times: list[float]) -> list[float | None]:
    """Tokens/s of each 128-token window of the answer: item i is tokens i*128+1 … (i+1)*128."""
    return [rate_between(times, start, start + WINDOW) for start in range(0, N_TOKENS, WINDOW)]


def ours(model: str) -> dict[str, Any]:
    import llm_magic

    forget_context(local_model(model))
    s = llm_magic.stream(
        PROMPT, model=model, max_tokens=N_TOKENS, raw=True, stop=[STOP], temperature=0, seed=SEED, timeout=1200
    )
    marks: list[tuple[int, float]] = []
    pieces: list[str] = []
    for piece in s:
        marks.append((s.progress().n_tokens, time.perf_counter()))
        pieces.append(piece)
    a = s.answer
    assert a is not None
    times = arrival_times(marks)
    return {
        **a.timings(),
        "text": "".join(pieces),
        "windows": windows(times),
        "long_tps": rate_between(times, *LONG),
    }


def plain(llm: Any, tokens: list[int]) -> dict[str, Any]:
    """``create_completion(stream=True)`` as a user of llama-cpp-python writes it."""
    llm.reset()
    n0 = len(tokens)
    marks: list[tuple[int, float]] = []
    pieces: list[str] = []
    chunks = llm.create_completion(
        tokens,
        max_tokens=N_TOKENS,
        stream=True,
        stop=[STOP],
        temperature=0.0,
        top_k=40,
        top_p=0.95,
        min_p=0.05,
        repeat_penalty=1.0,
        seed=SEED,
    )
    finish = None
    for chunk in chunks:
        now = time.perf_counter()
        choice = chunk["choices"][0]
        finish = choice.get("finish_reason") or finish
        if choice["text"]:
            # n_tokens counts evaluated tokens; the token just sampled is evaluated at the next step
            marks.append((llm.n_tokens - n0 + 1, now))
            pieces.append(choice["text"])
    times = arrival_times(marks)
    n = len(times) - 1
    return {
        "n_tokens": n,
        "finish_reason": finish,
        "tokens_per_s": rate_between(times, 1, n),
        "text": "".join(pieces),
        "windows": windows(times),
        "long_tps": rate_between(times, *LONG),
    }


def decode_only(llm: Any, tokens: list[int]) -> dict[str, Any]:
    """The floor under any loop on this library: ``llama_decode`` of one token at a time (no
    sampling, no logits read, no text) on the plain ``Llama``'s context, 128 tokens timed at each
    sweep depth (the KV cache filled up to it in batches in between). What separates it from
    ``llama-bench`` is the library build and the context size, not a loop's work."""
    import llama_cpp as lc

    from llm_magic.engines import llama_private as private

    ctx = private.native_context(llm)
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    buf = (lc.llama_token * 512)()
    pos, rates = 0, {}
    try:
        for depth in DEPTHS:
            fill = depth + len(tokens) - pos  # the answer's token k sits at depth len(prompt) + k
            while fill > 0:
                n = min(fill, 512)
                buf[:n] = [tokens[(pos + i) % len(tokens)] for i in range(n)]
                if lc.llama_decode(ctx, lc.llama_batch_get_one(buf, n)) != 0:
                    raise RuntimeError("llama_decode failed while filling the KV cache")
                pos, fill = pos + n, fill - n
            one = lc.llama_batch_get_one(buf, 1)
            buf[0] = tokens[-1]
            t0 = time.perf_counter()
            for _ in range(WINDOW):
                if lc.llama_decode(ctx, one) != 0:
                    raise RuntimeError("llama_decode failed")
            rates[depth] = WINDOW / (time.perf_counter() - t0)
            pos += WINDOW
    finally:
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        private.set_n_tokens(llm, 0)  # llama-cpp-python's own view: empty
    return {"windows": [rates.get(start) for start in range(0, N_TOKENS, WINDOW)]}


def run(model: str, reps: int = 2) -> tuple[dict[str, Any], str]:
    import llama_cpp

    threads = threads_for(model)
    errors: dict[str, str] = {}
    binary, why = llama_bench_binary()
    local = local_model(model)
    setting, fa = flash_attn_setting(local), flash_attn_runs(local)
    tokens = local.prepare(PROMPT, raw=True).tokens
    need = len(tokens) + N_TOKENS + 16
    if local.n_ctx < need:
        raise RuntimeError(f"the model's context is {local.n_ctx} tokens, {need} needed: set n_ctx ≥ {need}")
    same_params_as_llm_magic()
    plain_llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=local.n_ctx,  # as llm_magic's
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=fa == "on",
        verbose=False,
    )
    # rep 0: ours, plain, decode-only, sweep, long; later reps alternate ours and long (the others
    # once: 2048 tokens of the quadratic baseline and nine llama-bench depths cost minutes)
    order: list[str] = []
    for i in range(reps):
        sides = ["ours", "plain", "decode", "sweep", "long"] if i == 0 else ["ours", "long"]
        order += sides if i % 2 == 0 else sides[::-1]
    results: dict[str, list] = {"ours": [], "plain": [], "decode": [], "sweep": [], "long": []}
    calls = {
        "ours": lambda: ours(model),
        "plain": lambda: plain(plain_llm, tokens),
        "decode": lambda: decode_only(plain_llm, tokens),
        "sweep": lambda: llama_bench(binary, model, threads, n_gen=WINDOW, depths=DEPTHS, fa=(fa,)),
        "long": lambda: llama_bench(
            binary, model, threads, n_gen=LONG[1] - LONG[0], depths=(LONG[0],), fa=long_settings()
        ),
    }

    def long_settings() -> tuple[str, ...]:
        """Both flash-attention settings the first time, then only the faster one (25 s a run)."""
        if not results["long"]:
            return ("off", "on")
        return (max(results["long"][0], key=lambda r: r["avg_ts"])["fa"],)

    for side in order:
        if side in ("sweep", "long") and not binary:
            errors.setdefault("llama_bench", why)
            continue
        r = guarded(errors, side, calls[side])
        if r is not None:
            results[side].append(r)
    plain_llm.close()

    us, pl = results["ours"], results["plain"]
    o_long = summary(r["long_tps"] for r in us if r.get("long_tps"))
    p_long = summary(r["long_tps"] for r in pl if r.get("long_tps"))
    lb_long, long_fa = best_fa(results["long"], n_depth=LONG[0], n_gen=LONG[1] - LONG[0])
    r_long = o_long["median"] / lb_long["median"] if o_long["n"] and lb_long["n"] else float("nan")
    curve = []
    for d in DEPTHS:
        o = summary(r["windows"][d // WINDOW] for r in us)
        p = summary(r["windows"][d // WINDOW] for r in pl)
        dec = summary(r["windows"][d // WINDOW] for r in results["decode"])
        lb = lb_summary(results["sweep"], n_depth=d)
        curve.append(
            {
                "depth": d,
                "ours": o,
                "plain": p,
                "decode": dec,
                "llama_bench": lb,
                "ratio": o["median"] / lb["median"] if o["n"] and lb["n"] else None,
                "plain_ratio": p["median"] / lb["median"] if p["n"] and lb["n"] else None,
            }
        )
    dec_lb = [
        c["decode"]["median"] / c["llama_bench"]["median"] for c in curve if c["decode"]["n"] and c["llama_bench"]["n"]
    ]
    ours_dec = [c["ours"]["median"] / c["decode"]["median"] for c in curve if c["ours"]["n"] and c["decode"]["n"]]
    ratios = [c["ratio"] for c in curve if c["ratio"] is not None]
    plain_ratios = [c["plain_ratio"] for c in curve if c["plain_ratio"] is not None]
    worst = min(ratios) if ratios else float("nan")
    n_ours = summary(r["n_tokens"] for r in us)
    lb_why = errors.get("llama_bench") or errors.get("long") or errors.get("sweep") or "no result"
    texts = {r["text"] for r in us}
    same_plain = bool(us and pl) and us[0]["text"] == pl[0]["text"]

    def verdict(r: float, target: float) -> str:
        return ok(r >= target) if r == r else "—"

    rows = [
        (
            (
                f"tokens {LONG[0] + 1}–{LONG[1]} of one greedy answer, `llm_magic.stream` "
                f"(generated {fmt(n_ours, '', 0)})"
            ),
            fmt(o_long, "", 1) if o_long["n"] else not_measured(errors.get("ours", "too short")),
            f"`llama-bench -n {LONG[1] - LONG[0]} -d {LONG[0]}` (fa {long_fa}): {fmt(lb_long, '', 1)}"
            if lb_long["n"]
            else not_measured(lb_why),
            f"{r_long:.3f}",
            f"≥ {LONG_TARGET}",
            verdict(r_long, LONG_TARGET),
        ),
        (
            f"… plain `create_completion(stream=True)`, same tokens {LONG[0] + 1}–{LONG[1]}",
            "—",
            fmt(p_long, "", 1) if p_long["n"] else not_measured(errors.get("plain", "too short")),
            f"{p_long['median'] / lb_long['median']:.3f} of llama-bench" if p_long["n"] and lb_long["n"] else "—",
            "—",
            "—",
        ),
        (
            (
                f"{WINDOW}-token windows at depth {', '.join(str(d) for d in DEPTHS)}: llm_magic / "
                f"`llama-bench -n {WINDOW} -d D` (fa {fa}), worst window"
            ),
            f"{worst:.3f}" if ratios else "—",
            f"plain `create_completion`: {min(plain_ratios):.3f}" if plain_ratios else "—",
            f"{worst:.3f}" if ratios else "—",
            f"≥ {CURVE_TARGET} everywhere",
            verdict(worst, CURVE_TARGET),
        ),
    ]
    rows += [
        (
            (
                "… `llama_decode` alone on llama-cpp-python's library (one token at a time, no sampling, no "
                "text, llm_magic's context size) vs `llama-bench`, worst window: the library's own ceiling"
            ),
            "—",
            f"{min(dec_lb):.3f} (best {max(dec_lb):.3f})" if dec_lb else "—",
            f"{min(dec_lb):.3f}" if dec_lb else "—",
            "—",
            "—",
        ),
        (
            "… llm_magic vs `llama_decode` alone, worst window: what the loop itself costs",
            f"{min(ours_dec):.3f} (best {max(ours_dec):.3f})" if ours_dec else "—",
            "—",
            f"{min(ours_dec):.3f}" if ours_dec else "—",
            "—",
            "—",
        ),
    ]
    table = md_table(["measure", "llm_magic median [min–max]", "baseline", "ratio", "target", "result"], rows)
    table += "\n\n" + md_table(
        [
            "answer tokens",
            "llm_magic tokens/s",
            "plain `create_completion`",
            "`llama_decode` only",
            "`llama-bench` at that depth",
            "ratio",
        ],
        [
            (
                f"{c['depth'] + 1}–{c['depth'] + WINDOW}",
                fmt(c["ours"], "", 1),
                fmt(c["plain"], "", 1),
                fmt(c["decode"], "", 1),
                fmt(c["llama_bench"], "", 1),
                f"{c['ratio']:.3f}" if c["ratio"] is not None else "—",
            )
            for c in curve
        ],
    )
    table += (
        f"\n\nllm_magic: {len(us)} greedy answer(s) of {N_TOKENS} tokens max (raw prompt `{PROMPT}`, "
        f"{len(tokens)} prompt tokens, stop string `{STOP}` never reached; same text every time: "
        f"{len(texts) == 1}); plain llama-cpp-python: {len(pl)} (same text as llm_magic: {same_plain}); "
        f"llama-bench depth sweep: {len(results['sweep'])}, long run: {len(results['long'])} (flash attention "
        f"off and on the first time, then the faster one; interleaved). "
        f"The model runs flash attention {fa} (setting: {setting}); {threads} threads."
        + (" Failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()) + "." if errors else "")
    )
    headline = [
        (
            "12 long answer",
            f"tokens {LONG[0] + 1}–{LONG[1]} of one greedy answer vs `llama-bench -n 1024 -d 128`",
            fmt(o_long, "", 1) if o_long["n"] else "not measured",
            fmt(lb_long, "", 1) if lb_long["n"] else not_measured(lb_why),
            f"{r_long:.3f}",
            verdict(r_long, LONG_TARGET) + f" (≥ {LONG_TARGET})",
        ),
        (
            "12 positions",
            f"worst {WINDOW}-token window over 0–{N_TOKENS} vs `llama-bench` at that depth",
            f"{worst:.3f}" if ratios else "not measured",
            f"plain `create_completion`: {min(plain_ratios):.3f}" if plain_ratios else "—",
            f"{worst:.3f}" if ratios else "—",
            verdict(worst, CURVE_TARGET) + f" (≥ {CURVE_TARGET})",
        ),
    ]
    data = {
        "reps": reps,
        "threads": threads,
        "flash_attn": setting,
        "flash_attn_runs": fa,
        "n_prompt_tokens": len(tokens),
        "window": WINDOW,
        "n_tokens": N_TOKENS,
        "depths": list(DEPTHS),
        "results": {
            k: [{kk: vv for kk, vv in r.items() if kk != "text"} for r in v] if k in ("ours", "plain") else v
            for k, v in results.items()
        },
        "curve": curve,
        "long": {"ours": o_long, "plain": p_long, "llama_bench": lb_long, "fa": long_fa, "ratio": r_long},
        "worst_ratio": worst,
        "errors": errors,
        "headline": headline,
    }
    return data, table


if __name__ == "__main__":
    data, table = run(sys.argv[1], reps=int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    print(machine_line(sys.argv[1]) + "\n\n" + table)
