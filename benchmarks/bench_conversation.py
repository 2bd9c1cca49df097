"""Conversation follow-up: turn 2 with prefix reuse (our exact-token prompt building keeps the
KV cache) against the same turn 2 after the KV cache was cleared (what a tool that rebuilds the
prompt text, or a new ``Llama``, pays). Interleaved A B, B A; medians with min–max."""

from __future__ import annotations

from typing import Any

from common import fmt, summary

TURN1 = (
    "We are planning a week in Paris in May with two children who love science and art. "
    "Suggest a plan for the first day."
)
TURN2 = "What should we pack?"


def run(model: str, reps: int = 7, max_tokens: int = 48) -> tuple[dict[str, Any], str]:
    import llm_magic
    from llm_magic.runtime import get as _runtime

    llm_magic.ask("warm up", model=model, max_tokens=4)
    local = next(iter(_runtime().cache.entries())).model

    def turn2(reuse: bool) -> dict[str, float]:
        _runtime().conversations.reset("bench")
        llm_magic.ask(TURN1, model=model, max_tokens=max_tokens, temperature=0, seed=1, conversation="bench")
        if not reuse:
            local.llm.reset()  # forget the KV cache: the whole history is evaluated again (nothing else runs)
        a = llm_magic.ask(TURN2, model=model, max_tokens=8, temperature=0, seed=1, conversation="bench")
        return {"evaluated": a.n_prompt_evaluated, "prompt_tokens": a.n_prompt_tokens, "ttft_ms": a.ttft_s * 1000}

    results: dict[str, list] = {"reuse": [], "no_reuse": []}
    for i in range(reps):
        for reuse in (True, False) if i % 2 == 0 else (False, True):
            results["reuse" if reuse else "no_reuse"].append(turn2(reuse))
    _runtime().conversations.reset("bench")
    s = {
        k: {m: summary(r[m] for r in v) for m in ("evaluated", "prompt_tokens", "ttft_ms")} for k, v in results.items()
    }
    ratio = s["reuse"]["ttft_ms"]["median"] / s["no_reuse"]["ttft_ms"]["median"]
    table = (
        "| conversation turn 2 | prompt tokens | tokens evaluated | time to first token |\n|---|---|---|---|\n"
        f"| with prefix reuse (llm_magic) | {fmt(s['reuse']['prompt_tokens'], '', 0)} | "
        f"{fmt(s['reuse']['evaluated'], '', 0)} | {fmt(s['reuse']['ttft_ms'], ' ms', 1)} |\n"
        f"| without (KV cache cleared) | {fmt(s['no_reuse']['prompt_tokens'], '', 0)} | "
        f"{fmt(s['no_reuse']['evaluated'], '', 0)} | {fmt(s['no_reuse']['ttft_ms'], ' ms', 1)} |\n"
        f"\nTime to first token with reuse: {ratio:.2f}× of without; {reps} interleaved repetitions."
    )
    return {"reps": reps, "results": results, "ttft_ratio": ratio}, table
