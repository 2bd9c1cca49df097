"""How an answer was made: ``metadata["llm_magic"]`` of every ``%%ask`` output, the log's record
and the replay key.

A model file's sha256 is computed once per file: kept in memory and in a small JSON file beside the
default ask log (``file-hashes.json``), both keyed by path, inode, size and mtime, so a kernel
restart does not read a 4 GB file again. Hashing runs on a daemon thread after an answer
(``hash_later``), at the lowest CPU priority and pausing while a model loads or generates: it never
delays an answer; whoever waits for it gets a callback.
A remote model is identified by its URL and the server's model name instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .answer import Answer
    from .specs import ModelSpec

log = logging.getLogger("llm_magic")

HASH_FILE = "file-hashes.json"
CHUNK = 8 << 20
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty")


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class FileHashes:
    """sha256 of model files, cached by (path, inode, size, mtime) in memory and on disk."""

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory
        self._lock = threading.Lock()
        self._memory: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._disk: dict[str, Any] | None = None
        self._running: dict[str, list[Callable[[str | None], None]]] = {}
        self._done: dict[str, threading.Event] = {}  # set once a background hash and its callbacks ran
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def _file(self) -> Path:
        if self._dir is not None:
            return self._dir / HASH_FILE
        from .ask_log import default_path  # beside the default ask log

        return default_path().parent / HASH_FILE

    def _load_disk(self) -> dict[str, Any]:
        if self._disk is None:
            try:
                data = json.loads(self._file().read_text())
                self._disk = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._disk = {}
        return self._disk

    def known(self, path: str) -> str | None:
        """The file's sha256 if it was computed before for this very file (same inode, size, mtime)."""
        path = os.path.realpath(path)
        key = _stat_key(path)
        if key is None:
            return None
        with self._lock:
            hit = self._memory.get(path)
            if hit is not None and hit[0] == key:
                return hit[1]
            row = self._load_disk().get(path)
            if isinstance(row, dict) and (row.get("inode"), row.get("size"), row.get("mtime_ns")) == key:
                digest = str(row.get("sha256"))
                self._memory[path] = (key, digest)
                return digest
        return None

    def compute(self, path: str, busy: Callable[[], bool] | None = None) -> str:
        """Read the whole file (in 8 MB chunks: hashlib releases the GIL) and remember its sha256.
        ``busy``: checked between chunks; while it is true (a model loading or generating) we wait."""
        path = os.path.realpath(path)
        known = self.known(path)
        if known is not None:
            return known
        key = _stat_key(path)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                while busy is not None and busy() and not self._stop.is_set():
                    time.sleep(0.05)
                if busy is not None and self._stop.is_set():  # a background hash, stopped by cleanup
                    raise OSError(f"hashing {path} was stopped")
        digest = h.hexdigest()
        if key is not None and _stat_key(path) == key:  # unchanged while we read it
            self._remember(path, key, digest)
        return digest

    def _remember(self, path: str, key: tuple[int, int, int], digest: str) -> None:
        with self._lock:
            self._memory[path] = (key, digest)
            disk = self._load_disk()
            disk[path] = {"inode": key[0], "size": key[1], "mtime_ns": key[2], "sha256": digest}
            target = self._file()
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(disk, indent=1))
                os.replace(tmp, target)
            except OSError as e:  # a read-only home: the hash stays in memory for this process
                log.debug("llm_magic: cannot write %s: %s", target, e)

    def hash_later(
        self, path: str, then: Callable[[str | None], None] | None = None, busy: Callable[[], bool] | None = None
    ) -> None:
        """Compute the sha256 on a daemon thread (one per file), pausing while ``busy()``, then call
        ``then(digest)`` (``then(None)`` when the file could not be read or cleanup stopped it)."""
        path = os.path.realpath(path)
        known = self.known(path)
        if known is not None:
            if then is not None:
                then(known)
            return
        with self._lock:
            waiting = self._running.get(path)
            if waiting is not None:
                if then is not None:
                    waiting.append(then)
                return
            self._running[path] = [then] if then is not None else []
            done = self._done[path] = threading.Event()

        def work() -> None:
            _lowest_priority()
            digest = None
            try:
                digest = self.compute(path, busy)
            except OSError as e:
                log.debug("llm_magic: cannot hash %s: %s", path, e)
            with self._lock:
                callbacks = self._running.pop(path, [])
            for callback in callbacks:
                try:
                    callback(digest)
                except Exception:  # a display or log update failing must not stop the others
                    log.debug("llm_magic: a hash callback failed", exc_info=True)
            done.set()

        thread = threading.Thread(target=work, name="llm_magic-hash", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the background hashes (``cleanup_models()``): each ends within one chunk. What they
        had not finished is hashed again after the next answer."""
        with self._lock:
            threads, self._threads = self._threads, []
        if not threads:
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.clear()

    def wait(self, path: str, timeout: float | None = None) -> str:
        """The file's sha256: from the cache, from a background hash running now (waiting for it
        and for its callbacks, which update the log), or computed here."""
        path = os.path.realpath(path)
        with self._lock:
            done = self._done.get(path) if path in self._running else None
        if done is not None:
            done.wait(timeout)
        return self.compute(path)

    def pending(self, path: str) -> bool:
        with self._lock:
            return os.path.realpath(path) in self._running


def _lowest_priority() -> None:
    """Nice this thread to 19 (Linux schedules threads one by one): hashing a big file must not take
    CPU from a model loading or generating on the same cores."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux: the thread keeps the process's priority
        pass


HASHES = FileHashes()


def versions() -> dict[str, str]:
    """llm_magic's version, llama-cpp-python's and the llama.cpp library's it was built with."""
    out = {"llm_magic": __version__}
    try:
        import llama_cpp

        out["llama_cpp_python"] = str(llama_cpp.__version__)
        version = getattr(llama_cpp, "llama_version", None)
        if version is not None:
            out["llama_cpp"] = version().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - versions are informative: a broken binding still answers
        pass
    return out


_VERSIONS: dict[str, str] = {}


def model_identity(spec: ModelSpec, sha256: str | None = None) -> dict[str, Any]:
    """What names the model: file and sha256 (local), or URL and the server's model name (remote)."""
    if spec.remote:
        return {"model": spec.display_name, "base_url": spec.base_url, "remote_model": spec.remote_model or None}
    key = _stat_key(spec.path)
    out: dict[str, Any] = {
        "model": spec.display_name,
        "file": os.path.basename(spec.path),
        "size_bytes": key[1] if key else None,
        "sha256": sha256 or HASHES.known(spec.path),
    }
    if spec.mmproj:
        out["mmproj"] = os.path.basename(spec.mmproj)
    return out


def request_parts(
    spec: ModelSpec, final_prompt: str, max_tokens: int, sampling: Mapping[str, Any], raw: bool
) -> dict[str, Any]:
    """Everything a replay must match besides the model's identity (the prompt is the final one:
    interpolated, with the cells and the system prompt in it)."""
    options = {k: sampling.get(k) for k in (*SAMPLING, "stop", "draft")}
    grammar = sampling.get("grammar")
    return {
        "prompt": final_prompt,
        "max_tokens": max_tokens,
        "seed": sampling.get("seed"),
        "sampling": options,
        "grammar": hashlib.sha256(grammar.encode("utf-8", "replace")).hexdigest() if grammar else None,
        "raw": raw,
        "chat": spec.chat,
        "remote_model": spec.remote_model,
        "endpoint": spec.endpoint if spec.remote else None,
    }


def request_key(identity: Mapping[str, Any], parts: Mapping[str, Any]) -> str | None:
    """The replay key: a sha256 over the model's identity and the request; None until a local
    model's file hash is known."""
    if "base_url" in identity:
        who = ["remote", identity["base_url"], identity.get("remote_model")]
    elif identity.get("sha256"):
        who = ["file", identity["sha256"]]
    else:
        return None
    blob = json.dumps([who, parts], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def metadata(
    spec: ModelSpec,
    answer: Answer,
    max_tokens: int,
    sampling: Mapping[str, Any],
    sha256: str | None = None,
) -> dict[str, Any]:
    """``metadata["llm_magic"]`` of an answer: model, sampling, seed, limits, outcome, timings, versions."""
    if not _VERSIONS:
        _VERSIONS.update(versions())
    timings = {
        k: getattr(answer, k, None) for k in ("load_wait_s", "queue_s", "prompt_s", "ttft_s", "total_s", "tokens_per_s")
    }
    return {
        **model_identity(spec, sha256),
        "sampling": {k: sampling.get(k) for k in (*SAMPLING, "stop", "draft") if sampling.get(k) is not None},
        "seed": sampling.get("seed"),
        "max_tokens": max_tokens,
        "grammar": bool(sampling.get("grammar")),
        "finish_reason": answer.finish_reason,
        "n_prompt_tokens": answer.n_prompt_tokens,
        "n_tokens": answer.n_tokens,
        "timings": {k: round(v, 6) if isinstance(v, float) else v for k, v in timings.items()},
        "versions": dict(_VERSIONS),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "replayed": False,
    }
