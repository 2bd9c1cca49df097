"""Issue 12: llm_magic's generation loop against llama.cpp's own ``llama-bench``.

Rows (one process, the model loaded once, every side interleaved A B C, C B A …):
- greedy: ``llm_magic.stream`` (raw prompt, temperature 0, a stop string never reached, 128 tokens)
  against ``llama-bench -p 0 -n 128`` with the faster of ``-fa off`` / ``-fa on`` (same threads);
- default sampling: the same with temperature 0.7, top-k 40, top-p 0.95 (min-p left to the
  engine's default) and a fixed seed;
- prompt: ``llm_magic.ask`` on a prompt evaluated from scratch (KV cache forgotten first), prompt
  tokens / ``Answer.prompt_s`` (tokenizing and the first sample included) against ``llama-bench -p N``.

Our tokens/s is ``Answer.tokens_per_s``: (n − 1) / (last token − first token), so neither the
prompt nor the first sample counts; llama-bench's tg is n / (time of n decodes), with no sampling
and no detokenizing. Both generate from a (nearly) empty context.

    python benchmarks/bench_engine.py MODEL [REPS]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    best_fa,
    fmt,
    forget_context,
    guarded,
    interleaved,
    lb_summary,
    llama_bench,
    llama_bench_binary,
    local_model,
    machine_line,
    md_table,
    not_measured,
    ok,
    ratio,
    summary,
    threads_for,
)

# The streaming benchmark's raw prompt: greedy Gemma 3 270M writes well past 2048 tokens without an
# end-of-generation token; the stop string never occurs, so stop matching is on but never fires.
PROMPT = "Once upon a time, a small robot who had never seen a painting"
STOP = "THE END"
SEED = 1234
SAMPLING = {"temperature": 0.7, "top_k": 40, "top_p": 0.95}  # issue 12's "default sampling"
PP_PROMPT = (
    "Summarise the following notes in one sentence. The lighthouse keeper climbs the stairs every "
    "evening, trims the wick, polishes the lens, writes the weather in a logbook, watches the ships "
    "pass the reef, and at dawn walks down to the village to buy bread and read the newspaper."
)
GREEDY_TARGET, SAMPLING_TARGET = 0.95, 0.93


def ours(model: str, max_tokens: int, **sampling: Any) -> dict[str, Any]:
    import llm_magic

    s = llm_magic.stream(
        PROMPT, model=model, max_tokens=max_tokens, raw=True, stop=[STOP], timeout=600, seed=SEED, **sampling
    )
    text = "".join(s)
    a = s.answer
    assert a is not None
    if a.finish_reason not in ("length", "stop"):
        raise RuntimeError(f"answer ended with {a.finish_reason}: {a.error or ''}")
    return {**a.timings(), "text": text}


def ours_prompt(model: str) -> dict[str, Any]:
    import llm_magic

    forget_context(local_model(model))  # the whole prompt is evaluated again
    a = llm_magic.ask(PP_PROMPT, model=model, max_tokens=1, temperature=0, timeout=600)
    out = a.timings()
    out["pp_tps"] = a.n_prompt_evaluated / a.prompt_s if a.prompt_s else None
    return out


def run(model: str, reps: int = 7, max_tokens: int = 128) -> tuple[dict[str, Any], str]:
    threads = threads_for(model)
    errors: dict[str, str] = {}
    binary, why = llama_bench_binary()
    local = local_model(model)  # loads the model once; every request below finds it ready
    n_pp = len(local.prepare(PP_PROMPT, raw=False).tokens)
    sides = {
        "greedy": lambda: ours(model, max_tokens, temperature=0.0),
        "sampling": lambda: ours(model, max_tokens, **SAMPLING),
        "prompt": lambda: ours_prompt(model),
    }
    if binary:
        sides["llama_bench"] = lambda: llama_bench(
            binary, model, threads, n_prompt=n_pp, n_gen=max_tokens, fa=("off", "on")
        )
    else:
        errors["llama_bench"] = why
    results: dict[str, list] = {k: [] for k in sides}
    for _i, side in interleaved(reps, *sides):
        r = guarded(errors, side, sides[side])
        if r is not None:
            results[side].append(r)

    S = lambda side, key: summary(r[key] for r in results[side] if r.get(key))  # noqa: E731
    greedy, sampled, pp = S("greedy", "tokens_per_s"), S("sampling", "tokens_per_s"), S("prompt", "pp_tps")
    n_greedy, n_sampled = S("greedy", "n_tokens"), S("sampling", "n_tokens")
    runs = results.get("llama_bench", [])
    tg, tg_fa = best_fa(runs, n_prompt=0, n_gen=max_tokens)
    tg_off = lb_summary(runs, fa="off", n_prompt=0, n_gen=max_tokens)
    tg_on = lb_summary(runs, fa="on", n_prompt=0, n_gen=max_tokens)
    lb_pp, pp_fa = best_fa(runs, n_prompt=n_pp, n_gen=0)
    r_greedy, r_sampled, r_pp = ratio(greedy, tg), ratio(sampled, tg), ratio(pp, lb_pp)
    lb_why = errors.get("llama_bench", "")
    base = f"`llama-bench` tg{max_tokens} (fa {tg_fa}): {fmt(tg, '', 1)}" if tg["n"] else not_measured(lb_why)

    def cell(s: dict[str, float], side: str, digits: int = 1) -> str:
        return fmt(s, "", digits) if s["n"] else not_measured(errors.get(side, "no result"))

    def verdict(r: float, target: float) -> str:
        return ok(r >= target) if r == r else "—"  # nan: a side is missing

    rows = [
        (
            (
                f"greedy tokens/s, {max_tokens} tokens, `llm_magic.stream` vs llama.cpp (same {threads} "
                f"threads; generated {fmt(n_greedy, '', 0)})"
            ),
            cell(greedy, "greedy"),
            base,
            f"{r_greedy:.3f}",
            f"≥ {GREEDY_TARGET}",
            verdict(r_greedy, GREEDY_TARGET),
        ),
        (
            (
                f"default sampling (temperature 0.7, top-k 40, top-p 0.95, min-p default, seed {SEED}) "
                f"tokens/s (generated {fmt(n_sampled, '', 0)})"
            ),
            cell(sampled, "sampling"),
            base,
            f"{r_sampled:.3f}",
            f"≥ {SAMPLING_TARGET}",
            verdict(r_sampled, SAMPLING_TARGET),
        ),
        (
            f"… `llama-bench` tg{max_tokens} with flash attention off / on",
            "—",
            f"{fmt(tg_off, '', 1)} / {fmt(tg_on, '', 1)}",
            f"{ratio(tg_on, tg_off):.3f} (on/off)",
            "—",
            "—",
        ),
        (
            (
                f"prompt tokens/s, `llm_magic.ask` on a {n_pp}-token prompt from an empty KV cache "
                f"(tokenizing and the first sample included)"
            ),
            cell(pp, "prompt", 0),
            f"`llama-bench` pp{n_pp} (fa {pp_fa}): {fmt(lb_pp, '', 0)}" if lb_pp["n"] else not_measured(lb_why),
            f"{r_pp:.3f}",
            "—",
            "—",
        ),
    ]
    table = md_table(["measure", "llm_magic median [min–max]", "baseline", "ratio", "target", "result"], rows)
    texts = {r["text"] for r in results["greedy"]}
    cmd = runs[0][0]["cmd"] if runs and runs[0] else None
    table += (
        f"\n\n{reps} interleaved repetitions (greedy, sampling, prompt, llama-bench; order reversed every "
        f"other repetition) in one process, the model loaded once; raw prompt `{PROMPT}`, stop string "
        f"`{STOP}` (never reached). Same greedy text every repetition: {len(texts) == 1}."
        + (f" llama-bench: `{cmd}`, one repetition per turn." if cmd else "")
        + (" Failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()) + "." if errors else "")
    )
    headline = [
        (
            "12 greedy",
            f"greedy tokens/s, `llm_magic.stream` vs `llama-bench` tg{max_tokens} (best of fa off/on)",
            cell(greedy, "greedy"),
            fmt(tg, "", 1) if tg["n"] else not_measured(lb_why),
            f"{r_greedy:.3f}",
            verdict(r_greedy, GREEDY_TARGET) + f" (≥ {GREEDY_TARGET})",
        ),
        (
            "12 sampling",
            "default sampling tokens/s vs the same `llama-bench`",
            cell(sampled, "sampling"),
            fmt(tg, "", 1) if tg["n"] else not_measured(lb_why),
            f"{r_sampled:.3f}",
            verdict(r_sampled, SAMPLING_TARGET) + f" (≥ {SAMPLING_TARGET})",
        ),
    ]
    data = {
        "reps": reps,
        "max_tokens": max_tokens,
        "threads": threads,
        "n_pp": n_pp,
        "results": results,
        "errors": errors,
        "ratio_greedy": r_greedy,
        "ratio_sampling": r_sampled,
        "ratio_pp": r_pp,
        "llama_bench_tg": tg,
        "llama_bench_fa": tg_fa,
        "headline": headline,
    }
    return data, table


if __name__ == "__main__":
    data, table = run(sys.argv[1], reps=int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    print(machine_line(sys.argv[1]) + "\n\n" + table)
