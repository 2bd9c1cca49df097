"""After an answer, once: its provenance (``Answer.provenance``, the ``metadata["llm_magic"]`` of
the cell output), its row in the ask log, and the model file's hash (on a daemon thread, so the
first answer never waits for it; the record and whoever registered with ``when_hashed`` are
updated when it is known). Before an ask: ``replay`` answers an identical earlier request from the
log without calling the model (``%%ask --cache``).

Nothing here runs per token: ``Stream`` calls ``record`` once, when it ends.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import ask_log, provenance, runtime
from .answer import Answer

if TYPE_CHECKING:
    from .engines.base import Prepared
    from .request import Stream

log = logging.getLogger("llm_magic")

_hash_lock = threading.Lock()
_waiting: dict[int, list[Callable[[dict[str, Any]], None]]] = {}  # id(provenance) → callbacks, while hashing
# model file → the records still waiting for its hash (a replay that hashes the file settles them)
_unhashed: dict[str, list[Callable[[str | None], None]]] = {}


def model_prompt(prepared: Prepared) -> str:
    """The exact text the model received: the prompt after the chat template or Q/A prompt; chat
    messages (a remote server's, or with images) rendered as ``[role]`` blocks, images as ``[image]``."""
    if prepared.messages is None:
        return prepared.text
    blocks = []
    for message in prepared.messages:
        content = message.get("content")
        if isinstance(content, Sequence) and not isinstance(content, str):
            parts = [
                str(p.get("text", "")) if p.get("type") == "text" else f"[{p.get('type', 'part')}]"
                for p in content
                if isinstance(p, dict)
            ]
            content = "\n".join(parts)
        blocks.append(f"[{message.get('role', 'user')}]\n{content or ''}")
    return "\n\n".join(blocks)


def _parts(stream: Stream) -> dict[str, Any] | None:
    """What a replay must match (None: a conversation's turn, which depends on its history)."""
    if stream.conversation:
        return None
    parts = provenance.request_parts(stream.spec, stream.prompt, stream.max_tokens, stream.sampling, stream.raw)
    parts["system"] = stream.system
    parts["images"] = len(stream.images)
    parts["think"] = stream.think  # --think/--no-think render different prompts
    parts["thinking_tags"] = list(stream.spec.thinking_tags) if stream.spec.thinking_tags is not None else None
    return parts


def record(stream: Stream) -> None:
    """``Answer.prompt``, the provenance and the log row of ``stream.answer``, and the model file's
    hash afterwards: once per answer, never failing it (a record is a bonus, the answer counts)."""
    answer = stream.answer
    if answer is None or stream.prepared is None:  # the model never received a prompt: nothing to record
        return
    try:
        answer.prompt = model_prompt(stream.prepared)
        _record(stream, answer)
    except Exception:
        log.debug("llm_magic: recording the answer failed", exc_info=True)


def _record(stream: Stream, answer: Answer) -> None:
    spec = stream.spec
    meta = provenance.metadata(spec, answer, stream.max_tokens, stream.sampling)
    parts = _parts(stream)
    answer.provenance = meta
    if spec.remote and stream.entry is not None:  # the server's name for the model, when the alias named none
        meta["server_model"] = getattr(stream.entry.model, "model_name", None) or spec.remote_model or None
    key = provenance.request_key(provenance.model_identity(spec, meta.get("sha256")), parts) if parts else None
    path = ask_log.configured_path()
    book = ask_log.get(path)
    if book is not None and path is not None:
        try:
            answer.log_id = book.append(
                {
                    "created": meta["created"],
                    "model": spec.display_name,
                    "model_sha256": meta.get("sha256"),
                    "request_key": key,
                    "prompt": stream.prompt,
                    "model_prompt": answer.prompt,
                    "answer": answer.text,
                    "finish_reason": answer.finish_reason,
                    "n_prompt_tokens": answer.n_prompt_tokens,
                    "n_tokens": answer.n_tokens,
                    "total_s": answer.total_s,
                    "parts": parts or {},
                    "metadata": meta,
                    "thinking": answer.thinking or None,
                    "thinking_tokens": answer.thinking_tokens or None,
                }
            )
            meta["log_id"] = answer.log_id
        except (sqlite3.Error, OSError) as e:
            ask_log.warn_once(path, e)
    if spec.remote or meta.get("sha256"):
        return
    with _hash_lock:
        _waiting[id(meta)] = []

    real = os.path.realpath(spec.path)

    def hashed(digest: str | None) -> None:
        with _hash_lock:
            pending = _unhashed.get(real, [])
            if hashed in pending:
                pending.remove(hashed)
            if not pending:
                _unhashed.pop(real, None)
            waiters = _waiting.pop(id(meta), [])
            if digest is None:  # unreadable, or stopped by cleanup_models(): the next answer hashes again
                return
            meta["sha256"] = digest
        log_id = getattr(answer, "log_id", None)
        if book is not None and path is not None and log_id:
            try:
                key = provenance.request_key(provenance.model_identity(spec, digest), parts) if parts else None
                book.set_hash(log_id, digest, key, meta)
            except (sqlite3.Error, OSError) as e:
                ask_log.warn_once(path, e)
        for waiter in waiters:
            waiter(dict(meta))

    with _hash_lock:
        _unhashed.setdefault(real, []).append(hashed)
    provenance.HASHES.hash_later(spec.path, hashed, busy=_models_busy)


def _settle(path: str, digest: str) -> None:
    """Give ``digest`` to the records of ``path`` still waiting for it (their log rows get their
    replay key) — when a replay hashed the file itself while the background hash was paused."""
    with _hash_lock:
        pending = list(_unhashed.get(os.path.realpath(path), []))
    for record_hash in pending:
        record_hash(digest)


def _models_busy() -> bool:
    """A request running or a model loading: the background hash waits (it must not slow them)."""
    rt = runtime.get()
    if rt.requests():
        return True
    cache = rt.cache_if_open()
    return cache is not None and any(e.state == "loading" for e in cache.entries())


def when_hashed(answer: Answer, then: Callable[[dict[str, Any]], None]) -> bool:
    """Call ``then(metadata)`` once the model file's hash is in the provenance (from the hashing
    thread). False when there is nothing to wait for (the hash is known, or nothing was recorded)."""
    meta = getattr(answer, "provenance", None)
    with _hash_lock:
        waiters = _waiting.get(id(meta)) if meta is not None else None
        if waiters is None:
            return False
        waiters.append(then)
        return True


def replay(stream: Stream) -> Answer | None:
    """The answer to an identical earlier request from the log, or None (0 model calls either way).

    The model file's hash is needed for the key: known from the hash cache after the first time,
    read once (synchronously) otherwise."""
    parts = _parts(stream)
    path = ask_log.configured_path()
    book = ask_log.get(path)
    if parts is None or book is None or path is None:
        return None
    spec = stream.spec
    sha = None
    if not spec.remote:
        try:
            # the first answer's hash may still be running: wait a moment for it, else hash here (a
            # background hash pauses while any model is busy, and a cell must not wait on that)
            sha = provenance.HASHES.wait(spec.path, timeout=1.0)
        except OSError:
            return None
        _settle(spec.path, sha)
    identity = provenance.model_identity(spec, sha)
    key = provenance.request_key(identity, parts)
    if key is None:
        return None
    try:
        found = book.find(key)
    except (sqlite3.Error, OSError) as e:
        ask_log.warn_once(path, e)
        return None
    if found is None:
        return None
    meta = dict(found.metadata)
    meta.update(replayed=True, replayed_from=found.id, log_id=found.id)
    answer = Answer(
        found.answer,
        finish_reason=found.finish_reason,
        n_tokens=found.n_tokens,
        n_prompt_tokens=found.n_prompt_tokens,
        total_s=0.0,
        model=spec.display_name,
        prompt=found.model_prompt,
        thinking=found.thinking or "",
        thinking_tokens=found.thinking_tokens or 0,
        replayed=True,
        provenance=meta,
        log_id=found.id,
    )
    return answer


def replay_note(answer: Answer) -> str:
    meta = getattr(answer, "provenance", None) or {}
    created = str(meta.get("created") or "")
    try:
        when = datetime.fromisoformat(created).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        when = created or "earlier"
    return f"replayed from the ask log (#{meta.get('log_id')}, answered {when}); --fresh asks the model again"
