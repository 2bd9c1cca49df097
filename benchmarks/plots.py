"""PNG plots of the benchmark results (matplotlib, no display needed)."""

from __future__ import annotations

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


def tokens_per_s(stream: dict[str, Any], out: Path) -> Path:
    plt = _plt()
    s = stream["streaming"]
    groups = {
        "%%ask\n(kernel)": [r["tokens_per_s"] for r in s["ours"] if r.get("tokens_per_s")],
        "direct create_completion\n(same kernel)": [r["tokens_per_s"] for r in s["direct"] if r.get("tokens_per_s")],
        f"llama-bench\ntg{s['max_tokens']}": [r["avg_ts"] for r in s["llama_bench_tg"]],
    }
    fig, ax = plt.subplots(figsize=(7, 4))
    _strip(ax, groups, "tokens/s (higher is better)")
    ax.set_title(f"Generation speed, {s['reps']} interleaved repetitions")
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
    import statistics

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
