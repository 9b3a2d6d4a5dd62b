"""A stand-in for the Hugging Face Hub file endpoint, for tests (127.0.0.1 only).

It answers ``HEAD`` and ``GET`` on ``/{repo_id}/resolve/{revision}/{filename}`` with the headers
``huggingface_hub.hf_hub_download`` relies on: ``X-Repo-Commit`` (the commit the revision points
to), ``ETag`` / ``X-Linked-Etag`` (the file's SHA-256, as the Hub sends for LFS files),
``Content-Length`` / ``X-Linked-Size``. Unknown files get a 404 with ``X-Error-Code:
EntryNotFound``. Every request is recorded in :attr:`StandInHub.requests`.
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple
from urllib.parse import unquote


class StandInHub:
    """``with StandInHub() as hub: hub.add(repo_id, revision, filename, data); hub.url``."""

    def __init__(self) -> None:
        self.files: Dict[Tuple[str, str, str], bytes] = {}
        self.commits: Dict[Tuple[str, str], str] = {}
        self.requests: List[Tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, repo_id: str, revision: str, filename: str, data: bytes) -> str:
        """Publish ``data``; returns the commit hash the revision resolves to."""
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        self.commits[(repo_id, revision)] = commit
        self.commits[(repo_id, commit)] = commit
        self.files[(repo_id, revision, filename)] = data
        self.files[(repo_id, commit, filename)] = data
        return commit

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "StandInHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                with hub._lock:
                    hub.requests.append((self.command, self.path))
                path = unquote(self.path.split("?", 1)[0]).lstrip("/")
                repo, sep, rest = path.partition("/resolve/")
                revision, _, filename = rest.partition("/")
                data = hub.files.get((repo, revision, filename)) if sep else None
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Error-Message", "Entry not found")
                    if (repo, revision) in hub.commits:
                        self.send_header("X-Repo-Commit", hub.commits[(repo, revision)])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = hashlib.sha256(data).hexdigest()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("X-Repo-Commit", hub.commits[(repo, revision)])
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
                self._answer(with_body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(with_body=True)

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "StandInHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
