"""A Hugging Face Hub stand-in on 127.0.0.1 for tests: real HTTP, real huggingface_hub client, no outside host.

It speaks the part of the Hub protocol that ``hf_hub_download`` and ``snapshot_download`` use
(huggingface_hub 2.x):

- ``HEAD``/``GET /{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag``, ``Content-Length``,
  ``Accept-Ranges``; ``GET`` honours ``Range: bytes=N-`` (206 + ``Content-Range``). Weight files are
  "LFS" files: their ETag is the sha256 of the content, as on the Hub; other files get the git blob sha1.
- ``404`` with ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``.
- ``GET /api/models/{repo}/revision/{revision}`` and ``GET /api/models/{repo}/tree/{revision}``.

Faults are switched on per server (``hub.fault = 'reset'``) and hit the downloads of weight files:

- ``'500'``: every request answers 500 (HEAD included), as when the Hub is down;
- ``'reset'``: the body stops halfway and the connection is reset (TCP RST);
- ``'truncate'``: the body stops at half the file and the connection closes cleanly, every time, even
  when the client resumes with a Range request;
- ``'size'``: HEAD announces more bytes than the file has;
- ``'corrupt'``: same length, one byte changed (the ETag still announces the true sha256).

Every request is recorded in ``hub.requests`` as ``(method, path)``.
"""
import hashlib
import json
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Set, Tuple
from urllib.parse import unquote, urlsplit

__all__ = ['LocalHub', 'FAULTS']

FAULTS = ('500', 'reset', 'truncate', 'size', 'corrupt')
_LFS_SUFFIXES = ('.safetensors', '.bin', '.pth', '.pt', '.ckpt')


def _is_lfs(path: str) -> bool:
    return path.endswith(_LFS_SUFFIXES)


def _etag(path: str, data: bytes) -> str:
    if _is_lfs(path):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


@dataclass
class _Repo:
    commits: Dict[str, Dict[str, bytes]] = field(default_factory=dict)  # sha -> files
    refs: Dict[str, str] = field(default_factory=dict)  # branch -> sha

    def resolve(self, revision: str) -> Optional[str]:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class LocalHub:
    """Start with ``hub = LocalHub().start()``; stop with ``hub.stop()`` (or use it as a context manager)."""

    def __init__(self) -> None:
        self.repos: Dict[str, _Repo] = {}
        self.fault: Optional[str] = None
        self.requests: List[Tuple[str, str]] = []
        self._lock = threading.Lock()
        self._connections: Set[socket.socket] = set()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ---- content -------------------------------------------------------------------------------------
    def add_commit(self, repo_id: str, files: Dict[str, bytes], branch: Optional[str] = 'main') -> str:
        """Add a commit holding ``files`` (all of them, not a diff); move ``branch`` to it. Returns its sha."""
        repo = self.repos.setdefault(repo_id, _Repo())
        digest = hashlib.sha1(repo_id.encode())
        for path in sorted(files):
            digest.update(path.encode() + b'\0' + hashlib.sha256(files[path]).digest())
        digest.update(str(len(repo.commits)).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        if branch:
            repo.refs[branch] = sha
        return sha

    @property
    def endpoint(self) -> str:
        assert self._server is not None, 'start() the hub first'
        host, port = self._server.server_address[:2]
        return f'http://{host}:{port}'

    def count(self, method: str, suffix: str = '') -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and p.endswith(suffix))

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> 'LocalHub':
        hub = self

        class Handler(_HubHandler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name='local-hub', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close keep-alive connections too (``shutdown()`` alone leaves them served)."""
        if self._server is None:
            return
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> 'LocalHub':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive, like the real Hub
    hub: LocalHub

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.hub._lock:
                self.hub._connections.discard(self.connection)

    def log_message(self, format: str, *args) -> None:  # keep pytest output clean
        pass

    # ---- helpers -------------------------------------------------------------------------------------
    def _send(self, status: int, headers: Dict[str, str], body: bytes = b'') -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if 'Content-Length' not in headers:
            self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD' and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, extra: Optional[Dict[str, str]] = None) -> None:
        body = json.dumps({'error': message}).encode()
        headers = {'Content-Type': 'application/json', 'X-Error-Code': code, 'X-Error-Message': message}
        headers.update(extra or {})
        self._send(status, headers, body)

    def _json(self, obj) -> None:
        self._send(200, {'Content-Type': 'application/json'}, json.dumps(obj).encode())

    def _abort(self, rst: bool) -> None:
        """Drop the connection: an RST (reset) or a clean FIN (truncation)."""
        self.wfile.flush()
        if rst:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        else:
            self.connection.shutdown(socket.SHUT_WR)
        self.close_connection = True

    # ---- routes --------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.hub._lock:
            self.hub.requests.append((self.command, path))
        if self.hub.fault == '500':
            self._error(500, 'InternalServerError', 'simulated server error')
            return
        parts = path.strip('/').split('/')
        if parts[:2] == ['api', 'models'] and len(parts) >= 6 and parts[4] in ('revision', 'tree'):
            self._api(f'{parts[2]}/{parts[3]}', parts[4], '/'.join(parts[5:]))
        elif len(parts) >= 5 and parts[2] == 'resolve':
            self._resolve(f'{parts[0]}/{parts[1]}', parts[3], '/'.join(parts[4:]))
        else:
            self._error(404, 'RepoNotFound', f'no route for {path}')

    def _lookup(self, repo_id: str, revision: str) -> Optional[Tuple[_Repo, str]]:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, 'RepoNotFound', f'Repository {repo_id} not found')
            return None
        sha = repo.resolve(revision)
        if sha is None:
            self._error(404, 'RevisionNotFound', f'Invalid rev id: {revision}')
            return None
        return repo, sha

    def _api(self, repo_id: str, kind: str, revision: str) -> None:
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        repo, sha = found
        files = repo.commits[sha]
        if kind == 'revision':
            self._json({'id': repo_id, 'sha': sha, 'siblings': [{'rfilename': p} for p in sorted(files)]})
        else:
            self._json([
                {'type': 'file', 'path': p, 'size': len(d), 'oid': _etag(p, d)} for p, d in sorted(files.items())])

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        repo, sha = found
        data = repo.commits[sha].get(filename)
        if data is None:
            self._error(404, 'EntryNotFound', f'{filename} does not exist at {revision}', {'X-Repo-Commit': sha})
            return
        fault = self.hub.fault if _is_lfs(filename) else None
        headers = {
            'X-Repo-Commit': sha, 'ETag': f'"{_etag(filename, data)}"', 'Accept-Ranges': 'bytes',
            'Content-Type': 'application/octet-stream',
        }
        if self.command == 'HEAD':
            size = len(data) + 1000 if fault == 'size' else len(data)
            self._send(200, dict(headers, **{'Content-Length': str(size)}))
            return

        if fault == 'corrupt':
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
        start = 0
        range_header = self.headers.get('Range')
        if range_header and range_header.startswith('bytes='):
            start = int(range_header[len('bytes='):].split('-')[0] or 0)
        if start >= len(data) and len(data):
            self._send(416, {'Content-Range': f'bytes */{len(data)}'})
            return
        body = data[start:]
        status = 200
        if start:
            status = 206
            headers['Content-Range'] = f'bytes {start}-{len(data) - 1}/{len(data)}'
        headers['Content-Length'] = str(len(body))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if fault == 'reset':
            self.wfile.write(body[:len(body) // 2])
            self._abort(rst=True)
        elif fault == 'truncate':
            self.wfile.write(body[:max(len(data) // 2 - start, 0)])
            self._abort(rst=False)
        else:
            self.wfile.write(body)
