"""Helpers shared by the benchmarks: statistics, machine facts, result files and the README table."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# BENCH_RESULTS=DIR writes the results elsewhere and BENCH_NO_README=1 leaves the README alone
# (`run.py --out DIR --no-readme`: development runs that must not replace the committed numbers)
RESULTS = Path(os.environ.get("BENCH_RESULTS") or ROOT / "benchmarks" / "results")
README = ROOT / "README.md"


def summary(values: Iterable[float]) -> dict[str, float]:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(s: dict[str, float], unit: str = "", digits: int = 3) -> str:
    if not s.get("n"):
        return "n/a"
    return f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        lcp = version("llama-cpp-python")
    except ImportError:
        lcp = "?"
    from llm_magic.specs import physical_cores

    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "python": platform.python_version(),
        "llama_cpp_python": lcp,
        "platform": platform.platform(),
    }


def run_json(code: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``code`` in a fresh Python process; it prints one JSON object as its last line."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_results(name: str, data: dict[str, Any], table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")


def update_readme(name: str, table: str) -> None:
    """Replace the text between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``."""
    if os.environ.get("BENCH_NO_README"):
        return
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = README.read_text()
    if start not in text:
        print(f"README has no {start} marker; table not inserted", file=sys.stderr)
        return
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    README.write_text(pattern.sub(lambda _: f"{start}\n{table}\n{end}", text))


# ---- shared by the new rows ----------------------------------------------------------------------


def ok(met: bool) -> str:
    return "✅ met" if met else "❌ missed"


def ratio(a: dict[str, float], b: dict[str, float]) -> float:
    """Ratio of two medians (nan when either side is missing)."""
    if not a.get("n") or not b.get("n") or not b["median"]:
        return float("nan")
    return a["median"] / b["median"]


def md_table(header: list[str], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def interleaved(reps: int, *sides):
    """Yield (rep, side) in A B C, C B A, A B C … order: no side always gets the first/warm slot."""
    for i in range(reps):
        for side in sides if i % 2 == 0 else tuple(reversed(sides)):
            yield i, side


def threads_for(model: str) -> int:
    """The threads llm_magic uses for this model by default (all physical cores)."""
    from llm_magic.specs import physical_cores

    return physical_cores()


def machine_line(model: str) -> str:
    m = machine()
    return (
        f"Machine: {m['cpu']}, {m['physical_cores']} physical / {m['logical_cores']} logical cores, "
        f"Python {m['python']}, llama-cpp-python {m['llama_cpp_python']}. Model: `{Path(model).name}`; "
        f"{threads_for(model)} threads."
    )


class Kernel:
    """A real IPython kernel (ipykernel via jupyter_client) driven as a front end would.

    ``execute`` returns the reply, every iopub message of the request with the client's receive time,
    and the client-side send/reply times; ``value`` runs code whose last stdout line is JSON."""

    def __init__(self, env: dict[str, str] | None = None, startup_timeout: float = 60):
        import tempfile

        from jupyter_client import KernelManager

        self._sockets = tempfile.TemporaryDirectory(prefix="llm_magic-bench-")
        # unix sockets at an absolute path (no TCP, no "running over TCP" warning)
        self.km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(self._sockets.name, "k"))
        # the kernel runs on this interpreter (the venv), whatever kernelspecs are installed
        self.km.kernel_cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        kenv = dict(os.environ)
        kenv.pop("LLM_MAGIC_MODEL", None)
        kenv.update(env or {})
        t0 = time.perf_counter()
        self.km.start_kernel(env=kenv, cwd=str(ROOT))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=startup_timeout)
        self.startup_s = time.perf_counter() - t0

    def execute(self, code: str, timeout: float = 300) -> dict[str, Any]:
        kc = self.kc
        while True:  # drop leftovers of earlier requests
            try:
                kc.get_iopub_msg(timeout=0.01)
            except Exception:  # noqa: BLE001 - queue.Empty, or any leftover error: the queue is drained
                break
        t_sent = time.perf_counter()
        msg_id = kc.execute(code, store_history=False)
        msgs: list[tuple[float, str, dict]] = []
        deadline = t_sent + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"kernel did not finish in {timeout} s: {code[:80]!r}")
            msg = kc.get_iopub_msg(timeout=left)
            now = time.perf_counter()
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            msgs.append((now, msg["msg_type"], msg["content"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = kc.get_shell_msg(timeout=max(1.0, deadline - time.perf_counter()))
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=max(1.0, deadline - time.perf_counter()))
        t_idle = msgs[-1][0]
        if reply["content"]["status"] != "ok":
            c = reply["content"]
            raise RuntimeError(
                f"kernel error {c.get('ename')}: {c.get('evalue')}\n" + "\n".join(c.get("traceback", []))[-2000:]
            )
        return {"reply": reply["content"], "msgs": msgs, "t_sent": t_sent, "t_idle": t_idle}

    def value(self, code: str, timeout: float = 300) -> Any:
        result = self.execute(code, timeout)
        out = "".join(c.get("text", "") for _, t, c in result["msgs"] if t == "stream" and c.get("name") == "stdout")
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if not lines:
            raise RuntimeError(f"no output from {code[:80]!r}")
        return json.loads(lines[-1])

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)
            self._sockets.cleanup()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rss_note() -> str:
    return "RSS from /proc/self/status (VmRSS = RssAnon + RssFile); PSS from /proc/self/smaps_rollup."


# Plain llama-cpp-python baselines load with the same llama.cpp parameters as llm_magic: on CPUs with
# Intel AMX, llama.cpp's extra (repacked / AMX) weight buffers segfault in llama_decode on Gemma 3 270M
# (llama-bench too, without --repack 0), so both sides go without them there.
PLAIN_PARAMS = """
import llama_cpp.llama_cpp as _low
from llm_magic.engines.llama_memory import use_extra_buffers as _extra_buffers
if not _extra_buffers() and not getattr(_low.llama_model_default_params, "_bench_plain", False):
    _default_params = _low.llama_model_default_params
    def _plain_params():
        _p = _default_params()
        _p.use_extra_bufts = False
        return _p
    _plain_params._bench_plain = True
    _low.llama_model_default_params = _plain_params
"""


def same_params_as_llm_magic() -> None:
    """Apply ``PLAIN_PARAMS`` in this process (before building a plain ``llama_cpp.Llama``)."""
    exec(PLAIN_PARAMS, {})


# ---- llama.cpp's llama-bench -----------------------------------------------------------------------


def llama_bench(
    binary: Path | str,
    model: str,
    threads: int,
    *,
    n_prompt: int = 0,
    n_gen: int = 128,
    depths: Iterable[int] = (0,),
    fa: Iterable[str] = ("off",),
    reps: int = 1,
    timeout: float = 1800,
) -> list[dict[str, Any]]:
    """One ``llama-bench`` run: a test per (flash attention, depth), ``-r reps`` each.

    Each row: ``n_prompt``, ``n_gen``, ``n_depth``, ``fa`` ("on"/"off"), ``avg_ts`` (tokens/s),
    ``samples_ts`` and the command line. ``--repack 0`` where llm_magic loads without llama.cpp's
    extra buffer types (AMX CPUs), so both sides run the same kernels."""
    from llm_magic.engines.llama_memory import use_extra_buffers

    cmd = [str(binary), "-m", model, "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads)]
    cmd += ["-d", ",".join(str(d) for d in depths), "-fa", ",".join(fa), "-r", str(reps), "-o", "json"]
    if not use_extra_buffers():
        cmd += ["--repack", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    rows = []
    for row in json.loads(proc.stdout):
        rows.append(
            {
                "n_prompt": row["n_prompt"],
                "n_gen": row["n_gen"],
                "n_depth": row.get("n_depth", 0),
                "fa": "on" if row.get("flash_attn") in (1, True, "on", "enabled") else "off",
                "avg_ts": row["avg_ts"],
                "samples_ts": row.get("samples_ts"),
                "n_threads": row.get("n_threads"),
                "build_commit": row.get("build_commit"),
                "cmd": "llama-bench " + " ".join(Path(c).name if c == model else c for c in cmd[1:]),
            }
        )
    return rows


def pick(rows: Iterable[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    """The llama-bench rows whose fields equal ``match`` (e.g. ``n_depth=0, fa="on"``)."""
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def lb_summary(runs: list[list[dict[str, Any]]], **match: Any) -> dict[str, float]:
    """Summary of llama-bench's tokens/s over several runs, for the rows matching ``match``."""
    return summary(r["avg_ts"] for run in runs for r in pick(run, **match))


def best_fa(runs: list[list[dict[str, Any]]], **match: Any) -> tuple[dict[str, float], str]:
    """Summary of the faster flash-attention setting (by median) over several llama-bench runs."""
    by_fa = {fa: lb_summary(runs, fa=fa, **match) for fa in ("off", "on")}
    by_fa = {k: v for k, v in by_fa.items() if v["n"]}
    if not by_fa:
        return summary([]), "?"
    fa = max(by_fa, key=lambda k: by_fa[k]["median"])
    return by_fa[fa], fa


def llama_bench_binary() -> tuple[Path | None, str]:
    """The cached llama-bench (built once, see llama_bench_build.py), or None and why not."""
    from llama_bench_build import build

    return build(log=lambda s: print(s, file=sys.stderr))


# ---- llm_magic's side ------------------------------------------------------------------------------


def local_model(name: str) -> Any:
    """The loaded engine (``LocalModel``) of ``name`` (a path or an alias), loading it if needed."""
    import llm_magic
    from llm_magic.runtime import get as _runtime
    from llm_magic.specs import resolve

    entry = _runtime().cache.entry(resolve(name))
    if entry is None or entry.state != "ready" or entry.model is None:
        llm_magic.ask("warm up", model=name, max_tokens=4, temperature=0)
        entry = _runtime().cache.entry(resolve(name))
    assert entry is not None and entry.model is not None, f"{name} did not load"
    return entry.model


def forget_context(local: Any) -> None:
    """Clear the model's KV cache (and, with the new engine, its saved conversation states), so the
    next prompt is evaluated from scratch. ``LocalModel.forget_context`` where it exists."""
    if hasattr(local, "forget_context"):
        local.forget_context()
    else:
        local.llm.reset()


def flash_attn_setting(local: Any) -> str:
    """The loaded model's flash-attention setting: the ``flash_attn`` model option ("auto", "on",
    "off") where llm_magic has it, else what the context was created with."""
    return str(getattr(local.spec, "flash_attn", None) or flash_attn_runs(local))


def flash_attn_runs(local: Any) -> str:
    """ "on" or "off": what the loaded ``Llama``'s context was created with (llama.cpp's "auto"
    turns it on for the CPU)."""
    kind = getattr(getattr(local.llm, "context_params", None), "flash_attn_type", None)
    return "off" if kind == 0 else "on"


def arrival_times(marks: list[tuple[int, float]]) -> list[float]:
    """``t[k]``: when the k-th generated token (1-based) had arrived (``t[0]`` unused)."""
    times: list[float] = [float("nan")]
    for n, t in marks:
        while len(times) <= n:
            times.append(t)
    return times


def rate_between(times: list[float], a: int, b: int) -> float | None:
    """Tokens/s from token ``a`` to token ``b`` (1-based arrivals), None if the answer is shorter."""
    a = max(a, 1)
    if b >= len(times) or b <= a or times[b] <= times[a]:
        return None
    return (b - a) / (times[b] - times[a])


def not_measured(why: str) -> str:
    return f"not measured: {why}"


def guarded(errors: dict[str, str], name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one measurement; on failure record why under ``name`` and return None (the others go on)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - one broken side must not lose the others
        msg = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
        errors.setdefault(name, msg)
        print(f"{name} failed: {msg}", file=sys.stderr, flush=True)
        return None
