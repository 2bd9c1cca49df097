"""Model names that are not paths: ``hf:ORG/REPO:FILE|QUANT`` (the Hugging Face cache, downloaded
when missing) and ``ollama:NAME[:TAG]`` (Ollama's store). ``locate`` says where a model's file is
(or will be); ``fetch`` downloads what is missing, on the cache's loader thread, like a preload;
``progress`` tells a front end how far a download is. Nothing here imports IPython.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from . import hf_download, hf_source, ollama_source
from .errors import ModelNotFound
from .hf_download import DownloadStopped, Progress
from .hf_source import Plan

__all__ = [
    "Located",
    "DownloadStopped",
    "Progress",
    "is_source",
    "locate",
    "resolve",
    "fetch",
    "progress",
    "needs_download",
    "hf_projector",
]


@dataclass(frozen=True)
class Located:
    path: str  # the GGUF to load (for a split GGUF: its first part)
    mmproj: str | None  # a vision projector that comes with the model (Ollama's projector layer)
    name: str  # what status tables show: the source name
    pending: bool  # not on disk yet: ``fetch`` downloads it


_plans: dict[str, Plan] = {}  # file path -> how to download it
_progress: dict[str, Progress] = {}  # file path -> the latest download's progress
_busy: dict[str, threading.Lock] = {}  # file path -> held while it downloads (one transfer per file)
_lock = threading.Lock()


def is_source(name: str | None) -> bool:
    return bool(name) and (hf_source.is_hf(str(name)) or ollama_source.is_ollama(str(name)))


def locate(name: str, *, projector: bool = False) -> Located:
    """Where the model ``name`` (``hf:...`` or ``ollama:...``) is, without downloading anything.
    ``projector``: an ``hf:`` name picks the repo's vision projector (an alias's ``mmproj``)."""
    if ollama_source.is_ollama(name):
        found = ollama_source.locate(name)
        return Located(str(found.path), str(found.mmproj) if found.mmproj else None, found.ref.name, False)
    if not hf_source.is_hf(name):
        raise ModelNotFound(f"{name!r} is neither an hf: nor an ollama: model name")
    plan = hf_source.locate(name, projector=projector)
    path = str(plan.path)
    pending = bool(plan.missing())
    if pending:
        with _lock:
            _plans[path] = plan
    return Located(path, None, plan.ref.name, pending)


def hf_projector(name: str) -> str | None:
    """The path of the vision projector in ``hf:...``'s repository (downloaded by ``fetch`` with
    the model if it is not in the cache yet), or None if the repository has none."""
    plan = hf_source.locate(name)
    if plan.mmproj is None:
        return None
    snap = hf_source.repo_dir(plan.ref.repo) / "snapshots" / plan.commit
    proj = hf_source.Plan(plan.ref, plan.commit, [plan.mmproj], [snap / plan.mmproj], plan.sizes, None)
    if proj.missing():
        with _lock:
            _plans[str(proj.path)] = proj
    return str(proj.path)


def resolve(name: str, download: bool = False) -> str:
    """The path of the model ``name``. A model not downloaded yet is a ``ModelNotFound`` saying
    how to get it, unless ``download`` (then it downloads here, without progress output)."""
    found = locate(name)
    if found.pending:
        if not download:
            raise ModelNotFound(
                f"{found.name} is not downloaded yet: `%llm load {found.name}` (or llm_magic.preload) downloads it"
            )
        fetch(found.path, threading.Event())
    return found.path


def needs_download(path: str) -> bool:
    with _lock:
        plan = _plans.get(path)
    return plan is not None and bool(plan.missing())


def fetch(path: str, abort: threading.Event) -> None:
    """Download ``path`` if a located ``hf:`` model put it on the list and it is still missing.
    Runs on the cache's loader thread; ``abort`` set (unload, interrupt, Stop) stops it with
    ``DownloadStopped``, keeping what came so far for the next try to resume."""
    with _lock:
        plan = _plans.get(path)
        if plan is None:  # not an hf: download (nearly every load): nothing to do
            return
        busy = _busy.setdefault(path, threading.Lock())
    if not plan.missing():
        return
    while not busy.acquire(timeout=0.1):  # another load of the same file is downloading it: wait
        if abort.is_set():
            raise DownloadStopped(f"the download of {plan.ref.name} was stopped")
    try:
        if plan.missing():
            _download(path, plan, abort)
    finally:
        busy.release()


def _download(path: str, plan: Plan, abort: threading.Event) -> None:
    total = sum(plan.sizes.get(f, 0) for f in plan.files) if all(f in plan.sizes for f in plan.files) else 0
    prog = Progress(plan.ref.name, total)
    with _lock:
        _progress[path] = prog
    try:
        hf_download.download(plan, prog, abort)
    except DownloadStopped as exc:
        prog.state, prog.error = "stopped", str(exc)
        raise
    except BaseException as exc:
        prog.state, prog.error = "failed", str(exc)
        raise
    prog.state = "done"
    with _lock:
        _plans.pop(path, None)


def progress(path: str) -> Progress | None:
    """The progress of the latest download of ``path`` (None if it never downloaded here)."""
    with _lock:
        return _progress.get(path)
