"""Issue 16's rows: ghost-text completions through a real kernel. ``make bench BENCH_ONLY=inline``.

One kernel (ipykernel over jupyter_client) with ``%load_ext llm_magic`` and the benchmark's model;
the ``llm_magic.inline`` comm is opened on a kernel subshell, as the JupyterLab extension does
(``create_subshell_request`` on the control channel, then every comm message carries the
``subshell_id``), so completions are served while a cell runs on the main shell.

- Keystroke → first ghost text: a notebook prefix of about 1,000 model tokens (several cells of
  ordinary Python joined by blank lines, as the extension sends them) is warmed by one request,
  then a line is typed one character at a time, a request per keystroke (the extension's requests
  come after JupyterLab's 200 ms debounce, so one every ``PERIOD_S``), each superseding the
  previous one. The time is the client's: from sending the ``comm_msg`` to the first reply of
  that id with text. A request whose first reply is its ``done`` (no text: e.g. the model wanted
  a new line first) is counted apart. The prompt tokens each request evaluated come from the
  kernel's ``llm_magic.inline`` DEBUG lines (a handler the benchmark adds in the kernel).
- ``%%ask`` tokens/s with completions: the same greedy ``%%ask`` on the main shell, alone and
  while the client sends a completion request every 200 ms on the subshell, interleaved
  (alone, with; with, alone; …). Tokens/s is the ``Answer``'s own (first to last token).
"""

from __future__ import annotations

import math
import queue
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import Kernel, fmt, interleaved, md_table, ok, ratio, summary

HERE = Path(__file__).resolve().parent
TARGET = "llm_magic.inline"
PREFIX_TOKENS = 1000  # about this many model tokens of notebook before the line being typed
KEYSTROKES = 20
PERIOD_S = 0.3  # one request per keystroke; JupyterLab waits 200 ms after the last one first
DEBOUNCE_MS = 200  # the extension's debouncerDelay (labextension/src/provider.ts): not in the figures
MAX_TOKENS = 64  # the extension's default maxTokens
ASK_EVERY_S, ASK_TOKENS = 0.2, 256
ASK_PROMPT = "Once upon a time, a small robot who had never seen a painting"
ASK = f"%%ask -n {ASK_TOKENS} --raw --stop 'THE END' --temperature 0 --seed 1234 -t 120 -o _bench_a\n{ASK_PROMPT}"

# the notebook before the cell being edited: its cells (oldest first), split at the markers
CELLS = (HERE / "inline_notebook.txt").read_text().rstrip("\n").split("\n# %% next cell\n")
SEPARATOR = "\n\n"
CURRENT = "top = monthly.sort_values('revenue', ascending=False)\n"  # the cell being edited, above the line
TYPED = "best_customers = orders.groupby('customer_id')['revenue'].sum().nlargest(10)"
START = len("best_customers = ord")  # the line as it is when the typing starts

KERNEL_HELPERS = r"""
import json, logging
import llm_magic
from llm_magic.runtime import get as _runtime

class _BenchOutcomes(logging.Handler):
    # every completion's DEBUG line (llm_magic.inline): id, reason, shape, prompt, evaluated, tokens, s
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.rows = []
    def emit(self, record):
        args = record.args
        if isinstance(args, tuple) and len(args) == 7 and str(record.msg).startswith("llm_magic: inline %s:"):
            keys = ("id", "reason", "shape", "n_prompt_tokens", "n_prompt_evaluated", "n_tokens", "seconds")
            self.rows.append({**dict(zip(keys, args)), "at": record.created})

_bench_outcomes = _BenchOutcomes()
_inline_log = logging.getLogger("llm_magic.inline")
_inline_log.addHandler(_bench_outcomes)
_inline_log.setLevel(logging.DEBUG)
_inline_log.propagate = False  # not to llm_magic's stderr handler

def _bench_tokens(texts):
    llm = [e for e in _runtime().cache.entries() if e.state == "ready"][0].model.llm
    return [len(llm.tokenize(t.encode(), add_bos=False, special=False)) for t in texts]

def _bench_answer(a):
    keys = ("tokens_per_s", "n_tokens", "ttft_s", "queue_s", "n_prompt_evaluated", "finish_reason")
    return {**{k: getattr(a, k, None) for k in keys}, "text": str(a)}
"""


def choose_mode(head: str) -> str:
    """The extension's mode for a request typed at the end of ``head`` (labextension/src/context.ts)."""
    line = head[head.rfind("\n") + 1 :]
    if not line.strip() or re.search(r"[:(\[{,\\]\s*$", line):
        return "block"
    return "line"


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)] if ordered else float("nan")


class Comm:
    """The extension's side of the comm on a kernel subshell, over jupyter_client's raw channels;
    each reply is kept with the client's receive time."""

    def __init__(self, kernel: Kernel):
        self.kc = kernel.kc
        self.kc.control_channel.send(self.kc.session.msg("create_subshell_request", {}))
        reply = self.kc.control_channel.get_msg(timeout=30)
        if reply["content"].get("status") != "ok":
            raise RuntimeError(f"no subshell (ipykernel >= 7 needed): {reply['content']}")
        self.subshell_id = reply["content"]["subshell_id"]
        self.comm_id = uuid.uuid4().hex
        self.replies: list[tuple[float, dict]] = []
        self.sent: dict[int, float] = {}
        self._next = 0
        self._send("comm_open", {"comm_id": self.comm_id, "target_name": TARGET, "data": {}})

    def _send(self, msg_type: str, content: dict) -> None:
        msg = self.kc.session.msg(msg_type, content)
        msg["header"]["subshell_id"] = self.subshell_id
        self.kc.shell_channel.send(msg)

    def complete(self, prefix: str, mode: str) -> int:
        self._next += 1
        rid = self._next
        data = {"action": "complete", "id": rid, "prefix": prefix, "suffix": "", "max_tokens": MAX_TOKENS, "mode": mode}
        self.sent[rid] = time.perf_counter()
        self._send("comm_msg", {"comm_id": self.comm_id, "data": data})
        return rid

    def cancel(self, rid: int) -> None:
        self._send("comm_msg", {"comm_id": self.comm_id, "data": {"action": "cancel", "id": rid}})

    def take(self, msg: dict, now: float) -> None:
        if msg["msg_type"] == "comm_msg" and msg["content"].get("comm_id") == self.comm_id:
            self.replies.append((now, msg["content"]["data"]))

    def pump(self, timeout: float) -> list[dict]:
        """Read iopub for up to ``timeout`` s (at least one wait); returns the other messages."""
        end = time.perf_counter() + timeout
        others = []
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.0005, end - time.perf_counter()))
            except queue.Empty:
                return others
            self.take(msg, time.perf_counter())
            if msg["msg_type"] != "comm_msg":
                others.append(msg)
            if time.perf_counter() >= end:
                return others

    def of(self, rid: int) -> list[tuple[float, dict]]:
        return [(t, r) for t, r in self.replies if r.get("id") == rid]

    def wait(self, rid: int, done: bool, timeout: float = 60) -> None:
        """Until ``rid`` has a reply (``done``: its final one)."""
        end = time.perf_counter() + timeout
        while not any(r["done"] or not done for _, r in self.of(rid)):
            if time.perf_counter() > end:
                raise TimeoutError(f"no {'done' if done else 'reply'} for completion {rid} in {timeout} s")
            self.pump(0.002)

    def first_text(self, rid: int) -> tuple[float | None, str]:
        """(ms from sending to the first reply with text, or None if the first was the done; that text)."""
        for t, r in self.of(rid):
            if r["text"]:
                return (t - self.sent[rid]) * 1000, r["text"]
            if r["done"]:
                return None, ""
        return None, ""


def start(model: str) -> tuple[Kernel, Comm]:
    k = Kernel()
    k.execute(f"%config AskMagics.model = {model!r}\n%load_ext llm_magic")
    k.execute(KERNEL_HELPERS + "\nllm_magic.preload()[0].future.result(timeout=300)", timeout=320)
    k.execute("%%ask -n 8 --temperature 0\nwarm up")
    return k, Comm(k)


def notebook_prefix(k: Kernel) -> tuple[str, int]:
    """The cells (the newest ones) whose prefix up to the typing point is closest to PREFIX_TOKENS."""
    head = CURRENT + TYPED[:START]
    options = [SEPARATOR.join(CELLS[i:]) + SEPARATOR + head for i in range(len(CELLS))]
    counts = k.value(f"print(json.dumps(_bench_tokens({options!r})))")
    best = min(range(len(options)), key=lambda i: abs(counts[i] - PREFIX_TOKENS))
    return options[best][: -len(head)], counts[best]


def typing(k: Kernel, comm: Comm, cells: str) -> dict[str, Any]:
    """Warm the prefix once, then KEYSTROKES requests, one character more each, PERIOD_S apart."""
    head = cells + CURRENT + TYPED[:START]
    warm = comm.complete(head, choose_mode(head))
    comm.wait(warm, done=True, timeout=120)
    warm_ms, _ = comm.first_text(warm)
    keys = []
    for i in range(1, KEYSTROKES + 1):
        head = cells + CURRENT + TYPED[: START + i]
        mode = choose_mode(head)
        rid = comm.complete(head, mode)
        comm.wait(rid, done=False, timeout=60)
        comm.pump(max(0.0, comm.sent[rid] + PERIOD_S - time.perf_counter()))  # the next keystroke
        keys.append({"id": rid, "typed": TYPED[: START + i], "mode": mode})
    comm.wait(keys[-1]["id"], done=True)
    rows = {r["id"]: r for r in k.value("print(json.dumps(_bench_outcomes.rows, default=str))")}
    for key in keys:
        ms, text = comm.first_text(key["id"])
        key.update(first_text_ms=ms, first_text=text, outcome=rows.get(key["id"]))
    return {"warm_id": warm, "warm_first_text_ms": warm_ms, "warm_outcome": rows.get(warm), "keys": keys}


def ask_alone(k: Kernel) -> dict[str, Any]:
    k.execute(ASK, timeout=180)
    return k.value("print(json.dumps(_bench_answer(_bench_a)))")


def ask_with_completions(k: Kernel, comm: Comm, cells: str) -> dict[str, Any]:
    """The ask on the main shell while the client types on the subshell, a request every ASK_EVERY_S."""
    kc = k.kc
    comm.pump(0.01)  # leftovers
    wall0 = time.time()  # the outcome rows carry wall-clock times ("at")
    msg_id = kc.execute(ASK, store_history=False)
    ids: list[int] = []
    next_at = t0 = time.perf_counter()
    deadline = next_at + 180
    while True:
        now = time.perf_counter()
        if now >= next_at:
            head = cells + CURRENT + TYPED[: START + len(ids) % (len(TYPED) - START + 1)]
            ids.append(comm.complete(head, choose_mode(head)))
            next_at += ASK_EVERY_S
        if now > deadline:
            raise TimeoutError("the ask did not finish in 180 s")
        others = comm.pump(min(0.01, max(0.0, next_at - time.perf_counter())))
        if any(
            m["parent_header"].get("msg_id") == msg_id
            and m["msg_type"] == "status"
            and m["content"]["execution_state"] == "idle"
            for m in others
        ):
            break
    t_idle = time.perf_counter()
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"the ask failed: {reply['content'].get('evalue')}")
    comm.cancel(ids[-1])
    no_done = []  # every request ends with one done: those still without one after 30 s
    end = time.perf_counter() + 30
    for rid in ids:
        try:
            comm.wait(rid, done=True, timeout=max(0.1, end - time.perf_counter()))
        except TimeoutError:
            no_done.append(rid)
    answer = k.value("print(json.dumps(_bench_answer(_bench_a)))")
    rows = {r["id"]: r for r in k.value("print(json.dumps(_bench_outcomes.rows[-300:], default=str))")}
    reasons: dict[str, int] = {}
    for rid in ids:
        reason = (rows.get(rid) or {}).get("reason", "?")
        reasons[reason] = reasons.get(reason, 0) + 1
    with_text = sum(1 for rid in ids if comm.first_text(rid)[0] is not None)
    return {
        **answer,
        "requests": len(ids),
        "reasons": reasons,
        "requests_with_text": with_text,
        "no_done": no_done,
        # sent well before the ask ended, answered only after it: served behind the cell, not on the subshell
        "after_ask": sum(
            1 for rid in ids if comm.sent[rid] < t_idle - 0.5 and all(t > t_idle for t, r in comm.of(rid) if r["done"])
        ),
        "wall0": wall0,
        "sent_s": [comm.sent[rid] - t0 for rid in ids],  # from sending the ask
        "outcomes": [rows.get(rid) for rid in ids],
    }


def run(model: str, reps: int = 7) -> tuple[dict[str, Any], str]:
    k, comm = start(model)
    try:
        cells, n_prefix = notebook_prefix(k)
        print(f"inline: notebook prefix of {n_prefix} tokens; typing", file=sys.stderr, flush=True)
        typed = typing(k, comm, cells)
        ask_alone(k)  # the ask's prompt and the model warm for both sides
        sides: dict[str, list] = {"alone": [], "with": []}
        for i, side in interleaved(max(1, reps), "alone", "with"):
            print(f"inline: ask {side}, repetition {i + 1}", file=sys.stderr, flush=True)
            sides[side].append(ask_alone(k) if side == "alone" else ask_with_completions(k, comm, cells))
    finally:
        k.close()

    keys = typed["keys"]
    lat = [x["first_text_ms"] for x in keys if x["first_text_ms"] is not None]
    no_text = len(keys) - len(lat)
    blank = sum(1 for x in keys if x["first_text"] and not x["first_text"].strip())
    evaluated = [x["outcome"]["n_prompt_evaluated"] for x in keys if x.get("outcome")]
    reasons: dict[str, int] = {}
    for x in keys:
        r = (x.get("outcome") or {}).get("reason", "?")
        reasons[r] = reasons.get(r, 0) + 1
    lat_s, ev_s = summary(lat), summary(evaluated)
    lat_p90 = p90(lat)
    warm = typed["warm_outcome"] or {}
    alone = summary(r["tokens_per_s"] for r in sides["alone"])
    withc = summary(r["tokens_per_s"] for r in sides["with"])
    r_tps = ratio(withc, alone)
    ttft_a = summary(r["ttft_s"] * 1000 for r in sides["alone"] if r["ttft_s"] is not None)
    ttft_w = summary(r["ttft_s"] * 1000 for r in sides["with"] if r["ttft_s"] is not None)
    queue_w = summary((r["queue_s"] or 0) * 1000 for r in sides["with"])
    queue_a = summary((r["queue_s"] or 0) * 1000 for r in sides["alone"])
    n_req = summary(r["requests"] for r in sides["with"])
    with_reasons: dict[str, int] = {}
    for r in sides["with"]:
        for reason, n in r["reasons"].items():
            with_reasons[reason] = with_reasons.get(reason, 0) + n
    same_text = len({r["text"] for r in sides["alone"] + sides["with"]}) == 1
    n_tok = summary(r["n_tokens"] for r in sides["alone"] + sides["with"])
    n_after = sum(r["after_ask"] for r in sides["with"])
    reps_after = sum(1 for r in sides["with"] if r["after_ask"])
    met_lat = lat_s["n"] > 0 and lat_s["median"] <= 300
    warm_ms = typed["warm_first_text_ms"]
    rows = [
        (
            "16 keystroke",
            (
                f"keystroke → first ghost text (comm_msg sent → first reply with text), {n_prefix}-token notebook "
                f"prefix cached, comm on a subshell, after the {DEBOUNCE_MS} ms debounce"
            ),
            f"{fmt(lat_s, ' ms', 1)}; p90 {lat_p90:.1f} ms; {len(lat)} of {len(keys)} keystrokes gave text",
            f"the first request, prefix not cached: {warm_ms:.0f} ms" if warm_ms is not None else "—",
            "—",
            ok(met_lat) + " (≤ 300 ms median)",
        ),
        (
            "16 ask + ghost text",
            (
                f"`%%ask` tokens/s while completions are requested every {ASK_EVERY_S * 1000:.0f} ms (subshell) "
                "vs the same ask alone"
            ),
            fmt(withc, "", 1),
            fmt(alone, "", 1),
            f"{r_tps:.3f}",
            ok(r_tps >= 0.95) + " (≥ 0.95×)",
        ),
    ]
    detail = [
        ("keystroke → first text, median [min–max]", fmt(lat_s, " ms", 1)),
        ("… p90", f"{lat_p90:.1f} ms"),
        (
            "keystrokes whose first reply was the done (no text) / first text blank",
            f"{no_text} of {len(keys)} / {blank}",
        ),
        ("prompt tokens evaluated per keystroke (of the cached prefix + the line)", fmt(ev_s, "", 0)),
        ("how the keystrokes' completions ended", ", ".join(f"{k}: {n}" for k, n in sorted(reasons.items()))),
        (
            "the warming request: first text; prompt tokens evaluated; its time in the kernel",
            (
                f"{warm_ms if warm_ms is None else round(warm_ms)} ms; {warm.get('n_prompt_evaluated', '?')} of "
                f"{warm.get('n_prompt_tokens', '?')}; {float(warm.get('seconds') or 'nan'):.2f} s"
            ),
        ),
        ("`%%ask` tokens/s, with completions / alone", f"{fmt(withc, '', 1)} / {fmt(alone, '', 1)}"),
        ("`%%ask` time to first token, with completions / alone", f"{fmt(ttft_w, ' ms', 1)} / {fmt(ttft_a, ' ms', 1)}"),
        (
            "… of which waiting for the model (a completion had it), with completions / alone",
            f"{fmt(queue_w, ' ms', 1)} / {fmt(queue_a, ' ms', 1)}",
        ),
        (
            "completion requests per ask; how they ended",
            f"{fmt(n_req, '', 0)}; " + ", ".join(f"{k}: {n}" for k, n in sorted(with_reasons.items())),
        ),
        ("tokens per answer; same text every time", f"{fmt(n_tok, '', 0)}; {same_text}"),
        ("completion requests left without a done", str(sum(len(r["no_done"]) for r in sides["with"]))),
        (
            "… answered only after the ask ended (waited behind the cell): requests; repetitions",
            f"{n_after}; {reps_after} of {len(sides['with'])}",
        ),
    ]
    table = md_table(["issue row", "measure", "llm_magic median [min–max]", "baseline", "ratio", "target"], rows)
    table += "\n\n" + md_table(["detail", "value"], detail)
    table += (
        f"\n\nOne kernel (jupyter_client), `%load_ext llm_magic`, the `{TARGET}` comm opened on a kernel subshell. "
        f"Typing: {len(keys)} keystrokes {PERIOD_S * 1000:.0f} ms apart, each a request (max_tokens {MAX_TOKENS}, "
        f"the extension's mode) that supersedes the previous one, typing `{TYPED}` from `{TYPED[:START]}`; "
        f"times are the client's, the debounce not included. Asks: `%%ask -n {ASK_TOKENS} --raw --temperature 0`, "
        f"{len(sides['alone'])} alone and {len(sides['with'])} with completions, interleaved; tokens/s is the "
        "Answer's (first to last token). The first completion request goes out with the ask: where it gets the "
        "model first it restores the notebook prefix's saved KV state and reads the rest in 32-token batches, "
        "so the ask waits a few ms for the model. An ask after a completion reads its prompt on another KV "
        "history than an ask after itself, and llama.cpp's sums differ with the batch shapes: at a near-tie "
        "the 256-token greedy story can take another turn."
    )
    data = {
        "prefix_tokens": n_prefix,
        "typing": typed,
        "latency_ms": lat,
        "latency_p90_ms": lat_p90,
        "no_text": no_text,
        "asks": sides,
        "ratio_tps": r_tps,
        "headline": rows,
    }
    return data, table
