"""A loopback stand-in for the Hugging Face Hub, answering the way the Hub does for what
huggingface_hub and llm_magic ask: the repo listing (``/api/models/ORG/REPO[/revision/REV]`` with
``sha`` and ``siblings``), and ``HEAD``/``GET /ORG/REPO/resolve/REV/FILE`` with ``X-Repo-Commit``,
``ETag``/``X-Linked-Etag``, ``X-Linked-Size``, ``Content-Length`` and ``Range`` (206 +
``Content-Range``). Unknown repos and files get 404 with the Hub's ``X-Error-Code``.

``stall_at``: a GET stops sending at that byte until ``release()`` (a download caught mid-file);
``cut_at``: a GET drops the connection at that byte (a network failure mid-file);
``no_size``: no ``Content-Length``/``X-Linked-Size`` and no size in the listing (the body ends
when the connection closes); ``silent_files``: a file request is never answered; ``listed``/``listed_sha``: what the listing says of a repo instead of
its files and commit (a hostile or broken Hub).
Every request is recorded in ``requests`` as ``(method, path, Range header)``."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, tuple[str, dict[str, bytes]]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.stall_at: int | None = None
        self.cut_at: int | None = None  # a GET closes the connection at that byte (once)
        self.no_size = False
        self.silent_files = False  # set: a file request is accepted and never answered
        self.listed: dict[str, list[str]] = {}  # repo -> the file names its listing shows instead
        self.listed_sha: dict[str, str] = {}  # repo -> the "sha" its listing shows instead
        self.token: str | None = None  # set: a private repo, answered only with "Authorization: Bearer TOKEN"
        self.stalled = threading.Event()  # set when a GET reached stall_at
        self._gate = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_repo(self, repo: str, files: dict[str, bytes | Path], commit: str | None = None) -> str:
        data = {name: (Path(v).read_bytes() if isinstance(v, (str, Path)) else v) for name, v in files.items()}
        commit = commit or hashlib.sha1((repo + "".join(sorted(data))).encode()).hexdigest()
        self.repos[repo] = (commit, data)
        return commit

    def release(self) -> None:
        self.stall_at = None
        self._gate.set()

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and "/resolve/" in r[1]]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _not_found(self, code: str) -> None:
                body = json.dumps({"error": code}).encode()
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _route(self) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                parts = path.strip("/").split("/")
                if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    body = b'{"error": "Repository not found"}'  # what the Hub says of a private repo
                    self.send_response(401)
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                    return None
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    return self._listing("/".join(parts[2:4]))
                if len(parts) >= 5 and parts[2] == "resolve" and hub.silent_files:
                    hub._gate.wait(30)  # never answered (until stop)
                    self.close_connection = True
                    return None
                if len(parts) >= 5 and parts[2] == "resolve":
                    return self._file("/".join(parts[:2]), "/".join(parts[4:]))
                return self._not_found("EntryNotFound")

            def _listing(self, repo: str) -> None:
                if repo not in hub.repos:
                    return self._not_found("RepoNotFound")
                commit, files = hub.repos[repo]
                names = hub.listed.get(repo, sorted(files))
                siblings: list[dict[str, object]] = [
                    {"rfilename": n} if hub.no_size else {"rfilename": n, "size": len(files.get(n, b""))} for n in names
                ]
                sha = hub.listed_sha.get(repo, commit)
                body = json.dumps({"id": repo, "modelId": repo, "sha": sha, "siblings": siblings}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, repo: str, name: str) -> None:
                if repo not in hub.repos:
                    return self._not_found("RepoNotFound")
                commit, files = hub.repos[repo]
                if name not in files:
                    return self._not_found("EntryNotFound")
                data = files[name]
                etag = hashlib.sha256(data).hexdigest()
                start = 0
                rng = self.headers.get("Range")
                if rng and self.command == "GET":
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Linked-Etag", f'"{etag}"')
                if not hub.no_size:
                    self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if hub.no_size:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if self.command == "HEAD":
                    return
                pos = start
                while pos < len(data):
                    stall = hub.stall_at
                    end = len(data) if stall is None or stall <= pos else stall
                    end = min(end, pos + 65536)
                    self.wfile.write(data[pos:end])
                    self.wfile.flush()
                    pos = end
                    if hub.cut_at is not None and pos >= hub.cut_at:
                        hub.cut_at = None
                        self.close_connection = True
                        return
                    if hub.stall_at is not None and pos >= hub.stall_at:
                        hub.stalled.set()
                        hub._gate.wait(30)
                        if hub.stall_at is not None:  # still stalled after 30 s: give up the connection
                            return
                    time.sleep(0.001)

            def _serve(self) -> None:
                try:
                    self._route()
                except (BrokenPipeError, ConnectionResetError):  # the client stopped the download
                    pass

            do_GET = _serve
            do_HEAD = _serve

        return Handler
