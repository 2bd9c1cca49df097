"""`make bench`: run the benchmarks, write benchmarks/results/, refresh the README tables.

    python benchmarks/run.py [--model PATH] [--reps N]

The model defaults to the embedded Gemma 3 270M (assembled once into the user cache).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_conversation  # noqa: E402
import bench_core  # noqa: E402
from common import machine, update_readme, write_results  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("BENCH_MODEL"), help="GGUF to benchmark")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per comparison (>= 5)")
    args = parser.parse_args()
    model = args.model
    if not model:
        from llm_magic import default_model

        model = str(default_model.ensure())
    reps = max(5, args.reps)
    m = machine()
    header = (f"Machine: {m['cpu']}, {m['physical_cores']} physical / {m['logical_cores']} logical cores, "
              f"Python {m['python']}, llama-cpp-python {m['llama_cpp_python']}. Model: `{Path(model).name}`.\n\n")
    data, table = bench_core.run(model, reps=reps)
    table = header + table
    write_results("core", data, table)
    update_readme("core", table)
    print(table)
    data, table = bench_conversation.run(model, reps=reps)
    write_results("conversation", data, table)
    update_readme("conversation", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
