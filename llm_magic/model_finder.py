"""Finding the GGUF models already on this machine: ``AskMagics.model_dirs``, the Hugging Face
cache, Ollama's store, LM Studio's models folder and llama.cpp's cache. Each row says the name to
pass to ``-m`` and what the file's GGUF header says (architecture, quantization, trained context,
chat template), plus the memory estimate — headers only, never a model load. A file that cannot
be read is a row with a short reason, never an exception. Nothing here imports IPython.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from . import hf_source, ollama_source
from . import settings as settings_mod
from .gguf_header import GGUFError

SOURCES = ("folder", "hf", "ollama", "lmstudio", "llama.cpp")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)

# llama.cpp's llama_ftype (general.file_type) -> the quantization's usual name
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}
_QUANT_IN_NAME = re.compile(r"(?<![A-Za-z0-9])(I?Q\d_[A-Z0-9_]+?|F16|F32|BF16)(?=[-.]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class FoundModel(Mapping[str, Any]):
    """One GGUF model found on this machine: ``name`` is what ``-m`` takes. Its facts are
    attributes (``row.name``) and, read-only, keys (``row["name"]``, ``dict(row)``, ``row.get``)."""

    name: str
    path: str
    source: str  # folder, hf, ollama, lmstudio, llama.cpp
    size_bytes: int
    architecture: str | None = None
    quantization: str | None = None
    context_length: int | None = None
    chat_template: bool | None = None
    estimate_bytes: int | None = None  # memory to load it (llm_magic.memory_estimate), when known
    error: str | None = None  # why the file cannot be used (not GGUF, truncated, unreadable ...)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELDS)

    def __len__(self) -> int:
        return len(_FIELDS)

    def __contains__(self, key: object) -> bool:
        return key in _FIELDS


_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FoundModel))


# ---- where to look --------------------------------------------------------------------------


def lmstudio_dirs() -> list[Path]:
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def llama_cpp_dir() -> Path:
    return Path(os.environ.get("LLAMA_CACHE") or Path.home() / ".cache" / "llama.cpp").expanduser()


def _gguf_files(root: Path) -> Iterator[Path]:
    """``*.gguf`` under ``root`` (followed one level of symlink, never into hidden folders);
    a split GGUF by its first part only."""
    if not root.is_dir():
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.lower().endswith(".gguf") and _is_first_part(f):
                yield Path(folder) / f


def _is_first_part(name: str) -> bool:
    m = _SPLIT.search(name)
    return m is None or int(m.group(1)) == 1


def _hf_entries() -> Iterator[tuple[str, Path]]:
    """(``hf:ORG/REPO:FILE``, snapshot path) for every text-model GGUF in the Hugging Face cache."""
    root = hf_source.cache_dir()
    try:
        repos = sorted(p for p in root.iterdir() if p.name.startswith("models--"))
    except OSError:
        return
    for repo_path in repos:
        parts = repo_path.name[len("models--") :].split("--")
        if len(parts) != 2:
            continue
        repo = "/".join(parts)
        refs = _refs(repo_path)
        for commit in sorted(set(refs.values()) | _snapshots(repo_path)):
            rev = "main" if refs.get("main") == commit else next((r for r, c in refs.items() if c == commit), commit)
            snap = repo_path / "snapshots" / commit
            for file in _gguf_files(snap):
                rel = file.relative_to(snap).as_posix()
                if hf_source.is_mmproj(rel):
                    continue
                at = "" if rev == "main" else f"@{rev}"
                yield f"hf:{repo}{at}:{rel}", file


def _refs(repo_path: Path) -> dict[str, str]:
    refs: dict[str, str] = {}
    try:
        for ref in (repo_path / "refs").iterdir():
            if ref.is_file():
                refs[ref.name] = ref.read_text().strip()
    except OSError:
        pass
    return refs


def _snapshots(repo_path: Path) -> set[str]:
    try:
        return {p.name for p in (repo_path / "snapshots").iterdir() if p.is_dir()}
    except OSError:
        return set()


Location = tuple[str, str, Path, "str | None"]  # source, the -m name, the file, why it is broken


def locations() -> list[Location]:
    """Every ``(source, -m name, path, problem)`` a scan finds, cheap (no header read): what
    completion uses. ``problem``: an Ollama model whose manifest or blob is broken."""
    seen: set[str] = set()
    out: list[Location] = []

    def add(source: str, name: str, path: Path) -> None:
        try:
            key = os.path.realpath(path)
        except OSError:
            key = str(path)
        if key not in seen:
            seen.add(key)
            out.append((source, name, path, None))

    for name, path in _hf_entries():
        add("hf", name, path)
    for name, manifest in ollama_source.list_models():
        try:
            found = ollama_source.locate(name)
            add("ollama", name, found.path)
        except Exception as exc:  # noqa: BLE001 - a broken manifest is listed with its reason
            out.append(("ollama", name, manifest, str(exc).split(": ", 1)[-1]))
    dirs = [Path(os.path.expandvars(d)).expanduser() for d in settings_mod.current().model_dirs]
    for source, roots in (("folder", dirs), ("lmstudio", lmstudio_dirs()), ("llama.cpp", [llama_cpp_dir()])):
        for root in roots:
            for path in _gguf_files(root):
                if source == "folder" or not hf_source.is_mmproj(path.name):
                    add(source, str(path), path)
    return out


# ---- what each file is ----------------------------------------------------------------------


def describe(source: str, name: str, path: Path, problem: str | None = None) -> FoundModel:
    """The header facts of one file (and its estimate); a broken file gets its reason. The header is
    read once: ``memory_estimate``'s memoised read, which its estimate then reuses."""
    from .memory_estimate import _header

    text = str(path)
    if problem is not None:
        return FoundModel(name, text, source, 0, error=problem)
    try:
        size = _total_size(path)
        header = _header(text)
    except GGUFError as exc:
        return FoundModel(name, text, source, _size(path), error=str(exc))
    except OSError as exc:
        return FoundModel(name, text, source, _size(path), error=f"cannot read it: {exc.strerror or exc}")
    error = None
    own = _size(path)
    if header.data_end is not None and own < header.data_end:
        error = f"truncated: {own:,} of {header.data_end:,} bytes (an interrupted download?)"
    meta = header.metadata
    if str(meta.get("general.type", "")) == "mmproj" or meta.get("clip.has_vision_encoder") is not None:
        error = error or "a vision projector (mmproj), not a text model"
    file_type = meta.get("general.file_type")
    quant = FILE_TYPES.get(int(file_type)) if isinstance(file_type, int) else None
    if quant is None:
        m = _QUANT_IN_NAME.search(path.name)
        quant = m.group(1).upper() if m else None
    return FoundModel(
        name=name,
        path=text,
        source=source,
        size_bytes=size,
        architecture=header.architecture,
        quantization=quant,
        context_length=header.context_length,
        chat_template=bool(meta.get("tokenizer.chat_template")) if "tokenizer.chat_template" in meta else False,
        estimate_bytes=None if error else estimate(text),
        error=error,
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _total_size(path: Path) -> int:
    """A split GGUF's size is the sum of its parts."""
    m = _SPLIT.search(path.name)
    if m is None:
        return path.stat().st_size
    n, base = int(m.group(2)), path.name[: m.start()]
    return sum(_size(path.with_name(f"{base}-{i:05d}-of-{n:05d}.gguf")) for i in range(1, n + 1))


def estimate(path: str) -> int | None:
    """Bytes a load of ``path`` takes with the current settings (``n_ctx``, KV cache types), from
    ``llm_magic.memory_estimate`` (headers only); None if it cannot tell."""
    from . import memory_estimate

    s = settings_mod.current()
    try:
        return int(memory_estimate.estimate_file(path, s.n_ctx, type_k=s.type_k, type_v=s.type_v).total_bytes)
    except Exception:  # noqa: BLE001 - an estimate is a hint: a file it cannot read shows "-"
        return None


def find_models() -> list[FoundModel]:
    """Every GGUF model on this machine (see the module doc), headers read, nothing loaded."""
    return [describe(*where) for where in locations()]
