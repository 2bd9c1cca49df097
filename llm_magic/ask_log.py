"""The ask log: every answer appended to a local SQLite database (as Simon Willison's ``llm`` does),
searchable with ``%llm log --search``, and the store ``%%ask --cache`` replays from.

One connection per process and database (WAL, ``synchronous=NORMAL``: an append is a fraction of
a millisecond), an FTS5 index over prompt and answer when SQLite has it (``LIKE`` otherwise).
``AskMagics.log``: True (the default file, ``$LLM_MAGIC_DATA_DIR`` or
``~/.local/share/llm_magic/log.db``), a path, or False (off). A locked or corrupt database or a
read-only home gives one warning per process and database; the ask goes on without its record.
API keys are never written: URLs lose their user info and query, and the values of the
environment variables that models name as ``api_key_env`` are blanked from every field.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import settings as settings_mod

log = logging.getLogger("llm_magic")

SCHEMA = """
CREATE TABLE IF NOT EXISTS asks (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,
    model TEXT,
    model_sha256 TEXT,
    request_key TEXT,
    prompt TEXT,
    model_prompt TEXT,
    answer TEXT,
    finish_reason TEXT,
    n_prompt_tokens INTEGER,
    n_tokens INTEGER,
    total_s REAL,
    parts TEXT,
    metadata TEXT,
    thinking TEXT,
    thinking_tokens INTEGER
);
CREATE INDEX IF NOT EXISTS asks_request_key ON asks(request_key);
"""
FTS = """
CREATE VIRTUAL TABLE IF NOT EXISTS asks_fts USING fts5(prompt, answer, content='asks', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS asks_ai AFTER INSERT ON asks BEGIN
    INSERT INTO asks_fts(rowid, prompt, answer) VALUES (new.id, new.prompt, new.answer);
END;
CREATE TRIGGER IF NOT EXISTS asks_ad AFTER DELETE ON asks BEGIN
    INSERT INTO asks_fts(asks_fts, rowid, prompt, answer) VALUES ('delete', old.id, old.prompt, old.answer);
END;
"""
COLUMNS = (
    "id, created, model, model_sha256, request_key, prompt, model_prompt, answer, finish_reason, "
    "n_prompt_tokens, n_tokens, total_s, parts, metadata, thinking, thinking_tokens"
)
ADDED_COLUMNS = {"thinking": "TEXT", "thinking_tokens": "INTEGER"}  # not in logs written before them
REPLAYABLE = ("stop", "length")
SECRET_ENVS = ("OPENAI_API_KEY",)


def default_path() -> Path:
    base = os.environ.get("LLM_MAGIC_DATA_DIR")
    if base:
        return Path(base).expanduser() / "log.db"
    data = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(data).expanduser() / "llm_magic" / "log.db"


def configured_path(value: Any = None) -> Path | None:
    """The log file ``AskMagics.log`` names (None: logging is off)."""
    if value is None:
        value = settings_mod.current().log
    if value is True:
        return default_path()
    if value is False or not str(value).strip():
        return None
    return Path(str(value)).expanduser()


@dataclass(frozen=True)
class Record:
    id: int
    created: str
    model: str
    model_sha256: str | None
    request_key: str | None
    prompt: str
    model_prompt: str
    answer: str
    finish_reason: str
    n_prompt_tokens: int
    n_tokens: int
    total_s: float | None
    parts: dict[str, Any]
    metadata: dict[str, Any]
    thinking: str | None = None  # a reasoning model's thinking
    thinking_tokens: int | None = None


def _record(row: tuple[Any, ...]) -> Record:
    values = list(row)
    for i in (12, 13):
        try:
            values[i] = json.loads(values[i]) if values[i] else {}
        except ValueError:
            values[i] = {}
    return Record(*values)


def _secrets() -> list[str]:
    names = set(SECRET_ENVS)
    try:
        names.update(str(o["api_key_env"]) for o in settings_mod.current().aliases().values() if o.get("api_key_env"))
    except Exception:  # noqa: BLE001 - odd settings must not stop the log: the defaults still apply
        pass
    return [v for v in (os.environ.get(n) for n in names) if v and len(v) >= 6]


_URL_USER = re.compile(r"(https?://)[^/@\s]+@")
_URL_KEY = re.compile(r"([?&](?:api[-_]?key|key|token|access[-_]token|auth|sig|signature)=)[^&#\s]+", re.IGNORECASE)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (str, dict or list) with API keys blanked, and URLs without user info or key-like
    query parameters (``?api-key=…``)."""
    if isinstance(value, str):
        value = _URL_KEY.sub(r"\1[redacted]", _URL_USER.sub(r"\1", value))
        for secret in secrets:
            value = value.replace(secret, "[api key]")
        return value
    if isinstance(value, Mapping):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    return value


class AskLog:
    """One SQLite log file; thread-safe (a lock around one connection)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.fts = False

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=0.2, check_same_thread=False, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(SCHEMA)
                have = {row[1] for row in conn.execute("PRAGMA table_info(asks)")}
                for name, kind in ADDED_COLUMNS.items():
                    if name not in have:
                        conn.execute(f"ALTER TABLE asks ADD COLUMN {name} {kind}")
                try:
                    conn.executescript(FTS)
                    self.fts = True
                except sqlite3.OperationalError as e:  # SQLite built without FTS5: LIKE searches
                    if "fts5" not in str(e).lower():
                        raise
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def append(self, row: Mapping[str, Any]) -> int:
        secrets = _secrets()
        clean = {k: redact(v, secrets) for k, v in row.items()}
        for key in ("parts", "metadata"):
            clean[key] = json.dumps(clean.get(key) or {}, default=str, ensure_ascii=False)
        names = [k for k in clean if k in COLUMNS.split(", ")]
        sql = f"INSERT INTO asks ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        with self._lock:
            conn = self._connect()
            cursor = conn.execute(sql, [_text(clean[k]) for k in names])
            return int(cursor.lastrowid or 0)

    def set_hash(self, row_id: int, sha256: str, request_key: str | None, metadata: Mapping[str, Any]) -> None:
        blob = json.dumps(redact(dict(metadata), _secrets()), default=str, ensure_ascii=False)
        with self._lock:
            self._connect().execute(
                "UPDATE asks SET model_sha256 = ?, request_key = ?, metadata = ? WHERE id = ?",
                (sha256, request_key, blob, row_id),
            )

    def find(self, request_key: str) -> Record | None:
        """The latest complete answer to this very request."""
        with self._lock:
            row = (
                self._connect()
                .execute(
                    f"SELECT {COLUMNS} FROM asks WHERE request_key = ? AND finish_reason IN (?, ?) "
                    "ORDER BY id DESC LIMIT 1",
                    (request_key, *REPLAYABLE),
                )
                .fetchone()
            )
        return _record(row) if row else None

    def recent(self, n: int = 10, search: str | None = None) -> list[Record]:
        """The latest ``n`` records, newest first; with ``search``: those whose prompt or answer has
        every word of it (FTS5 prefix match; a substring match without FTS5)."""
        with self._lock:
            conn = self._connect()
            if not search:
                rows = conn.execute(f"SELECT {COLUMNS} FROM asks ORDER BY id DESC LIMIT ?", (n,)).fetchall()
            elif self.fts:
                query = " ".join('"' + w.replace('"', '""') + '"*' for w in search.split())
                cols = ", ".join(f"a.{c}" for c in COLUMNS.split(", "))
                rows = conn.execute(
                    f"SELECT {cols} FROM asks_fts JOIN asks a ON a.id = asks_fts.rowid "
                    "WHERE asks_fts MATCH ? ORDER BY a.id DESC LIMIT ?",
                    (query, n),
                ).fetchall()
            else:
                like = f"%{search}%"
                rows = conn.execute(
                    f"SELECT {COLUMNS} FROM asks WHERE prompt LIKE ? OR answer LIKE ? ORDER BY id DESC LIMIT ?",
                    (like, like, n),
                ).fetchall()
        return [_record(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT count(*) FROM asks").fetchone()[0])


def _text(value: Any) -> Any:
    """SQLite takes str, but not one with lone surrogates."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


_logs: dict[Path, AskLog] = {}
_warned: set[tuple[Path, str]] = set()
_logs_lock = threading.Lock()


def get(path: Path | None = None) -> AskLog | None:
    """The process's connection to the configured log (None when logging is off)."""
    path = path or configured_path()
    if path is None:
        return None
    with _logs_lock:
        found = _logs.get(path)
        if found is None:
            found = _logs[path] = AskLog(path)
        return found


def warn_once(path: Path, error: BaseException) -> None:
    """One warning per process and database: the ask goes on without its record."""
    kind = type(error).__name__
    if (path, kind) in _warned:
        log.debug("llm_magic: ask log %s: %s", path, error)
        return
    _warned.add((path, kind))
    log.warning(
        "llm_magic: the ask log %s cannot be used (%s: %s); answers go on without it (AskMagics.log = False turns it off)",
        path,
        kind,
        str(error).splitlines()[0] if str(error) else "",
    )


def close_all() -> None:
    with _logs_lock:
        for one in _logs.values():
            one.close()
        _logs.clear()
