"""Where does a streamed answer's time go? py-spy (native frames) over `llm_magic.ask` on the
benchmark model; writes benchmarks/results/profile.md and the README's `bench:profile` section.

    python benchmarks/profile_stream.py [--model PATH]

Needs py-spy (the `bench` extra). Samples of every busy thread are counted, llama.cpp's worker
threads included (threads blocked on a lock or queue are left out), so the shares are of CPU
samples, not of wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine_line, update_readme

WORKLOAD = """
import llm_magic, sys
m = sys.argv[1]
llm_magic.ask("warm", model=m, max_tokens=4)
for i in range(3):
    llm_magic.ask("Write a long story about a robot.", model=m, max_tokens=400, temperature=0, raw=True, seed=1)
"""

IDLE = ("PyThread_acquire_lock_timed", "pthread_cond_timedwait", "pthread_cond_wait", "__futex_abstimed_wait")

# (label, frame names: a sample counts once if any of its frames has one of these names)
GROUPS = [
    ("llama.cpp decode (`llama_decode`: the model's forward pass)", ("llama_decode",)),
    ("of which matrix multiplication (`ggml_compute_forward_mul_mat`)", ("ggml_compute_forward_mul_mat",)),
    (
        "sampling (`Sampler.sample`: an argmax when greedy, else llama.cpp's sampler chain)",
        ("sample", "llama_sampler_sample"),
    ),
    (
        "detokenizing (`llama_token_to_piece`, or llama-cpp-python's `detokenize`)",
        ("llama_token_to_piece", "detokenize"),
    ),
    ("llm_magic's own Python (files under `llm_magic/`, outside llama-cpp-python calls)", ()),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("BENCH_MODEL"))
    args = parser.parse_args()
    model = args.model
    if not model:
        from llm_magic import default_model

        model = str(default_model.ensure())
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(spy):
        print("py-spy is not installed (pip install py-spy): no profile", file=sys.stderr)
        return 1
    raw = Path(tempfile.mkdtemp()) / "profile.raw"
    subprocess.run(
        [
            spy,
            "record",
            "--native",
            "--format",
            "raw",
            "-r",
            "200",
            "-o",
            str(raw),
            "--",
            sys.executable,
            "-c",
            WORKLOAD,
            model,
        ],
        check=True,
        capture_output=True,
    )
    total, groups, ours_only = 0, Counter(), 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, n = line.rsplit(" ", 1)
        n = int(n)
        frames = stack.split(";")
        if any(w in stack for w in IDLE):
            continue  # a thread blocked on a lock or queue (idle workers): not CPU time
        total += n
        names = {f.split(" (")[0].split("::")[-1].split(".")[-1] for f in frames}
        for label, wanted in GROUPS:
            if names.intersection(wanted):
                groups[label] += n
        # a sample whose innermost Python frame is ours (not inside llama_cpp or native code)
        py = [f for f in frames if ".py:" in f]
        if py and "llm_magic/" in py[-1]:
            deeper = frames[frames.index(py[-1]) + 1 :]
            if not any(("llama" in f or "ggml" in f) for f in deeper):
                ours_only += n
    rows = []
    for label, names in GROUPS:
        count = ours_only if not names else groups[label]
        rows.append(f"| {label} | {count / total * 100:.1f}% |")
    table = (
        machine_line(model)
        + f"\n\n| where the CPU samples go ({total} samples, all threads) | share |\n|---|---|\n"
        + "\n".join(rows)
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "profile.md").write_text(table + "\n")
    update_readme("profile", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
