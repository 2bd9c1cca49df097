"""GPU check: llm_magic on a CUDA build of llama-cpp-python, GPU against CPU (issue 13).

Run by ``benchmarks/gpu_check.sh``; three steps:

- ``prepare DIR`` (here, with the network): what the GPU machine cannot fetch, small enough to
  carry (its working tree may be 64 MiB): the llama-cpp-python sdist without the parts a CUDA
  build does not read (docs, model vocabularies, tests, other backends), the pure-Python wheels
  llm_magic and llama-cpp-python need beyond what is installed there, and the *skeleton* of Gemma
  3 270M — its GGUF header (metadata, tokenizer) and tensor table, 6.5 MB of the 253 MB file.
- ``fill SKELETON OUT`` (there): Gemma 3 270M's exact file — same header, tokenizer, tensor names,
  shapes and quantization types (Q8_0, Q5_0, Q4_K, Q6_K, F32) — with random weights in place of
  the trained ones (scaled so activations stay finite). Speed does not depend on the weights'
  values, so tokens/s are Gemma's; the text is gibberish.
- ``measure MODEL OUTDIR`` (there): through ``llm_magic.ask``, decode tokens/s (greedy and default
  sampling) and the time to evaluate a long prompt, with ``n_gpu_layers=-1`` (all) against ``0``
  (CPU), flash attention on/off and a q8_0 KV cache; what ``llm_magic.models()`` and
  ``llama_options.device_info`` say the model runs on. Writes ``gpu_check.json`` and ``gpu_check.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LLAMA_CPP_PYTHON = "0.3.36"
SDIST = f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
WHEELS = ("traitlets", "diskcache")  # pure Python; the rest is on the GPU machine's image already
# Parts of the sdist a CUDA build of the Python package never reads.
DROP = (
    ".git",
    "docs",
    "examples",
    "tests",
    "docker",
    "vendor/llama.cpp/docs",
    "vendor/llama.cpp/models",
    "vendor/llama.cpp/media",
    "vendor/llama.cpp/tests",
    "vendor/llama.cpp/benches",
    "vendor/llama.cpp/examples",
    "vendor/llama.cpp/pocs",
    "vendor/llama.cpp/gguf-py",
    "vendor/llama.cpp/conversion",
    "vendor/llama.cpp/scripts",
    "vendor/llama.cpp/app",
)
KEEP_TOOLS = ("mtmd",)  # llama-cpp-python builds tools/mtmd (libmtmd) beside libllama
KEEP_BACKENDS = ("ggml-cpu", "ggml-cuda", "ggml-blas")  # ggml/src/ggml-*: the others are other GPUs


# ---- prepare (here) ----------------------------------------------------------------------------------


def find_sdist(work: Path) -> Path:
    """The llama-cpp-python sdist: the one `make bench` cached, or pip's download."""
    cached = Path.home() / ".cache/llm_magic/llama-bench" / LLAMA_CPP_PYTHON / "sdist" / f"{SDIST}.tar.gz"
    if cached.is_file():
        return cached
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(work)]
    subprocess.run([*pip, f"llama-cpp-python=={LLAMA_CPP_PYTHON}"], check=True)
    return next(work.glob(f"{SDIST}.tar.gz"))


def slim_sdist(sdist: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / SDIST
        for rel in DROP:
            shutil.rmtree(src / rel, ignore_errors=True)
        for tool in (src / "vendor/llama.cpp/tools").iterdir():
            if tool.is_dir() and tool.name not in KEEP_TOOLS:
                shutil.rmtree(tool)
        for backend in (src / "vendor/llama.cpp/ggml/src").glob("ggml-*"):
            if backend.is_dir() and backend.name not in KEEP_BACKENDS:
                shutil.rmtree(backend)
        with tarfile.open(out, "w:gz", compresslevel=9) as tar:
            tar.add(src, arcname=SDIST)


def write_skeleton(model: Path, out: Path) -> None:
    """The GGUF's bytes up to its tensor data, and the tensor table as JSON."""
    from gguf import GGUFReader

    reader = GGUFReader(str(model))
    tensors = [
        {
            "name": t.name,
            "type": int(t.tensor_type),
            "type_name": t.tensor_type.name,
            "shape": [int(x) for x in t.shape],
            "offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
        }
        for t in reader.tensors
    ]
    with open(model, "rb") as f:
        header = f.read(int(reader.data_offset))
    (out / "gemma-skeleton.bin").write_bytes(header)
    size = os.path.getsize(model)
    (out / "gemma-skeleton.json").write_text(json.dumps({"file_size": size, "tensors": tensors}))


def prepare(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        slim_sdist(find_sdist(Path(work)), out / f"{SDIST}-slim.tar.gz")
    from llm_magic import default_model

    write_skeleton(default_model.ensure(), out)
    wheels = out / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *WHEELS],
        check=True,
    )
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size / 2**20:8.1f} MiB  {p.relative_to(out)}")


# ---- fill (there) -------------------------------------------------------------------------------------

# ggml type -> (bytes per block, where the block's fp16 scale d sits, std of the quantized factor d
# multiplies): d = 1 / (sqrt(row length) * std) keeps a matrix-vector product's gain near 1.
# Q8_0: d, 32 int8. Q5_0: d, 4+16 bytes of 5-bit values. Q4_K: d, dmin, 12 bytes of 6-bit scales,
# 128 of nibbles (256 values). Q6_K: 128+64 bytes of 6-bit values, 16 int8 scales, then d.
_BLOCKS = {8: (34, 0, 73.9), 6: (22, 0, 9.23), 12: (144, 0, 216.0), 14: (210, 208, 1369.0)}


def fill(skeleton: Path, out: Path, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    table = json.loads(skeleton.with_suffix(".json").read_text())
    with open(out, "wb") as f:
        f.write(skeleton.with_suffix(".bin").read_bytes())
        for t in sorted(table["tensors"], key=lambda t: t["offset"]):
            f.write(b"\0" * (t["offset"] - f.tell()))  # alignment padding
            row = t["shape"][0]
            if t["type"] == 0:  # F32: norms, around 1
                data = (1.0 + 0.05 * rng.standard_normal(t["n_bytes"] // 4)).astype(np.float32).tobytes()
            elif t["type"] in _BLOCKS:
                block_bytes, at, std = _BLOCKS[t["type"]]
                blocks = rng.integers(0, 256, size=(t["n_bytes"] // block_bytes, block_bytes), dtype=np.uint8)
                d = np.float16(1.0 / (row**0.5 * std))
                blocks[:, at : at + 2] = np.frombuffer(d.tobytes(), dtype=np.uint8)
                if t["type"] == 12:  # Q4_K: dmin balances the mean of d * scale * q
                    blocks[:, 2:4] = np.frombuffer(np.float16(float(d) * 236 / 31.5).tobytes(), dtype=np.uint8)
                data = blocks.tobytes()
            else:
                raise SystemExit(f"{t['name']}: no filler for ggml type {t['type_name']}")
            assert len(data) == t["n_bytes"], t["name"]
            f.write(data)
    assert os.path.getsize(out) == table["file_size"], "the filled file must be Gemma's size"


# ---- measure (there) ----------------------------------------------------------------------------------

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {  # key (for --config) -> (label, settings)
    "gpu": ("GPU, all layers (the default)", {"n_gpu_layers": -1}),
    "gpu-fa-off": ("GPU, flash attention off", {"n_gpu_layers": -1, "flash_attn": "off"}),
    "gpu-q8": ("GPU, q8_0 KV cache", {"n_gpu_layers": -1, "type_k": "q8_0", "type_v": "q8_0"}),
    "gpu-half": ("GPU, 10 of 19 layers", {"n_gpu_layers": 10}),
    "cpu": ("CPU (n_gpu_layers=0)", {"n_gpu_layers": 0}),
    "cpu-fa-off": ("CPU, flash attention off", {"n_gpu_layers": 0, "flash_attn": "off"}),
}
WORDS = ("river", "stone", "light", "market", "paper", "garden", "window", "music", "winter", "bridge", "yellow")


def _text(n_words: int, salt: int) -> str:
    return " ".join(WORDS[(i * 7 + salt * 13 + i // 5) % len(WORDS)] for i in range(n_words))


def measure(model: str, outdir: Path, reps: int, n_tokens: int, config_names: list[str] | None) -> None:
    import llama_cpp

    import llm_magic
    from llm_magic import specs
    from llm_magic.engines import llama_options, llama_private

    outdir.mkdir(parents=True, exist_ok=True)
    gpu_build = bool(llama_cpp.llama_supports_gpu_offload())
    s = llm_magic.current_settings()
    s.timeout, s.n_ctx, s.keep_alive = 900.0, 4096, "forever"
    defaults = {name: getattr(s, name) for name in ("n_gpu_layers", "flash_attn", "type_k", "type_v")}
    results: list[dict[str, Any]] = []
    salt = 0
    unknown = set(config_names or ()) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown --config {', '.join(sorted(unknown))}; known: {', '.join(CONFIGS)}")
    configs = [CONFIGS[key] for key in (config_names or CONFIGS)]
    for label, options in configs:
        if options.get("n_gpu_layers", 0) != 0 and not gpu_build:
            print(f"skipped (no GPU backend): {label}", flush=True)
            continue
        llm_magic.unload(all=True)
        for name, value in {**defaults, **options}.items():
            setattr(s, name, value)
        started = time.monotonic()
        llm_magic.preload(model)
        llm_magic.ask("warm up", model=model, raw=True, max_tokens=8, temperature=0)
        load_s = time.monotonic() - started
        row = next(r for r in llm_magic.models() if r.get("state") == "ready")
        result: dict[str, Any] = {"config": label, "options": options, "load_and_warm_s": round(load_s, 2)}
        result.update({k: row.get(k) for k in ("device", "gpu_layers", "flash_attn", "kv_type", "n_threads")})
        for kind, sampling in (("greedy", {"temperature": 0}), ("sampled", {"seed": 1})):
            speeds, counts = [], []
            for _ in range(reps):
                salt += 1
                a = llm_magic.ask(_text(24, salt), model=model, raw=True, max_tokens=n_tokens, **sampling)
                speeds.append(a.tokens_per_s or 0.0)
                counts.append(a.n_tokens)
            result[f"{kind}_tok_s"] = round(statistics.median(speeds), 1)
            result[f"{kind}_tok_s_range"] = [round(min(speeds), 1), round(max(speeds), 1)]
            result[f"{kind}_tokens"] = counts
        prompt_s, prompt_tokens = [], 0
        for _ in range(reps):  # a fresh long prompt each time: no prefix to reuse
            salt += 1
            a = llm_magic.ask(_text(1400, salt), model=model, raw=True, max_tokens=1, temperature=0)
            prompt_s.append(a.ttft_s or float("nan"))
            prompt_tokens = a.n_prompt_evaluated
        result["long_prompt_tokens"] = prompt_tokens
        result["long_prompt_ttft_s"] = round(statistics.median(prompt_s), 3)
        result["long_prompt_tok_s"] = round(prompt_tokens / statistics.median(prompt_s), 0)
        print(json.dumps(result), flush=True)
        results.append(result)
    llm_magic.unload(all=True)

    # device_info on this build's own load log, without llm_magic's cache in between (the
    # default options; abortable_load: as llm_magic loads, without the extra CPU buffer types
    # that crash llama.cpp on AMX CPUs)
    for name, value in defaults.items():
        setattr(s, name, value)
    spec = specs.resolve(model)
    lc = llama_private.install_hooks()
    with llama_private.capture_native_log(maxlen=50000) as lines, llama_private.abortable_load(None):
        llm = lc.Llama(model_path=model, n_ctx=4096, verbose=True, **llama_options.llama_kwargs(spec))
    direct = llama_options.device_info(llm, spec, lines)
    wanted = ("using device", "assigned to device", "offloaded", "flash_attn", "K (")
    log_lines = [line.rstrip() for line in lines if any(w in line for w in wanted)]
    llm.close()
    print("device_info from the load log:", json.dumps(direct), flush=True)

    machine = _machine()
    (outdir / "gpu_check.json").write_text(
        json.dumps({"machine": machine, "gpu_build": gpu_build, "results": results, "device_info": direct}, indent=1)
    )
    (outdir / "gpu_load_log.txt").write_text("\n".join(log_lines) + "\n")
    (outdir / "gpu_check.md").write_text(_table(machine, results, n_tokens))
    print(_table(machine, results, n_tokens), flush=True)


def _machine() -> dict[str, Any]:
    import llama_cpp

    gpu = ""
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        gpu = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
    return {
        "gpu": gpu,
        "cpus": os.cpu_count(),
        "llama_cpp_python": llama_cpp.__version__,
        "python": sys.version.split()[0],
    }


def _table(machine: dict[str, Any], results: list[dict[str, Any]], n_tokens: int) -> str:
    about = (
        f"GPU: {machine['gpu'] or 'none'}; {machine['cpus']} CPUs; llama-cpp-python {machine['llama_cpp_python']}. "
        f"Gemma 3 270M Q4_K_M (its exact tensors, random weights); {n_tokens} tokens per answer, medians."
    )
    columns = (
        "configuration",
        "device (llm_magic.models())",
        "layers",
        "flash attn",
        "KV",
        "greedy tok/s",
        "sampled tok/s",
        "long prompt tok/s",
    )
    lines = [about, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        lines.append(
            f"| {r['config']} | {r.get('device') or '(not reported)'} | {r.get('gpu_layers') or '-'} "
            f"| {r.get('flash_attn') or '-'} | {r.get('kv_type') or '-'} | {r['greedy_tok_s']} | {r['sampled_tok_s']} "
            f"| {r['long_prompt_tok_s']:.0f} ({r['long_prompt_tokens']} tokens) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("prepare").add_argument("out", type=Path)
    p = sub.add_parser("fill")
    p.add_argument("skeleton", type=Path, help="DIR/gemma-skeleton (without .bin/.json)")
    p.add_argument("out", type=Path)
    p = sub.add_parser("measure")
    p.add_argument("model")
    p.add_argument("outdir", type=Path)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--config", action="append", help=f"only these configurations: {', '.join(CONFIGS)}")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.out)
    elif args.step == "fill":
        fill(args.skeleton, args.out)
    else:
        measure(args.model, args.outdir, args.reps, args.tokens, args.config)


if __name__ == "__main__":
    main()
