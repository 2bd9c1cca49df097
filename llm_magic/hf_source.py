"""``hf:ORG/REPO:FILE`` and ``hf:ORG/REPO:QUANT``: GGUF files from the Hugging Face Hub.

A file already in the Hugging Face cache (``$HF_HUB_CACHE``, ``models--ORG--REPO/refs``,
``snapshots/<commit>/<file>``) is found without the network and without ``huggingface_hub``.
Otherwise the repository's file list is read from the Hub (``$HF_ENDPOINT``, ``$HF_TOKEN``) to
pick the file and know where it will land; the download itself (``download``) runs on a loader
thread through ``huggingface_hub.hf_hub_download``, reports its progress to a ``Progress`` and
stops when asked; a stopped download resumes where it stopped. Nothing here imports IPython.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, LLMMagicError, ModelLoadError, ModelNotFound

PREFIX = "hf:"
EXAMPLE = "hf:ORG/REPO:FILE.gguf or hf:ORG/REPO:QUANT (e.g. hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M)"
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = ("1", "on", "yes", "true")


class DownloadStopped(LLMMagicError):
    """A download was stopped (interrupt, Stop, ``%llm unload``); the next try resumes it."""

    user_error = True


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
    selector = selector.strip()
    if selector.startswith("/") or ".." in selector.split("/") or ":" in selector:
        raise ConfigError(f"{name!r}: {selector!r} is not a file or quant name; write {EXAMPLE}")
    return HFRef(repo=repo, selector=selector, revision=revision or "main")


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
    commit = ref.revision if _COMMIT.match(ref.revision) else None
    if commit is None:
        try:
            commit = (root / "refs" / ref.revision).read_text().strip()
        except OSError:
            return None
    snap = root / "snapshots" / commit
    if not snap.is_dir():
        return None
    files = [p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()]
    return commit, files


def _plan(ref: HFRef, commit: str, chosen: list[str], listed: Sequence[str], sizes: dict[str, int]) -> Plan:
    snap = repo_dir(ref.repo) / "snapshots" / commit
    return Plan(ref, commit, chosen, [snap / f for f in chosen], sizes, pick_mmproj(listed))


_listings: dict[tuple[str | None, str, str], tuple[str, list[str], dict[str, int]]] = {}
_listings_lock = threading.Lock()


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
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ModelNotFound(
            f"{ref.name} is not in the Hugging Face cache ({cache_dir()}); downloading it needs huggingface_hub: "
            "pip install 'llm-magic[hf]'"
        ) from None
    try:
        info = HfApi(endpoint=endpoint(), token=token()).model_info(
            ref.repo, revision=ref.revision, files_metadata=True
        )
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one line naming the repo
        raise ModelNotFound(f"{ref.name}: {_hub_error(ref, exc)}") from None
    siblings: list[Any] = list(info.siblings or [])
    files = [s.rfilename for s in siblings]
    sizes = {s.rfilename: int(s.size) for s in siblings if getattr(s, "size", None)}
    result = (str(info.sha or ref.revision), files, sizes)
    with _listings_lock:
        _listings[key] = result
    return result


def _hub_error(ref: HFRef, exc: BaseException) -> str:
    kind = type(exc).__name__
    if kind == "RepositoryNotFoundError":
        return f"no repository {ref.repo} on the Hub (or it is private: set HF_TOKEN)"
    if kind == "GatedRepoError":
        return f"{ref.repo} is gated: accept its terms on the Hub and set HF_TOKEN"
    if kind == "RevisionNotFoundError":
        return f"{ref.repo} has no revision {ref.revision!r}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
    if kind in ("OfflineModeIsEnabled",) or "connect" in kind.lower() or "connect" in text.lower():
        return (
            f"{ref.repo} is not in the Hugging Face cache ({cache_dir()}) and the Hub cannot be reached: "
            f"this machine is offline? ({text})"
        )
    return f"reading {ref.repo}'s files from the Hub failed: {kind}: {text}"


# ---- downloading ------------------------------------------------------------------------------


class Progress:
    """A download's progress, written by the loader thread, read by front ends."""

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        self.total = total  # bytes of every file, 0 if unknown
        self.done = 0  # bytes on disk so far (a resumed file counts what it had)
        self.resumed_from = 0  # bytes a stopped download had left, picked up again
        self.file = ""
        self.state = "downloading"  # downloading, done, stopped, failed
        self.error: str | None = None

    def text(self) -> str:
        mb = 1 << 20
        of = f" / {self.total / mb:,.1f} MB" if self.total else " MB"
        return f"{self.done / mb:,.1f}{of}"


CHUNK = 1 << 18  # bytes per read: Stop acts within one chunk
TIMEOUT_S = 30.0  # no byte for this long: the download fails (and resumes on the next try)


def download(plan: Plan, progress: Progress, abort: threading.Event) -> Path:
    """Download the plan's missing files into the Hugging Face cache layout (``blobs/<etag>``,
    ``snapshots/<commit>/<file>``, ``refs/<revision>``); returns the path to load. Runs on a loader
    thread; ``DownloadStopped`` when ``abort`` is set. A stopped or failed transfer keeps its
    ``blobs/<etag>.incomplete`` file and the next try asks only for the rest (an HTTP Range
    request): huggingface_hub 1.x/2.x's own ``hf_hub_download`` starts over, so we stream the file
    ourselves, with the Hub's metadata (etag, size, commit) from ``get_hf_file_metadata``."""
    ref = plan.ref
    progress.done = sum(p.stat().st_size for p in plan.paths if p.is_file())
    for file, target in zip(plan.files, plan.paths, strict=True):
        if target.is_file():
            continue
        if abort.is_set():
            raise DownloadStopped(f"the download of {ref.name} was stopped")
        progress.file = file
        try:
            _download_file(plan, file, target, progress, abort)
        except (DownloadStopped, ModelLoadError):
            raise
        except Exception as exc:  # noqa: BLE001 - a failed download is one line naming the repo
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelLoadError(f"downloading {file} from {ref.repo} failed: {type(exc).__name__}: {text}") from None
    ref_file = repo_dir(ref.repo) / "refs" / ref.revision
    if not _COMMIT.match(ref.revision):  # so the next lookup finds it offline, as huggingface_hub does
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        if not ref_file.exists() or ref_file.read_text().strip() != plan.commit:
            ref_file.write_text(plan.commit)
    return plan.path


def _download_file(plan: Plan, file: str, target: Path, progress: Progress, abort: threading.Event) -> None:
    import urllib.error
    import urllib.parse
    import urllib.request

    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined,unused-ignore]

    url = hf_hub_url(plan.ref.repo, file, revision=plan.commit, endpoint=endpoint())
    meta = get_hf_file_metadata(url, token=token())
    etag = str(meta.etag or "").strip('"')
    if not etag or "/" in etag:
        raise ModelLoadError(f"downloading {file} from {plan.ref.repo}: the Hub gave no usable ETag")
    blobs = repo_dir(plan.ref.repo) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    blob, partial = blobs / etag, blobs / f"{etag}.incomplete"
    size = meta.size
    before = progress.done
    if not (blob.is_file() and (size is None or blob.stat().st_size == size)):
        have = partial.stat().st_size if partial.is_file() else 0
        progress.resumed_from += have
        headers = build_hf_headers(token=token())
        location = str(meta.location or url)
        if urllib.parse.urlsplit(location).netloc != urllib.parse.urlsplit(url).netloc:
            headers.pop("authorization", None)  # a CDN's signed URL takes no Hub token
        headers["Accept-Encoding"] = "identity"
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(location, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or size is None or have != size:
                raise
            response = None  # the partial file is already whole
        if response is not None:
            with response, open(partial, "ab" if have and response.status == 206 else "wb") as out:
                got = have if response.status == 206 else 0
                while True:
                    progress.done = before + got
                    if abort.is_set():
                        raise DownloadStopped(f"the download of {plan.ref.name} was stopped at {progress.text()}")
                    chunk = response.read1(CHUNK)  # what has arrived: progress and Stop act per read
                    if not chunk:
                        break
                    out.write(chunk)
                    got += len(chunk)
        if size is not None and partial.stat().st_size != size:
            raise ModelLoadError(
                f"downloading {file} from {plan.ref.repo}: got {partial.stat().st_size:,} of {size:,} bytes "
                "(the next try resumes it)"
            )
        os.replace(partial, blob)
    target.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(blob, target.parent)
    try:
        os.symlink(relative, target)
    except FileExistsError:
        pass
    except OSError:  # no symlinks here (some Windows setups): a copy, as huggingface_hub does
        import shutil

        shutil.copyfile(blob, target)
    progress.done = before + blob.stat().st_size
