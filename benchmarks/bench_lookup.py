"""Issue 12, stretch: prompt-lookup decoding (``draft="lookup"``, ``%%ask --draft lookup``) on an
edit task, against the plain greedy loop on the same model.

The task asks for a function back with type hints: the answer copies long runs of its prompt,
which is where guessing the next tokens from the text so far pays. Both sides are greedy with the
same raw prompt and stop string, interleaved; the texts must be identical. Tokens/s is
``Answer.tokens_per_s``; ``Answer.n_drafted`` / ``n_accepted`` count the guesses.

    python benchmarks/bench_lookup.py MODEL [REPS]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt, guarded, interleaved, local_model, machine_line, md_table, ok, ratio, summary

CODE = '''def merge_intervals(intervals, min_gap=0):
    """Merge overlapping intervals; intervals closer than min_gap are merged too."""
    if not intervals:
        return []
    ordered = sorted(intervals, key=lambda pair: pair[0])
    merged = [list(ordered[0])]
    for start, end in ordered[1:]:
        last = merged[-1]
        if start <= last[1] + min_gap:
            last[1] = max(last[1], end)
        else:
            merged.append([start, end])
    return [tuple(pair) for pair in merged]


def total_length(intervals):
    """The total length covered by the intervals."""
    return sum(end - start for start, end in merge_intervals(intervals))
'''
PROMPT = f"Add type hints to this Python code.\n\n```python\n{CODE}```\n\nThe same code with type hints:\n\n```python\n"
STOP = "```"


def ask(model: str, draft: str | None, max_tokens: int) -> dict[str, Any]:
    import llm_magic

    extra = {"draft": draft} if draft else {}
    a = llm_magic.ask(PROMPT, model=model, raw=True, max_tokens=max_tokens, temperature=0, stop=[STOP], **extra)
    if a.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"answer ended with {a.finish_reason}: {a.error or ''}")
    return {
        **a.timings(),
        "text": a.text,
        "n_drafted": getattr(a, "n_drafted", 0),
        "n_accepted": getattr(a, "n_accepted", 0),
    }


def run(model: str, reps: int = 5, max_tokens: int = 400) -> tuple[dict[str, Any], str]:
    from llm_magic.errors import ConfigError

    errors: dict[str, str] = {}
    local_model(model)
    try:
        ask(model, "lookup", 4)
    except ConfigError as e:  # an llm_magic without prompt lookup
        errors["lookup"] = str(e)
    sides = ("plain", "lookup") if "lookup" not in errors else ("plain",)
    results: dict[str, list] = {"plain": [], "lookup": []}
    for _i, side in interleaved(reps, *sides):
        r = guarded(errors, side, ask, model, "lookup" if side == "lookup" else None, max_tokens)
        if r is not None:
            results[side].append(r)
    plain, look = (summary(r["tokens_per_s"] for r in results[k] if r.get("tokens_per_s")) for k in ("plain", "lookup"))
    n_tokens = summary(r["n_tokens"] for r in results["plain"] + results["lookup"])
    accepted = summary(r["n_accepted"] / r["n_drafted"] for r in results["lookup"] if r.get("n_drafted"))
    texts = {r["text"] for r in results["plain"] + results["lookup"]}
    same = bool(results["plain"]) and bool(results["lookup"]) and len(texts) == 1
    r_tps = ratio(look, plain)
    met = r_tps == r_tps and r_tps > 1.0 and same
    verdict = ok(met) if r_tps == r_tps else f"not measured: {errors.get('lookup', 'no result')}"
    rows = [
        (
            (
                f"greedy tokens/s on an edit task (a function back with type hints; {fmt(n_tokens, '', 0)} "
                'tokens), `draft="lookup"` vs the plain loop'
            ),
            fmt(look, "", 1) if look["n"] else "—",
            fmt(plain, "", 1),
            f"{r_tps:.2f}×" if r_tps == r_tps else "—",
            "> 1.0×, identical text",
            verdict,
        ),
        ("… drafted tokens the model kept", fmt(accepted, "", 2) if accepted["n"] else "—", "—", "—", "—", "—"),
    ]
    table = md_table(["measure", "prompt lookup median [min–max]", "plain greedy", "ratio", "target", "result"], rows)
    table += (
        f"\n\n{reps} interleaved repetitions, one process, the model loaded once; raw prompt of "
        f"{fmt(summary(r['n_prompt_tokens'] for r in results['plain']), '', 0)} tokens, stop string: the closing code fence. "
        f"Identical text on both sides in every repetition: {same}."
        + (" Failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()) + "." if errors else "")
    )
    headline = [
        (
            "12 lookup",
            "prompt lookup on an edit task vs the plain greedy loop (stretch)",
            fmt(look, "", 1) if look["n"] else "not measured",
            fmt(plain, "", 1),
            f"{r_tps:.2f}×" if r_tps == r_tps else "—",
            f"{verdict} (> 1.0×, identical text)",
        )
    ]
    data = {"reps": reps, "results": results, "errors": errors, "ratio": r_tps, "same_text": same, "headline": headline}
    return data, table


if __name__ == "__main__":
    data, table = run(sys.argv[1], reps=int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    print(machine_line(sys.argv[1]) + "\n\n" + table)
