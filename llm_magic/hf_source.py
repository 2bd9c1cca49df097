"""``hf:ORG/REPO:FILE`` and ``hf:ORG/REPO:QUANT``: GGUF files from the Hugging Face Hub.

A file already in the Hugging Face cache (``$HF_HUB_CACHE``, ``models--ORG--REPO/refs``,
``snapshots/<commit>/<file>``) is found without the network and without ``huggingface_hub``.
Otherwise the repository's file list is read from the Hub (``$HF_ENDPOINT``, ``$HF_TOKEN``) to
pick the file and know where it will land (a ``Plan``); ``hf_download`` fetches it. Nothing here
imports IPython.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, ModelNotFound

PREFIX = "hf:"
EXAMPLE = "hf:ORG/REPO:FILE.gguf or hf:ORG/REPO:QUANT (e.g. hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M)"
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REVISION = re.compile(r"^[A-Za-z0-9._/-]+$")
HUB_TIMEOUT_S = 10.0  # seconds to wait for the Hub's answer, unless $HF_HUB_ETAG_TIMEOUT says otherwise
FAILURE_TTL_S = 30.0  # a repo the Hub could not be reached for is not asked again for this long
_TRUE = ("1", "on", "yes", "true")


@dataclass(frozen=True)
class HFRef:
    repo: str  # ORG/REPO
    selector: str  # a .gguf file name, a quant such as Q4_K_M, or "" (the repo's only model)
    revision: str = "main"

    @property
    def name(self) -> str:
        rev = "" if self.revision == "main" else f"@{self.revision}"
        return f"{PREFIX}{self.repo}{rev}" + (f":{self.selector}" if self.selector else "")


@dataclass
class Plan:
    """Where an ``hf:`` model is (or will be once downloaded) in the cache."""

    ref: HFRef
    commit: str
    files: list[str]  # the model's files in the repo; the first is the one to load (split: part 1)
    paths: list[Path]  # their snapshot paths, in the same order
    sizes: dict[str, int] = field(default_factory=dict)  # bytes per file, when the Hub said
    mmproj: str | None = None  # a projector file in the same repo (offered for vision)

    @property
    def path(self) -> Path:
        return self.paths[0]

    def missing(self) -> list[str]:
        return [f for f, p in zip(self.files, self.paths, strict=True) if not p.is_file()]


def is_hf(name: str) -> bool:
    return name.startswith(PREFIX)


def parse(name: str) -> HFRef:
    """``hf:ORG/REPO[@REVISION][:FILE|:QUANT]`` -> ``HFRef``; ``ConfigError`` on a malformed one."""
    body = name[len(PREFIX) :].strip()
    repo, _, selector = body.partition(":")
    repo, _, revision = repo.partition("@")
    parts = repo.split("/")
    if not repo or len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts):
        raise ConfigError(f"{name!r} does not name a Hugging Face repository: write {EXAMPLE}")
    if "@" in name and not revision:
        raise ConfigError(f"{name!r}: an empty revision after '@'; write {EXAMPLE}")
    if revision and not valid_revision(revision):
        raise ConfigError(
            f"{name!r}: {revision!r} is not a revision (a branch, tag or commit: letters, digits, '.', '_', '-', '/'); "
            f"write {EXAMPLE}"
        )
    selector = selector.strip()
    if selector.startswith("/") or ".." in selector.split("/") or ":" in selector:
        raise ConfigError(f"{name!r}: {selector!r} is not a file or quant name; write {EXAMPLE}")
    return HFRef(repo=repo, selector=selector, revision=revision or "main")


def valid_revision(revision: str) -> bool:
    """A branch, tag or commit name that stays a name inside ``refs/``: no absolute path, no
    ``..``/``.``/empty part, only ``[A-Za-z0-9._/-]``."""
    return bool(_REVISION.match(revision)) and all(p not in ("", ".", "..") for p in revision.split("/"))


def safe_file_name(file: str) -> bool:
    """A file name from the Hub that stays inside a snapshot folder: relative, no ``..``/``.``/empty
    part, no backslash, no NUL."""
    if not file or file.startswith("/") or "\\" in file or "\0" in file or re.match(r"^[A-Za-z]:", file):
        return False
    return all(p not in ("", ".", "..") for p in file.split("/"))


def inside(path: Path, root: Path) -> bool:
    """``path`` stays in ``root``: as written, and with the symlinks of its folders followed."""
    try:
        if not Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root)):
            return False
        return path.parent.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):
        return False


# ---- the environment, read at each call (huggingface_hub reads its own at import) -------------


def cache_dir() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, or the default."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name``, else ``default``."""
    try:
        value = float(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


def hub_timeout() -> float:
    """Seconds to wait for the Hub: $HF_HUB_ETAG_TIMEOUT (huggingface_hub's own setting), else 10."""
    return env_seconds("HF_HUB_ETAG_TIMEOUT", HUB_TIMEOUT_S)


def token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def repo_dir(repo: str) -> Path:
    return cache_dir() / ("models--" + repo.replace("/", "--"))


# ---- picking the file ------------------------------------------------------------------------


def is_mmproj(file: str) -> bool:
    return "mmproj" in os.path.basename(file).lower()


def split_parts(file: str, files: Sequence[str]) -> list[str] | None:
    """All parts of a split GGUF (``-00001-of-00003.gguf``) from part 1, or None if ``file`` is
    not one. ``ModelNotFound`` if a part is missing from ``files``."""
    m = _SPLIT.search(file)
    if m is None:
        return None
    n, base = int(m.group(2)), file[: m.start()]
    parts = [f"{base}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    lower = {f.lower(): f for f in files}
    missing = [p for p in parts if p.lower() not in lower]
    if missing:
        raise ModelNotFound(f"{file}: split GGUF with parts missing from the repository: {', '.join(missing)}")
    return [lower[p.lower()] for p in parts]


def _model_groups(files: Sequence[str]) -> dict[str, list[str]]:
    """Text-model GGUF files, a split GGUF as one group keyed by its first part."""
    groups: dict[str, list[str]] = {}
    for f in sorted(files):
        if not f.lower().endswith(".gguf") or is_mmproj(f):
            continue
        m = _SPLIT.search(f)
        if m is not None:
            if int(m.group(1)) != 1:
                continue
            try:
                groups[f] = split_parts(f, files) or [f]
            except ModelNotFound:
                groups[f] = [f]
        else:
            groups[f] = [f]
    return groups


def _quant_matches(selector: str, file: str) -> bool:
    return selector.lower() in os.path.basename(file).lower()


def _exact_quant(selector: str, file: str) -> bool:
    stem = _SPLIT.sub("", os.path.basename(file))
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    return selector.lower() in (t.lower() for t in re.split(r"[-.]", stem))


def choose(ref: HFRef, files: Sequence[str], projector: bool = False) -> list[str]:
    """The files of the model ``ref`` names (the first is the one to load); ``ModelNotFound``
    naming the repo's GGUF files when none or several match. ``projector``: pick among the
    vision projectors (mmproj) instead of the text models."""
    groups = _model_groups(files)
    if projector:
        groups = {f: [f] for f in sorted(files) if f.lower().endswith(".gguf") and is_mmproj(f)}
    shown = ", ".join(os.path.basename(g) for g in groups) or "no .gguf model files"
    sel = ref.selector
    if sel.lower().endswith(".gguf"):
        exact = [f for f in files if f == sel] or [f for f in files if os.path.basename(f).lower() == sel.lower()]
        if not exact:
            raise ModelNotFound(f"{ref.name}: {ref.repo} has no file {sel!r}; it has: {shown}")
        if is_mmproj(exact[0]) and not projector:
            raise ModelNotFound(
                f"{ref.name}: {sel} is a vision projector (mmproj), not a text model; use it as 'mmproj' "
                f"of a vision alias. Models in {ref.repo}: {shown}"
            )
        return split_parts(exact[0], files) or [exact[0]]
    if not groups:
        raise ModelNotFound(f"{ref.name}: {ref.repo} has no .gguf model file")
    if not sel:
        if len(groups) == 1:
            return next(iter(groups.values()))
        raise ModelNotFound(f"{ref.name}: {ref.repo} has several models; add a quant or file name: {shown}")
    matches = [g for g in groups if _quant_matches(sel, g)]
    if len(matches) > 1:
        exact = [g for g in matches if _exact_quant(sel, g)]
        matches = exact if len(exact) == 1 else matches
    if not matches:
        raise ModelNotFound(f"{ref.name}: no .gguf file in {ref.repo} matches {sel!r}; it has: {shown}")
    if len(matches) > 1:
        names = ", ".join(os.path.basename(g) for g in matches)
        raise ModelNotFound(f"{ref.name}: {sel!r} matches several files in {ref.repo}: {names}; name one")
    return groups[matches[0]]


def pick_mmproj(files: Sequence[str]) -> str | None:
    """The repo's projector, if any (F16 preferred when there are several)."""
    found = sorted(f for f in files if f.lower().endswith(".gguf") and is_mmproj(f))
    if not found:
        return None
    return next((f for f in found if "f16" in f.lower()), found[0])


# ---- the cache -----------------------------------------------------------------------------


def cached_snapshot(ref: HFRef) -> tuple[str, list[str]] | None:
    """(commit, files present) of ``ref``'s revision in the local cache, or None."""
    root = repo_dir(ref.repo)
    if not valid_revision(ref.revision):
        return None
    commit = ref.revision if COMMIT.match(ref.revision) else None
    if commit is None:
        try:
            commit = (root / "refs" / ref.revision).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
    if not COMMIT.match(commit):  # a refs file that is not a commit hash: not a snapshot of ours
        return None
    snap = root / "snapshots" / commit
    if not snap.is_dir():
        return None
    files = [p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()]
    return commit, files


def _plan(ref: HFRef, commit: str, chosen: list[str], listed: Sequence[str], sizes: dict[str, int]) -> Plan:
    if not COMMIT.match(commit):
        raise ModelNotFound(f"{ref.name}: the Hub gave {commit[:60]!r} as {ref.repo}'s commit, not a commit hash")
    root = repo_dir(ref.repo)
    snap = root / "snapshots" / commit
    mmproj = pick_mmproj([f for f in listed if safe_file_name(f)])
    for f in chosen:
        if not safe_file_name(f) or not inside(snap / f, root):
            raise ModelNotFound(
                f"{ref.name}: {ref.repo} lists the file {f[:200]!r}, whose name leaves its folder; not downloading it"
            )
    return Plan(ref, commit, chosen, [snap / f for f in chosen], sizes, mmproj)


_listings: dict[tuple[str | None, str, str], tuple[str, list[str], dict[str, int]]] = {}
_listings_lock = threading.Lock()
_failures: dict[tuple[str | None, str, str], tuple[float, str]] = {}  # unreachable Hub: when, what it said


def locate(name: str, projector: bool = False) -> Plan:
    """Where ``hf:...`` is: in the cache (no network), or where a download will put it (the Hub's
    file list, read once per process). One-line ``ModelNotFound``/``ConfigError`` otherwise."""
    ref = parse(name)
    cached = cached_snapshot(ref)
    if cached is not None:
        commit, files = cached
        try:
            chosen = choose(ref, files, projector)
            plan = _plan(ref, commit, chosen, files, {})
            if not plan.missing():
                return plan
        except ModelNotFound:
            if offline():
                raise
    if offline():
        where = "is not in the Hugging Face cache" if cached is None else "is not complete in the Hugging Face cache"
        raise ModelNotFound(
            f"{ref.name}: {ref.repo} {where} ({cache_dir()}) and this machine is offline (HF_HUB_OFFLINE is set): "
            "download it while online, or unset HF_HUB_OFFLINE"
        )
    commit, files, sizes = listing(ref)
    return _plan(ref, commit, choose(ref, files, projector), files, sizes)


def listing(ref: HFRef) -> tuple[str, list[str], dict[str, int]]:
    """(commit, files, sizes) of ``ref``'s revision on the Hub (memoised per process)."""
    key = (endpoint(), ref.repo, ref.revision)
    with _listings_lock:
        if key in _listings:
            return _listings[key]
        failed = _failures.get(key)
        if failed is not None and time.monotonic() - failed[0] < FAILURE_TTL_S:
            raise ModelNotFound(failed[1])
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ModelNotFound(
            f"{ref.name} is not in the Hugging Face cache ({cache_dir()}); downloading it needs huggingface_hub: "
            "pip install 'llm-magic[hf]'"
        ) from None
    try:
        info = HfApi(endpoint=endpoint(), token=token()).model_info(
            ref.repo, revision=ref.revision, files_metadata=True, timeout=hub_timeout()
        )
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one line naming the repo
        message = f"{ref.name}: {_hub_error(ref, exc)}"
        if unreachable(exc):
            with _listings_lock:
                _failures[key] = (time.monotonic(), message)
        raise ModelNotFound(message) from None
    siblings: list[Any] = list(info.siblings or [])
    files = [str(s.rfilename) for s in siblings]
    sizes = {str(s.rfilename): int(s.size) for s in siblings if getattr(s, "size", None)}
    sha = str(info.sha or "")
    if not COMMIT.match(sha):
        raise ModelNotFound(f"{ref.name}: the Hub gave {sha[:60]!r} as {ref.repo}'s commit, not a commit hash")
    result = (sha, files, sizes)
    with _listings_lock:
        _listings[key] = result
        _failures.pop(key, None)
    return result


def unreachable(exc: BaseException) -> bool:
    """The Hub could not be reached or did not answer in time (not: it answered no)."""
    kind = type(exc).__name__.lower()
    text = str(exc).lower()
    return (
        kind == "offlinemodeisenabled"
        or "connect" in kind
        or "timeout" in kind
        or "connect" in text
        or "timed out" in text
        or isinstance(exc, (TimeoutError, ConnectionError))
    )


def _hub_error(ref: HFRef, exc: BaseException) -> str:
    kind = type(exc).__name__
    if kind == "RepositoryNotFoundError":
        return f"no repository {ref.repo} on the Hub (or it is private: set HF_TOKEN)"
    if kind == "GatedRepoError":
        return f"{ref.repo} is gated: accept its terms on the Hub and set HF_TOKEN"
    if kind == "RevisionNotFoundError":
        return f"{ref.repo} has no revision {ref.revision!r}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
    if unreachable(exc):
        if "timeout" in kind.lower() or "timed out" in text.lower():
            text = f"no answer in {hub_timeout():g} s ({text}); HF_HUB_ETAG_TIMEOUT sets the wait"
        return (
            f"{ref.repo} is not in the Hugging Face cache ({cache_dir()}) and the Hub cannot be reached: "
            f"this machine is offline? ({text})"
        )
    return f"reading {ref.repo}'s files from the Hub failed: {kind}: {text}"
