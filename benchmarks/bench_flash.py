"""Issue 12: which flash-attention default? Tokens/s at depth 0 and ~1024, flash attention on vs off.

- llama.cpp: ``llama-bench -p 0 -n 128 -d 0,1024 -fa off,on`` (one run per repetition).
- llm_magic: 128 greedy tokens after a short raw prompt (depth ≈ 0) and after a ~1024-token raw
  prompt (depth ≈ 1024; ``Answer.tokens_per_s``, the prompt does not count), on two aliases of the
  same file with the model option ``flash_attn`` = "on" / "off" where llm_magic has that option;
  otherwise on the model as llm_magic loads it by default.

The default ("auto", which llama.cpp turns on for the CPU) is justified when flash attention is not
slower at depth 0 (≥ 0.97×) and faster at depth ~1024.

    python benchmarks/bench_flash.py MODEL [REPS]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    flash_attn_runs,
    flash_attn_setting,
    fmt,
    guarded,
    interleaved,
    lb_summary,
    llama_bench,
    llama_bench_binary,
    local_model,
    machine_line,
    md_table,
    not_measured,
    ratio,
    summary,
    threads_for,
)

PROMPT = "Once upon a time, a small robot who had never seen a painting"
STOP = "THE END"
DEPTH = 1024
LINES = (
    "the keeper climbs the stairs and trims the wick",
    "a fishing boat passes the reef before the storm",
    "fog hides the harbour; the horn sounds every minute",
    "the lens is polished and the weather written in the logbook",
    "at dawn the keeper walks to the village for bread",
)


def deep_prompt(local: Any, depth: int = DEPTH) -> str:
    """A raw numbered list of about ``depth`` tokens (ending where the next item begins): greedy
    decoding continues the list rather than stopping."""
    head = "The lighthouse logbook, one line a day:\n"
    lines: list[str] = []
    i = 0
    while True:
        i += 1
        lines.append(f"{i}. Day {i}: {LINES[i % len(LINES)]}.")
        text = head + "\n".join(lines) + f"\n{i + 1}."
        n = len(local.llm.tokenize(text.encode(), add_bos=True, special=False))
        if n >= depth:
            return text


def has_flash_option() -> bool:
    from llm_magic import settings

    return "flash_attn" in getattr(settings, "SPEC_TYPES", {})


def ours(name: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    import llm_magic

    s = llm_magic.stream(prompt, model=name, max_tokens=max_tokens, raw=True, stop=[STOP], temperature=0, timeout=600)
    "".join(s)
    a = s.answer
    assert a is not None
    if a.finish_reason not in ("length", "stop"):
        raise RuntimeError(f"answer ended with {a.finish_reason}: {a.error or ''}")
    if a.n_tokens < 32:
        raise RuntimeError(f"only {a.n_tokens} tokens generated: too few to time")
    return a.timings()


def ours_both(name: str, deep: str, max_tokens: int, rep: int) -> dict[str, Any]:
    """Both depths on one variant. llm_magic keeps one instance per model file: asking for an alias
    with other load options replaces the loaded one, so a switch loads the variant (and warms it)."""
    local_model(name)
    out = {}
    for depth in (0, DEPTH) if rep % 2 == 0 else (DEPTH, 0):
        out[depth] = ours(name, PROMPT if depth == 0 else deep, max_tokens)
    return out


def run(model: str, reps: int = 3, max_tokens: int = 128) -> tuple[dict[str, Any], str]:
    import llm_magic

    threads = threads_for(model)
    errors: dict[str, str] = {}
    binary, why = llama_bench_binary()
    default = local_model(model)
    default_setting, eff = flash_attn_setting(default), flash_attn_runs(default)
    deep = deep_prompt(default)
    if has_flash_option():
        s = llm_magic.current_settings()
        s.models = {
            **s.models,
            "bench-fa-off": {"path": model, "flash_attn": "off"},
            "bench-fa-on": {"path": model, "flash_attn": "on"},
        }
        variants = {"off": "bench-fa-off", "on": "bench-fa-on"}
        option = "the `flash_attn` model option"
    else:
        variants = {eff: model}
        option = f"no `flash_attn` option yet: the model as loaded by default (flash attention {eff})"
    sides: dict[str, Any] = {f"ours_{fa}": name for fa, name in variants.items()}
    if binary:
        sides["llama_bench"] = None
    else:
        errors["llama_bench"] = why
    results: dict[str, list] = {f"ours_{fa}_{d}": [] for fa in variants for d in (0, DEPTH)}
    results["llama_bench"] = []
    for i, side in interleaved(reps, *sides):
        if side == "llama_bench":
            r = guarded(
                errors,
                side,
                llama_bench,
                binary,
                model,
                threads,
                n_gen=max_tokens,
                depths=(0, DEPTH),
                fa=("off", "on"),
            )
            if r is not None:
                results[side].append(r)
            continue
        both = guarded(errors, side, ours_both, sides[side], deep, max_tokens, i)
        for depth, r in (both or {}).items():
            results[f"{side}_{depth}"].append(r)
    if has_flash_option():
        llm_magic.unload(all=True)  # the variants (one of them is loaded now)

    runs = results.get("llama_bench", [])
    lb = {(fa, d): lb_summary(runs, fa=fa, n_depth=d, n_gen=max_tokens) for fa in ("off", "on") for d in (0, DEPTH)}
    us = {
        (fa, d): summary(r["tokens_per_s"] for r in results.get(f"ours_{fa}_{d}", []) if r.get("tokens_per_s"))
        for fa in ("off", "on")
        for d in (0, DEPTH)
    }
    depth_real = summary(
        r["n_prompt_tokens"]
        for fa in variants
        for r in results.get(f"ours_{fa}_{DEPTH}", [])
        if r.get("n_prompt_tokens")
    )

    def cells(s: dict[tuple[str, int], dict[str, float]], d: int) -> tuple[str, str, str]:
        off, on = s[("off", d)], s[("on", d)]
        r = ratio(on, off)
        return (
            fmt(off, "", 1) if off["n"] else "—",
            fmt(on, "", 1) if on["n"] else "—",
            f"{r:.3f}" if r == r else "—",
        )

    rows = [
        ("`llama-bench`", *cells(lb, 0), *cells(lb, DEPTH)),
        (f"llm_magic ({option})", *cells(us, 0), *cells(us, DEPTH)),
    ]
    table = md_table(
        [
            "128 greedy tokens, tokens/s",
            "depth 0: fa off",
            "fa on",
            "on/off",
            f"depth {DEPTH}: fa off",
            "fa on",
            "on/off",
        ],
        rows,
    )
    # the verdict: llm_magic's own on/off where both were measured, else llama-bench's
    src = us if all(us[(fa, d)]["n"] for fa in ("off", "on") for d in (0, DEPTH)) else lb
    r0, rd = ratio(src[("on", 0)], src[("off", 0)]), ratio(src[("on", DEPTH)], src[("off", DEPTH)])
    best = "on" if rd == rd and r0 >= 0.97 and rd >= 1.0 else ("off" if rd == rd else "?")
    justified = best == eff
    verdict = ("✅ met" if justified else "❌ missed") if best != "?" else "—"
    table += (
        f"\n\nThe default model loads with flash_attn `{default_setting}` (runs {eff}). Faster here by "
        f"{'llm_magic' if src is us else 'llama-bench'}'s numbers: flash attention **{best}** "
        f"(on/off {r0:.3f} at depth 0, {rd:.3f} at depth {DEPTH}; on is chosen when ≥ 0.97 at depth 0 and "
        f"≥ 1 at depth {DEPTH}) — default justified: {verdict}. llm_magic's depth-{DEPTH} prompt: "
        f"{fmt(depth_real, ' tokens', 0)} (a raw numbered list; its evaluation does not count). "
        f"{reps} interleaved repetitions, {threads} threads."
        + (" Failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()) + "." if errors else "")
    )
    headline = [
        (
            "12 flash attn",
            f"tokens/s flash attention on/off at depth 0 / {DEPTH} ({'llm_magic' if src is us else 'llama-bench'})",
            f"{r0:.3f}× / {rd:.3f}×" if rd == rd else not_measured(errors.get("llama_bench", "no result")),
            f"default: flash_attn {default_setting} (runs {eff})",
            "—",
            f"{verdict} (default = the faster at depth)",
        )
    ]
    data = {
        "reps": reps,
        "threads": threads,
        "depth": DEPTH,
        "default_flash_attn": default_setting,
        "flash_option": has_flash_option(),
        "results": results,
        "errors": errors,
        "llama_bench": {f"{fa}_{d}": v for (fa, d), v in lb.items()},
        "llm_magic": {f"{fa}_{d}": v for (fa, d), v in us.items()},
        "best": best,
        "headline": headline,
    }
    return data, table


if __name__ == "__main__":
    data, table = run(sys.argv[1], reps=int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    print(machine_line(sys.argv[1]) + "\n\n" + table)
