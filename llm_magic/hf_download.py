"""Downloading an ``hf:`` model's files into the Hugging Face cache layout, on a loader thread:
progress for front ends, Stop within one read, and resuming a stopped file with an HTTP Range
request (huggingface_hub 1.x/2.x's own ``hf_hub_download`` starts a stopped file over). The Hub's
metadata (etag, size, where to fetch) comes from ``huggingface_hub.get_hf_file_metadata``."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import LLMMagicError, ModelLoadError
from .hf_source import (
    COMMIT,
    Plan,
    endpoint,
    env_seconds,
    hub_timeout,
    inside,
    repo_dir,
    safe_file_name,
    token,
    unreachable,
    valid_revision,
)


class DownloadStopped(LLMMagicError):
    """A download was stopped (interrupt, Stop, ``%llm unload``); the next try resumes it."""

    user_error = True


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
_ETAG = re.compile(r"^[A-Za-z0-9._-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def download_timeout() -> float:
    """Seconds without a byte before a transfer fails: $HF_HUB_DOWNLOAD_TIMEOUT, else ``TIMEOUT_S``."""
    return env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", TIMEOUT_S)


def download(plan: Plan, progress: Progress, abort: threading.Event) -> Path:
    """Download the plan's missing files into the Hugging Face cache layout (``blobs/<etag>``,
    ``snapshots/<commit>/<file>``, ``refs/<revision>``); returns the path to load. Runs on a loader
    thread; ``DownloadStopped`` when ``abort`` is set. A stopped or failed transfer keeps its
    ``blobs/<etag>.incomplete`` file and the next try asks only for the rest (an HTTP Range
    request): huggingface_hub 1.x/2.x's own ``hf_hub_download`` starts over, so we stream the file
    ourselves, with the Hub's metadata (etag, size, commit) from ``get_hf_file_metadata``."""
    ref = plan.ref
    root = repo_dir(ref.repo)
    if not COMMIT.match(plan.commit):
        raise ModelLoadError(f"{ref.name}: {plan.commit[:60]!r} is not a commit hash; not downloading {ref.repo}")
    for file, target in zip(plan.files, plan.paths, strict=True):
        if not safe_file_name(file) or not inside(target, root / "snapshots" / plan.commit):
            raise ModelLoadError(f"{ref.name}: {ref.repo}'s file {file[:200]!r} leaves its folder; not downloading it")
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
            if unreachable(exc):
                raise ModelLoadError(
                    f"downloading {file} from {ref.repo} failed: the Hub cannot be reached or did not answer "
                    f"(this machine is offline? {type(exc).__name__}: {text}); the next try resumes it"
                ) from None
            raise ModelLoadError(f"downloading {file} from {ref.repo} failed: {type(exc).__name__}: {text}") from None
    ref_file = root / "refs" / ref.revision
    if not valid_revision(ref.revision) or not inside(ref_file, root / "refs"):
        raise ModelLoadError(f"{ref.name}: {ref.revision!r} is not a revision name")
    if not COMMIT.match(ref.revision):  # so the next lookup finds it offline, as huggingface_hub does
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        if not ref_file.exists() or ref_file.read_text().strip() != plan.commit:
            ref_file.write_text(plan.commit)
    return plan.path


def _download_file(plan: Plan, file: str, target: Path, progress: Progress, abort: threading.Event) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(plan.ref.repo, file, revision=plan.commit, endpoint=endpoint())
    meta = get_hf_file_metadata(url, token=token(), timeout=hub_timeout())
    etag = str(meta.etag or "").strip('"')
    if not _ETAG.match(etag) or etag in (".", ".."):
        raise ModelLoadError(f"downloading {file} from {plan.ref.repo}: the Hub gave no usable ETag")
    blobs = repo_dir(plan.ref.repo) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    blob, partial = blobs / etag, blobs / f"{etag}.incomplete"
    if not (inside(blob, blobs) and inside(target, repo_dir(plan.ref.repo))):
        raise ModelLoadError(f"downloading {file} from {plan.ref.repo}: its path leaves the cache; not downloading it")
    size = meta.size if meta.size is not None else plan.sizes.get(file)
    before = progress.done
    locks = repo_dir(plan.ref.repo).parent / ".locks" / repo_dir(plan.ref.repo).name  # huggingface_hub's place
    locks.mkdir(parents=True, exist_ok=True)
    with _file_lock(locks / f"{etag}.lock", abort, plan.ref.name):  # another kernel may fetch it too
        if not (blob.is_file() and (size is None or blob.stat().st_size == size)):
            _transfer(plan, file, url, meta, size, etag, partial, blob, progress, abort)
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


@contextlib.contextmanager
def _file_lock(path: Path, abort: threading.Event, name: str) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes (POSIX ``flock``; elsewhere none), waited
    for in slices so that a Stop still acts."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock between processes
        yield
        return
    with open(path, "a") as f:
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if abort.wait(0.1):
                    raise DownloadStopped(f"the download of {name} was stopped") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _transfer(
    plan: Plan,
    file: str,
    url: str,
    meta: Any,
    size: int | None,
    etag: str,
    partial: Path,
    blob: Path,
    progress: Progress,
    abort: threading.Event,
) -> None:
    """Stream ``file`` into ``partial`` (appending to what a stopped try left), then move it to ``blob``.
    A file of unknown size is finished only if its body ended cleanly (its Content-Length or
    chunked framing complete) or its sha256 matches a sha256 ETag (the Hub's LFS files); otherwise it
    stays ``.incomplete``."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined,unused-ignore]

    before = progress.done
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
        response = urllib.request.urlopen(request, timeout=download_timeout())
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or size is None or have != size:
            raise
        response = None  # the partial file is already whole
    clean = response is None
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
            length = response.headers.get("Content-Length")
            framed = bool(getattr(response, "chunked", False)) or (length is not None and length.isdigit())
            expected = (have if response.status == 206 else 0) + int(length) if length and length.isdigit() else None
            clean = framed and (expected is None or got == expected)
    if size is None:
        got_bytes = partial.stat().st_size
        if _SHA256.match(etag):
            if _sha256(partial) != etag:
                if clean:  # whole, but not the file the Hub named: start it over next time
                    partial.unlink(missing_ok=True)
                    raise ModelLoadError(
                        f"downloading {file} from {plan.ref.repo}: the {got_bytes:,} bytes received do not match "
                        "the file's sha256 (the next try downloads it again)"
                    )
                raise ModelLoadError(
                    f"downloading {file} from {plan.ref.repo}: the download broke off after {got_bytes:,} bytes "
                    "(the Hub gave no size; the next try resumes it)"
                )
        elif not clean:
            raise ModelLoadError(
                f"downloading {file} from {plan.ref.repo}: the download broke off after {got_bytes:,} bytes "
                "(the Hub gave no size and the transfer did not end cleanly; the next try resumes it)"
            )
    if size is not None and partial.stat().st_size != size:
        raise ModelLoadError(
            f"downloading {file} from {plan.ref.repo}: got {partial.stat().st_size:,} of {size:,} bytes "
            "(the next try resumes it)"
        )
    os.replace(partial, blob)


def _sha256(path: Path) -> str:
    from .default_model import sha256_of

    return sha256_of(path)
