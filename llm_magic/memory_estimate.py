"""How much memory a local model will take, from its GGUF header alone (never loading it): the
weights, the KV cache for a context size and KV cache type, and llama.cpp's working buffers; the
GPU's share when layers are offloaded. The cache refuses a load this says cannot fit
(``check_fits``) before llama.cpp allocates anything, instead of the OOM killer ending the kernel.

The figures follow llama.cpp's own allocations (``llama_kv_cache: size = …``, ``compute buffer
size = …``), measured against the resident memory a load adds (tests/test_memory_estimate.py):
- weights: the tensor data (mmap'd; resident once used, and all of it with mlock);
- KV cache: ``n_ctx × layers × (K width + V width) × bytes per element``; llama-cpp-python keeps a
  full-size cache on sliding-window layers too (``swa_full``), so every layer counts at ``n_ctx``;
- working buffers: one micro-batch of activations and its attention mask, the attention scores
  when flash attention is off, the KV cells' records (64 bytes a position), one row of logits and the vocabulary's tables (~200 bytes a
  token: 50 MB for Gemma 3's 262k tokens). llama.cpp reserves more address space than this (a
  micro-batch's worth of logits), but only touches it when every position's logits are asked
  for, which llm_magic never does.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .errors import ModelTooLarge
from .gguf_header import GGUFError, GGUFHeader, read_header

if TYPE_CHECKING:
    from .specs import ModelSpec

# bytes per element of each KV cache type (the quantized ones store blocks of 32 values)
KV_TYPE_BYTES = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}
RECURRENT = ("mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7")
FIXED_OVERHEAD = 3 << 20  # llama.cpp's context, graph and thread state: a few MB whatever the model
CELL_BYTES = 64  # per position of the context: llama.cpp's KV cell records
VOCAB_ENTRY = 200  # bytes per token of llama.cpp's vocabulary tables (text, scores, lookup maps)
N_UBATCH = 512  # llama-cpp-python's default micro-batch


@dataclass(frozen=True, eq=True)
class Estimate(Mapping[str, Any]):
    """Bytes a model needs loaded. Read as attributes or as a read-only mapping
    (``est["total_bytes"]``, ``dict(est)``, ``"kv_bytes" in est``)."""

    path: str
    n_ctx: int
    type_k: str
    type_v: str
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    total_bytes: int
    gpu_bytes: int = 0  # the part on the GPU (offloaded layers and their KV cache); 0 on the CPU
    n_layer: int = 0
    gpu_layers: int = 0  # layers offloaded (llama.cpp counts the output layer as one more)

    @property
    def host_bytes(self) -> int:
        """The part in the machine's RAM."""
        return self.total_bytes - self.gpu_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "host_bytes": self.host_bytes}

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())

    __hash__ = None  # type: ignore[assignment]  # a mapping: not hashable

    def summary(self) -> str:
        """One line: ``345 MB (weights 241 MB, KV cache 75 MB at n_ctx 4096 f16/f16, buffers 29 MB)``."""
        gpu = f"; {fmt_bytes(self.gpu_bytes)} on the GPU" if self.gpu_bytes else ""
        kv_type = self.type_k if self.type_k == self.type_v else f"{self.type_k}/{self.type_v}"
        return (
            f"{fmt_bytes(self.total_bytes)} (weights {fmt_bytes(self.weights_bytes)}, KV cache "
            f"{fmt_bytes(self.kv_bytes)} at n_ctx {self.n_ctx} {kv_type}, buffers {fmt_bytes(self.compute_bytes)}{gpu})"
        )


def fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.{1 if n < 10 * size else 0}f} {unit}"
    return f"{int(n)} B"


def _per_layer(value: Any, n_layer: int, default: int) -> list[int]:
    """A per-layer hyperparameter: an int for every layer, or a list of one per layer."""
    if isinstance(value, list) and value:
        return [int(v) for v in value[:n_layer]] + [int(value[-1])] * max(0, n_layer - len(value))
    return [int(value) if isinstance(value, (int, float)) else default] * n_layer


_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


def _weights(path: str, header: GGUFHeader) -> int:
    """The tensor data of a model: of every part of a split GGUF (``-00001-of-00003.gguf``)."""
    own = sum(header.tensor_bytes.values()) or os.path.getsize(path)
    found = _SPLIT.search(path)
    if found is None or int(found.group(2)) < 2:
        return own
    n = int(found.group(2))
    base = path[: found.start()]
    total = 0
    for i in range(1, n + 1):
        part = f"{base}-{i:05d}-of-{n:05d}.gguf"
        if part == path:
            total += own
        elif os.path.exists(part):
            total += sum(_header(part).tensor_bytes.values()) or os.path.getsize(part)
    return total


# header reads, memoised by file identity (inode, size, mtime): a 250 MB model's header takes ~0.2 s
_headers: dict[tuple[str, int, int, int], GGUFHeader] = {}
_headers_lock = threading.Lock()


def _header(path: str) -> GGUFHeader:
    st = os.stat(path)
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
    with _headers_lock:
        found = _headers.get(key)
    if found is None:
        found = read_header(path, full=True)
        with _headers_lock:
            if len(_headers) > 256:
                _headers.clear()
            _headers[key] = found
    return found


def estimate_file(
    path: str | os.PathLike[str],
    n_ctx: int | None = None,
    *,
    type_k: str = "f16",
    type_v: str = "f16",
    n_gpu_layers: int = 0,
    flash_attn: bool = True,
    offload_kqv: bool = True,
) -> Estimate:
    """The memory a load of the GGUF at ``path`` takes, from its header.

    ``n_ctx``: the context window (None: 4096, capped at the model's trained length, as a load
    does). ``n_gpu_layers``: as for a load (-1 all); pass 0 on a build without a GPU backend.
    Raises ``GGUFError`` (a ``ValueError``) for a file that is not a readable GGUF."""
    path = os.fspath(path)
    header = _header(path)
    size = os.path.getsize(path)
    if header.data_end is not None and size < header.data_end:
        raise GGUFError(f"truncated: tensor data needs {header.data_end} bytes but the file has {size}")
    md = header.metadata
    arch = md.get("general.architecture") or ""
    trained = header.context_length
    if n_ctx is None or n_ctx <= 0:
        n_ctx = 4096
    if trained:
        n_ctx = min(n_ctx, trained)
    n_layer = int(md.get(f"{arch}.block_count") or 0)
    n_embd = int(md.get(f"{arch}.embedding_length") or 0)
    heads = _per_layer(md.get(f"{arch}.attention.head_count"), n_layer, 1)
    heads_kv = _per_layer(md.get(f"{arch}.attention.head_count_kv"), n_layer, 0)
    heads_kv = [kv or h for kv, h in zip(heads_kv, heads, strict=True)]
    head_dim = n_embd // max(1, heads[0]) if heads else 0
    k_len = int(md.get(f"{arch}.attention.key_length") or head_dim)
    v_len = int(md.get(f"{arch}.attention.value_length") or head_dim)
    n_ff = max(_per_layer(md.get(f"{arch}.feed_forward_length"), n_layer, 4 * n_embd) or [0])
    n_vocab = header.array_lengths.get("tokenizer.ggml.tokens") or int(md.get(f"{arch}.vocab_size") or 0)

    weights = _weights(path, header)
    if arch in RECURRENT or f"{arch}.ssm.state_size" in md:  # a fixed-size state, not a KV cache
        inner = int(md.get(f"{arch}.ssm.inner_size") or 2 * n_embd)
        state = int(md.get(f"{arch}.ssm.state_size") or 16) + int(md.get(f"{arch}.ssm.conv_kernel") or 4)
        kv_layers = [inner * state * 4] * n_layer
    else:
        bytes_k, bytes_v = KV_TYPE_BYTES.get(type_k, 2.0), KV_TYPE_BYTES.get(type_v, 2.0)
        kv_layers = [int(n_ctx * kv * (k_len * bytes_k + v_len * bytes_v)) for kv in heads_kv]
    kv = sum(kv_layers)

    ubatch = min(N_UBATCH, n_ctx)
    activations = ubatch * 4 * (5 * n_embd // 2 + 2 * n_ff)
    # the KV cells' bookkeeping, and a micro-batch's attention mask over the cells in use
    cells = n_ctx * CELL_BYTES + ubatch * min(n_ctx, 8192) * 2
    scores = 0 if flash_attn else max(heads or [1]) * ubatch * min(n_ctx, 8192) * 2
    vocab = n_vocab * (4 + VOCAB_ENTRY)  # one row of logits, and the tokenizer's tables
    compute = FIXED_OVERHEAD + activations + cells + scores + vocab

    gpu_layers = n_layer + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layer + 1)
    gpu = 0
    if gpu_layers > 0:
        # llama.cpp's placement: the output layer goes to the GPU first, then the last blocks
        first = n_layer - (gpu_layers - 1)
        on_gpu = [size for name, size in header.tensor_bytes.items() if _on_gpu(name, first)]
        kv_on_gpu = sum(kv_layers[first:]) if offload_kqv else 0
        gpu = sum(on_gpu) + kv_on_gpu + (compute if gpu_layers > n_layer else 0)
    total = weights + kv + compute
    return Estimate(
        path=path,
        n_ctx=n_ctx,
        type_k=type_k,
        type_v=type_v,
        weights_bytes=int(weights),
        kv_bytes=int(kv),
        compute_bytes=int(compute),
        total_bytes=int(total),
        gpu_bytes=int(min(gpu, total)),
        n_layer=n_layer,
        gpu_layers=max(0, gpu_layers),
    )


def _on_gpu(tensor: str, first_block: int) -> bool:
    """Is this tensor offloaded when blocks from ``first_block`` on and the output layer are?
    (The token embeddings stay in RAM: llama.cpp looks rows up there.)"""
    block = _block(tensor)
    return block >= first_block if block is not None else not tensor.startswith("token_embd")


def _block(tensor: str) -> int | None:
    """The block a tensor belongs to (``blk.12.attn_q.weight`` → 12); None outside the blocks."""
    parts = tensor.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit() else None


def estimate_spec(spec: ModelSpec) -> Estimate:
    """The estimate for a local model spec, with its own n_ctx, KV types and GPU layers (GPU layers
    count only where this llama-cpp-python build can offload)."""
    from .engines.llama_options import flash_attn_on

    if spec.mmproj:
        return _with_projector(spec)
    return estimate_file(
        spec.path,
        spec.n_ctx,
        type_k=spec.type_k,
        type_v=spec.type_v,
        n_gpu_layers=spec.n_gpu_layers if _gpu_offload() else 0,
        flash_attn=flash_attn_on(spec),
        offload_kqv=spec.offload_kqv,
    )


def _with_projector(spec: ModelSpec) -> Estimate:
    """A vision model: the text model plus its projector's weights (and the image buffers)."""
    from dataclasses import replace

    text = estimate_spec(replace(spec, mmproj=""))
    try:
        projector = sum(_header(spec.mmproj).tensor_bytes.values()) or os.path.getsize(spec.mmproj)
    except (OSError, GGUFError):
        projector = 0
    return replace(text, weights_bytes=text.weights_bytes + projector, total_bytes=text.total_bytes + projector)


_gpu_offload_cache: list[bool] = []


def _gpu_offload() -> bool:
    if not _gpu_offload_cache:
        from .engines import llama_private as private

        _gpu_offload_cache.append(bool(private.install_hooks().llama_supports_gpu_offload()))
    return _gpu_offload_cache[0]


def available_memory() -> int:
    """RAM a new load may take now: what the OS calls available (free plus reclaimable cache),
    or less in a container whose cgroup limits the memory (Docker, Kubernetes, JupyterHub)."""
    import psutil

    available = int(psutil.virtual_memory().available)
    room = cgroup_room()
    return min(available, room) if room is not None else available


def cgroup_room(root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes this process's cgroup may still take (its limit less its usage); None without a limit.
    cgroup v2 (``memory.max``, ``memory.current``) and v1 (``memory.limit_in_bytes``, ``memory.usage_in_bytes``)."""
    here = ""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split(":", 2)
                if len(fields) == 3 and (fields[1] == "" or "memory" in fields[1].split(",")):
                    here = fields[2]
                    if fields[1]:
                        break
    except OSError:
        pass
    folders = [os.path.join(root, here.lstrip("/")), root, os.path.join(root, "memory")]
    for folder in dict.fromkeys(folders):  # this process's own cgroup first
        for limit_name, used_name in (
            ("memory.max", "memory.current"),
            ("memory.limit_in_bytes", "memory.usage_in_bytes"),
        ):
            try:
                with open(os.path.join(folder, limit_name), encoding="utf-8") as f:
                    limit = f.read().strip()
                with open(os.path.join(folder, used_name), encoding="utf-8") as f:
                    used = int(f.read().strip())
            except (OSError, ValueError):
                continue
            if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:  # no limit (v1 says ~2**63)
                continue
            return max(0, int(limit) - used)
    return None


def check_fits(spec: ModelSpec, est: Estimate, *, budget: int, evictable: int, available: int | None = None) -> None:
    """Refuse, before loading, a model that cannot fit: the RAM it needs (``host_bytes``: all of it
    on the CPU) over ``memory_budget`` (``budget``, 0 = none) on its own, or over the RAM
    ``available`` once the idle models (``evictable`` bytes) are evicted. Raises
    ``ModelTooLarge`` with the estimate and what would make it fit."""
    need = est.host_bytes
    if budget and need > budget:
        limit = f"memory_budget is {fmt_bytes(budget)}"
        room = budget
    else:
        free = available_memory() if available is None else available
        room = free + evictable
        if need <= room:
            return
        limit = f"only {fmt_bytes(room)} of RAM is available" + (
            f" (with {fmt_bytes(evictable)} of idle models evicted)" if evictable else ""
        )
    raise ModelTooLarge(
        f"{spec.display_name} needs about {est.summary()}, but {limit}; not loaded. To fit: "
        + "; ".join(remedies(spec, est, room))
    )


def remedies(spec: ModelSpec, est: Estimate, room: int) -> list[str]:
    """What would bring the RAM ``est`` needs within ``room`` bytes: a smaller n_ctx, a quantized
    KV cache, more layers on the GPU (a GPU build offloading only some), a smaller model, or a
    larger ``memory_budget``."""
    from . import settings as settings_mod

    per_position = est.kv_bytes / max(1, est.n_ctx) + CELL_BYTES
    fixed = est.total_bytes - est.gpu_bytes - per_position * est.n_ctx
    ways: list[str] = []
    if est.kv_bytes and est.n_ctx > 256 and room > fixed:
        fitting = int((room - fixed) / per_position) // 256 * 256
        if fitting >= 256:
            ways.append(f"a smaller context (n_ctx={min(fitting, est.n_ctx - 256)} fits; now {est.n_ctx})")
        if spec.type_k in ("f16", "bf16", "f32") and fixed + est.kv_bytes * 34 / 64 <= room:
            ways.append("a quantized KV cache (type_k='q8_0', type_v='q8_0' halves it)")
    if est.gpu_layers and est.gpu_layers <= est.n_layer:
        ways.append(f"more layers on the GPU (n_gpu_layers=-1; now {est.gpu_layers} of {est.n_layer + 1})")
    if est.weights_bytes > room or not ways:
        ways.append(f"a smaller model or quantization (the weights alone are {fmt_bytes(est.weights_bytes)})")
    budget = settings_mod.current().memory_budget_bytes
    if budget and budget < est.host_bytes:
        ways.append(f"a memory_budget above {fmt_bytes(est.host_bytes)} (now {fmt_bytes(budget)})")
    return ways
