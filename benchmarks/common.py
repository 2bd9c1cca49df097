"""Helpers shared by the benchmarks: statistics, machine facts, result files and the README table."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
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
    except Exception:
        lcp = "?"
    from llm_magic.config import physical_cores

    return {"cpu": cpu, "logical_cores": os.cpu_count(), "physical_cores": physical_cores(),
            "python": platform.python_version(), "llama_cpp_python": lcp, "platform": platform.platform()}


def run_json(code: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``code`` in a fresh Python process; it prints one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_results(name: str, data: dict[str, Any], table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")


def update_readme(name: str, table: str) -> None:
    """Replace the text between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = README.read_text()
    if start not in text:
        print(f"README has no {start} marker; table not inserted", file=sys.stderr)
        return
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    README.write_text(pattern.sub(lambda _: f"{start}\n{table}\n{end}", text))
