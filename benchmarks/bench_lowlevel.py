"""Stretch of issue 7: a generation loop on llama-cpp-python's low-level API, against llama-bench tg.

A prototype only (llm_magic's engine is not changed): after the prompt is evaluated, each step is
``llama_sampler_sample`` on a native sampler chain (greedy here; top-k/top-p/min-p/temp/dist for
sampling), ``llama_token_to_piece`` with an incremental UTF-8 decoder, a stop-string check on the new
text and a ``yield`` — then ``llama_decode`` of that one token. No per-token ``numpy`` logits copy,
no Python sampling, no dict per chunk. It is interleaved (A B C, C B A) with
``create_completion(stream=True)`` on the same ``Llama`` and with ``llama-bench -p 0 -n N``.

    python benchmarks/bench_lowlevel.py MODEL [REPS]
"""

from __future__ import annotations

import codecs
import ctypes
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt, interleaved, machine_line, md_table, ok, ratio, same_params_as_llm_magic, summary, threads_for

PROMPT = "Once upon a time, a small robot who had never seen a painting"
STOP = "THE END"


def fast_stream(llm, tokens: list[int], max_tokens: int, stop: list[str]) -> Iterator[str]:
    """Greedy generation on the low-level API: yields text pieces (stop strings cut, UTF-8 safe)."""
    import llama_cpp as lc

    from llm_magic.engines import llama_private as private

    ctx, vocab = private.native_context(llm), private.vocab(llm)
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    private.set_n_tokens(llm, 0)  # the high-level object's view of the KV cache: empty now
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
    try:
        arr = (lc.llama_token * len(tokens))(*tokens)
        if lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(tokens))) != 0:
            raise RuntimeError("llama_decode failed on the prompt")
        one = (lc.llama_token * 1)()
        buf = ctypes.create_string_buffer(256)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        text, emitted = "", 0
        hold = max((len(s) for s in stop), default=1) - 1
        for _ in range(max_tokens):
            tok = lc.llama_sampler_sample(chain, ctx, -1)
            if lc.llama_vocab_is_eog(vocab, tok):
                break
            n = lc.llama_token_to_piece(vocab, tok, buf, 256, 0, False)
            piece = decoder.decode(buf.raw[:n])
            if piece:
                text += piece
                cut = min((i for s in stop if (i := text.find(s, max(0, emitted - len(s)))) != -1), default=-1)
                if cut != -1:
                    if cut > emitted:
                        yield text[emitted:cut]
                    return
                safe = len(text) - hold if stop else len(text)
                if safe > emitted:
                    yield text[emitted:safe]
                    emitted = safe
            one[0] = tok
            if lc.llama_decode(ctx, lc.llama_batch_get_one(one, 1)) != 0:
                raise RuntimeError("llama_decode failed")
        if emitted < len(text):
            yield text[emitted:]
    finally:
        lc.llama_sampler_free(chain)
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        llm.n_tokens = 0


def _timed(pieces: Iterator[str], n_tokens_fn) -> dict[str, Any]:
    first = last = None
    text = ""
    for p in pieces:
        last = time.perf_counter()
        first = first or last
        text += p
    n = n_tokens_fn(text)
    return {"tokens_per_s": (n - 1) / (last - first) if first and last > first else None, "n_tokens": n, "text": text}


def run(model: str, reps: int = 7, max_tokens: int = 128) -> tuple[dict[str, Any], str]:
    import llama_cpp as lc
    from bench_stream import llama_bench
    from llama_bench_build import build

    threads = threads_for(model)
    same_params_as_llm_magic()
    llm = lc.Llama(model_path=model, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)
    count = lambda text: len(llm.tokenize(text.encode(), add_bos=False, special=False))  # noqa: E731
    binary, why = build(log=lambda s: print(s, file=sys.stderr))

    def fast():
        return _timed(fast_stream(llm, tokens, max_tokens, [STOP]), count)

    def binding():
        llm.reset()
        out = _timed(
            (
                c["choices"][0]["text"]
                for c in llm.create_completion(
                    tokens, max_tokens=max_tokens, stream=True, temperature=0, top_k=1, stop=[STOP]
                )
            ),
            count,
        )
        return out

    def bench():
        return {"tokens_per_s": llama_bench(binary, model, threads, 0, max_tokens)["avg_ts"]}

    fast()  # warm-up
    sides = {"fast": fast, "binding": binding, **({"llama_bench": bench} if binary else {})}
    results: dict[str, list] = {k: [] for k in sides}
    for _i, side in interleaved(reps, *sides):
        results[side].append(sides[side]())
    llm.close()
    S = {k: summary(r["tokens_per_s"] for r in v if r.get("tokens_per_s")) for k, v in results.items()}
    same = results["fast"][0]["text"] == results["binding"][0]["text"]
    rows = [
        (
            "low-level loop (native greedy sampler, incremental detokenize, stop check)",
            fmt(S["fast"], "", 1),
            f"`create_completion(stream=True)`: {fmt(S['binding'], '', 1)}",
            f"{ratio(S['fast'], S['binding']):.3f}",
            "—",
            "—",
        )
    ]
    if binary:
        r_tg = ratio(S["fast"], S["llama_bench"])
        rows.append(
            (
                "low-level loop vs `llama-bench` tg",
                fmt(S["fast"], "", 1),
                fmt(S["llama_bench"], "", 1),
                f"{r_tg:.3f}",
                "≥ 0.95",
                ok(r_tg >= 0.95),
            )
        )
        rows.append(
            (
                "`create_completion(stream=True)` vs `llama-bench` tg",
                fmt(S["binding"], "", 1),
                fmt(S["llama_bench"], "", 1),
                f"{ratio(S['binding'], S['llama_bench']):.3f}",
                "—",
                "—",
            )
        )
    else:
        rows.append(("low-level loop vs `llama-bench` tg", "not measured", "—", "—", "≥ 0.95", f"skipped: {why}"))
    table = md_table(
        ["prototype (not in llm_magic)", "tokens/s median [min–max]", "baseline", "ratio", "target", "result"], rows
    )
    table += (
        f"\n\n{reps} interleaved repetitions, {max_tokens} greedy tokens from a fresh context, {threads} "
        f"threads, one process; same text from both loops: {same} "
        f"(generated {results['fast'][0]['n_tokens']} / {results['binding'][0]['n_tokens']} tokens)."
    )
    return {"reps": reps, "max_tokens": max_tokens, "results": results, "same_text": same}, table


if __name__ == "__main__":
    data, table = run(sys.argv[1], reps=int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    print(machine_line(sys.argv[1]) + "\n\n" + table)
