"""PNG plots of the benchmark results (matplotlib, no display needed)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _strip(ax, groups: dict[str, list[float]], ylabel: str, log: bool = False) -> None:
    names = [k for k, v in groups.items() if v]
    data = [groups[k] for k in names]
    if not data:
        ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
        return
    ax.boxplot(data, widths=0.5, showfliers=False)
    for i, values in enumerate(data, start=1):
        ax.scatter([i + (j - len(values) / 2) * 0.02 for j in range(len(values))], values, s=12, alpha=0.7, zorder=3)
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def tokens_per_s(stream: dict[str, Any] | None, engine: dict[str, Any] | None, out: Path) -> Path:
    """Tokens/s of 128-token answers: %%ask and the engine in a kernel, llm_magic.stream greedy and
    sampled, llama-bench tg with flash attention off and on."""
    plt = _plt()
    groups: dict[str, list[float]] = {}
    if stream is not None:
        s = stream["streaming"]
        groups["%%ask\n(kernel)"] = [r["tokens_per_s"] for r in s["ours"] if r.get("tokens_per_s")]
        groups["engine direct\n(same kernel)"] = [r["tokens_per_s"] for r in s["direct"] if r.get("tokens_per_s")]
    if engine is not None:
        r = engine["results"]
        groups["llm_magic.stream\ngreedy"] = [x["tokens_per_s"] for x in r.get("greedy", []) if x.get("tokens_per_s")]
        groups["llm_magic.stream\nsampling"] = [
            x["tokens_per_s"] for x in r.get("sampling", []) if x.get("tokens_per_s")
        ]
        n = engine["max_tokens"]
        for fa in ("off", "on"):
            groups[f"llama-bench tg{n}\nfa {fa}"] = [
                row["avg_ts"]
                for run in r.get("llama_bench", [])
                for row in run
                if row["fa"] == fa and row["n_prompt"] == 0 and row["n_gen"] == n
            ]
    fig, ax = plt.subplots(figsize=(9, 4))
    _strip(ax, groups, "tokens/s (higher is better)")
    ax.set_title("Generation speed, 128-token answers, interleaved repetitions")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def positions(data: dict[str, Any], out: Path) -> Path:
    """Tokens/s against the position in the answer: llm_magic (median, min–max band), plain
    create_completion, llama-bench tg at that depth, and 95% of llama-bench."""
    plt = _plt()
    w = data["window"]
    res = data["results"]
    fig, ax = plt.subplots(figsize=(8, 4.5))

    def series(runs: list[dict[str, Any]]) -> tuple[list[float], list[float], list[float], list[float]]:
        xs, med, lo, hi = [], [], [], []
        for i in range(data["n_tokens"] // w):
            vals = [r["windows"][i] for r in runs if i < len(r["windows"]) and r["windows"][i]]
            if vals:
                xs.append(i * w + w / 2)
                med.append(statistics.median(vals))
                lo.append(min(vals))
                hi.append(max(vals))
        return xs, med, lo, hi

    xs, med, lo, hi = series(res.get("ours", []))
    if xs:
        ax.plot(xs, med, "o-", label=f"llm_magic.stream ({len(res['ours'])} run(s), median)", zorder=3)
        if len(res["ours"]) > 1:
            ax.fill_between(xs, lo, hi, alpha=0.2)
    xs, med, _, _ = series(res.get("plain", []))
    if xs:
        ax.plot(xs, med, "s-", label="plain create_completion(stream=True)", alpha=0.8)
    dec = [(c["depth"] + w / 2, c["decode"]["median"]) for c in data["curve"] if c.get("decode", {}).get("n")]
    if dec:
        ax.plot([x for x, _ in dec], [y for _, y in dec], "^-.", color="gray", label="llama_decode alone (no sampling)")
    lb = [(c["depth"] + w / 2, c["llama_bench"]["median"]) for c in data["curve"] if c["llama_bench"].get("n")]
    if lb:
        ax.plot([x for x, _ in lb], [y for _, y in lb], "D--", color="black", label=f"llama-bench tg{w} at depth")
        ax.plot([x for x, _ in lb], [0.95 * y for _, y in lb], ":", color="red", label="95% of llama-bench")
    ax.set_xlabel(f"position in the answer (tokens; {w}-token windows)")
    ax.set_ylabel("tokens/s")
    ax.set_xlim(0, data["n_tokens"])
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fa = f"flash_attn {data.get('flash_attn', '?')} → {data.get('flash_attn_runs', '?')}"
    ax.set_title(f"Speed over a long greedy answer ({fa})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def ttft(cold: dict[str, Any], out: Path) -> Path:
    plt = _plt()
    r = cold["results"]
    groups = {
        "%%ask 1st\n(no preload)": [x["first"]["ttft_s"] for x in r["cold"]],
        "new Llama\n1st call": [x["first"]["ttft_s"] for x in r["per_call"]],
        "%%ask 1st\n(preloaded)": [x["first"]["ttft_s"] for x in r["preload"]],
        "%%ask 2nd": [x["second"]["ttft_s"] for x in r["cold"]],
        "new Llama\n2nd call": [x["second"]["ttft_s"] for x in r["per_call"]],
    }
    fig, ax = plt.subplots(figsize=(8, 4))
    _strip(ax, groups, "time to first token, s (log)", log=True)
    ax.set_title("Time to first token in fresh kernels, construction included")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def memory(mem: dict[str, Any], out: Path) -> Path:
    plt = _plt()
    r = mem["results"]

    def med(rows, key, field):
        vals = [x[key][field] - x["before"][field] for x in rows if field in x[key]]
        return statistics.median(vals) if vals else 0.0

    labels = ["after load\n(RSS)", "after unload\n(RSS)", "PSS after load"]
    ours = [med(r["ours"], "loaded", "VmRSS"), med(r["ours"], "unloaded", "VmRSS"), med(r["cold"], "loaded", "Pss")]
    plain = [med(r["plain"], "loaded", "VmRSS"), med(r["plain"], "unloaded", "VmRSS"), 0]
    second = [0, 0, med(r["second"], "loaded", "Pss")]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(labels))
    ax.bar([i - 0.25 for i in x], ours, 0.25, label="llm_magic (alone)")
    ax.bar(list(x), plain, 0.25, label="plain Llama")
    ax.bar([i + 0.25 for i in x], second, 0.25, label="llm_magic, 2nd process sharing the file")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("MB over the process before loading")
    ax.set_title(f"Memory, model file {mem['model_mb']:.0f} MB (medians)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def updates(stream: dict[str, Any], panel: dict[str, Any] | None, out: Path) -> Path:
    plt = _plt()
    groups = {
        "%%ask, model\n(128 tokens)": [
            r["client"]["updates_per_s"] for r in stream["streaming"]["ours"] if r["client"]["updates_per_s"]
        ],
        "%%ask, tiny model\nfull speed": [
            r["client"]["updates_per_s"] for r in stream["updates_ask"]["runs"] if r["client"]["updates_per_s"]
        ],
    }
    if panel:
        groups["panel, tiny model\nfull speed"] = [r["updates_per_s"] for r in panel["updates"]["panel"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    _strip(ax, groups, "front-end updates per second")
    ax.axhline(30, color="red", linestyle="--", linewidth=1, label="limit 30/s")
    ax.legend(fontsize=8)
    ax.set_title("Updates sent to the front end")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
