"""A Hugging Face Hub on loopback for tests: the Hub on 127.0.0.1 and its CDN on 127.0.0.2, real HTTP.

It answers what huggingface_hub 2.x reads (``file_download.get_hf_file_metadata``, ``utils/_http.py``,
``utils/_xet.py``), the way the real Hub answers it:

- A small file (``config.json``, ``README.md``): ``HEAD``/``GET {hub}/{repo}/resolve/{rev}/{path}`` answer 200
  with ``X-Repo-Commit`` and ``ETag: "<git blob sha1>"``. A weights file is served that way too when its path is
  in ``hub.in_git`` (a repo whose ``.gitattributes`` does not send it to LFS: the Hub then stores it in git).
- An LFS file (weights): ``HEAD`` and ``GET`` on ``/resolve`` answer **302** with ``Location:`` a signed URL on
  the CDN (another host: 127.0.0.2, another port), ``X-Linked-Etag: "<sha256>"``, ``X-Linked-Size``,
  ``X-Repo-Commit``, while ``ETag`` names the LFS *pointer* (its git blob sha1), as on the Hub. A client that
  read ``ETag`` instead of ``X-Linked-Etag`` would name the blob after the pointer and fail its checks.
  The CDN serves the bytes (``Range: bytes=N-`` gives 206 + ``Content-Range``) and refuses an expired or
  forged signature with 403 and an S3-style XML body.
- With ``hub.xet = True`` the HEAD also announces Xet storage: ``X-Xet-Hash`` and
  ``Link: <{hub}/api/models/{repo}/xet-read-token/{commit}>; rel="xet-auth"``. The token route answers with an
  access token and ``X-Xet-Cas-Url: {cdn}/cas``, and the CDN host speaks the Xet download protocol as hf_xet
  uses it: ``GET /cas/v1/reconstructions/<xet hash>`` (the token as ``Bearer``, else 401; ``Range`` = file bytes,
  416 past the end) answers the terms (xorb, chunk range, unpacked length), how far into the first chunk the range
  starts, and per xorb a signed URL ``/xorbs/default/<xorb hash>?X-Xet-Signed-Range=...`` with the byte range of
  those chunks, which the request's ``Range`` must repeat (else 403). A file is cut into 64 KiB chunks (fixed, where
  Xet's chunker cuts by content), stored uncompressed (an 8-byte chunk header, scheme 0) in xorbs of 128 chunks,
  without the xorb footer (clients fetch chunk ranges only). ``/cas/v2/...`` answers 404: hf_xet falls back to v1.
  The file and xorb hashes are stand-ins, not Xet's merkle hashes: hf_xet checks neither on download (only each
  chunk header and the unpacked lengths), so altered chunk bytes reach the caller's sha256 check. Of the CDN
  faults, ``'corrupt'`` flips the file's middle byte in its chunk (as over LFS) and ``'expired'`` expires the xorb
  URLs too (hf_xet then asks for fresh ones for minutes: 218 s measured); the others act on the LFS route only.
  hf_xet's ``POST /v1/telemetry`` (to the CAS host) is answered 200 and logged.
- 404 with ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``; 401 with
  ``X-Error-Code: GatedRepo`` (gated) or ``RepoNotFound`` (private) without ``hub.token``;
  ``GET /api/models/{repo}/revision/{rev}`` and ``/tree/{rev}``.

Faults (``hub.fault = name``), each on the side where it happens on the real Hub:

- Hub: ``'500'`` (every Hub request, HEAD included), ``'size'`` (``X-Linked-Size`` larger than the file),
  ``'gated'`` / ``'private'`` (401 unless the request carries ``Authorization: Bearer <hub.token>``),
  ``'xet-token'`` (the Xet token route answers 500).
- CDN: ``'reset'`` (TCP RST at the middle of the file, on every request, resumed ones too), ``'truncate'``
  (clean close at the middle, every time), ``'corrupt'`` (same size, one byte flipped), ``'expired'``
  (every signed URL has expired: 403), ``'stall'`` (half the body, then nothing until the fault is cleared or the
  hub stops; ``hub.stalled`` is set when the stall begins), ``'slow'`` (a slow network: the body in 10 pieces
  ``hub.slow_gap_s`` apart), ``'ignore-range'`` (the first request is closed at the
  middle; later ones ignore ``Range`` and answer 200 with the whole file, as some proxies do).

Every request is recorded in ``hub.log`` (``Request(server, method, path, headers)``); ``hub.requests`` gives
``(method, path)`` pairs of both servers and ``hub.count(method, suffix, server=None)`` counts them.
"""
import functools
import hashlib
import hmac
import itertools
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterator, List, NamedTuple, Optional, Set, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ['CDN_FAULTS', 'FAULTS', 'HUB_FAULTS', 'LocalHub', 'Request', 'lfs_pointer']

HUB_FAULTS = ('500', 'size', 'gated', 'private', 'xet-token')
CDN_FAULTS = ('reset', 'truncate', 'corrupt', 'expired', 'stall', 'slow', 'ignore-range')
FAULTS = HUB_FAULTS + CDN_FAULTS
_LFS_SUFFIXES = ('.safetensors', '.bin', '.pth', '.pt', '.ckpt')
_URL_LIFETIME_S = 3600  # the Hub signs CDN URLs for an hour (X-Amz-Expires=3600)


class Request(NamedTuple):
    server: str  # 'hub' or 'cdn'
    method: str
    path: str
    headers: Dict[str, str]  # names in lower case


def is_lfs(path: str) -> bool:
    return path.endswith(_LFS_SUFFIXES)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The text git stores in place of an LFS file; the Hub's ``ETag`` for the file is this text's blob sha1."""
    return (f'version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n'
            f'size {len(data)}\n').encode()


@dataclass
class _Repo:
    commits: Dict[str, Dict[str, bytes]] = field(default_factory=dict)  # sha -> files
    refs: Dict[str, str] = field(default_factory=dict)  # branch -> sha

    def resolve(self, revision: str) -> Optional[str]:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class _Server:
    """One ThreadingHTTPServer on a loopback address, whose stop() also closes keep-alive connections."""

    def __init__(self, host: str, handler: type) -> None:
        self.httpd = ThreadingHTTPServer((host, 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.tracker = self  # handlers register their connections here
        self.connections: Set[socket.socket] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=f'local-hub-{host}', daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f'http://{host}:{port}'

    def stop(self) -> None:
        self.httpd.shutdown()
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class LocalHub:
    """Start with ``hub = LocalHub().start()``; stop with ``hub.stop()`` (or use it as a context manager)."""

    def __init__(self) -> None:
        self.repos: Dict[str, _Repo] = {}
        self.xet = False
        self.token = 'hf_local_test_token'
        self._heads_expected: Optional[int] = None  # hold_heads(): LFS HEADs wait until this many have come
        self._heads_seen = 0
        self._heads_released = threading.Event()
        self.in_git: Set[str] = set()  # paths stored in git, not LFS, whatever their suffix
        self.stalled = threading.Event()
        self.slow_gap_s = 0.3
        self.log: List[Request] = []
        self._fault: Optional[str] = None
        self._release = threading.Event()  # wakes stalled CDN responses
        self._secret = hashlib.sha256(str(time.time()).encode()).digest()
        self._issued = 0
        self._lock = threading.Lock()
        self._hub: Optional[_Server] = None
        self._cdn: Optional[_Server] = None

    # ---- content and faults --------------------------------------------------------------------------
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
    def fault(self) -> Optional[str]:
        return self._fault

    @fault.setter
    def fault(self, name: Optional[str]) -> None:
        if name is not None and name not in FAULTS:
            raise ValueError(f'unknown fault {name!r}; choose from {FAULTS}')
        self._fault = name
        if name == 'stall':
            self._release.clear()
            self.stalled.clear()
        else:
            self._release.set()

    # ---- what was asked ------------------------------------------------------------------------------
    @property
    def requests(self) -> List[Tuple[str, str]]:
        with self._lock:
            return [(r.method, r.path) for r in self.log]

    def count(self, method: str, suffix: str = '', server: Optional[str] = None) -> int:
        with self._lock:
            return sum(1 for r in self.log
                       if r.method == method and r.path.endswith(suffix) and server in (None, r.server))

    def reset_counts(self) -> None:
        with self._lock:
            self.log.clear()

    def record(self, server: str, handler: BaseHTTPRequestHandler, path: str) -> None:
        with self._lock:
            self.log.append(Request(server, handler.command, path, {k.lower(): v for k, v in handler.headers.items()}))

    # ---- signed CDN URLs -----------------------------------------------------------------------------
    def signed_url(self, data: bytes, filename: str) -> str:
        """A fresh URL on the CDN for ``data``, signed until it expires (every call gives another URL)."""
        expires = int(time.time()) + (-60 if self.fault == 'expired' else _URL_LIFETIME_S)
        with self._lock:
            self._issued += 1
            issued = self._issued
        path = f'/lfs/{hashlib.sha256(data).hexdigest()}/{quote(filename.rsplit("/", 1)[-1])}'
        query = f'Expires={expires}&Id={issued}'
        return f'{self.cdn_url}{path}?{query}&Signature={self._sign(path, query)}'

    def _sign(self, path: str, query: str) -> str:
        return hmac.new(self._secret, f'{path}?{query}'.encode(), 'sha256').hexdigest()

    def check_signature(self, path: str, query: str) -> Optional[str]:
        """None if the URL is valid now, else why it is refused."""
        params = parse_qs(query)
        try:
            expires, issued, signature = int(params['Expires'][0]), params['Id'][0], params['Signature'][0]
        except (KeyError, ValueError):
            return 'Query-string authentication requires the Signature and Expires parameters'
        if not hmac.compare_digest(signature, self._sign(path, f'Expires={expires}&Id={issued}')):
            return 'The request signature we calculated does not match the signature you provided'
        if expires < time.time():
            return 'Request has expired'
        return None

    def blob(self, sha256: str) -> Optional[bytes]:
        for repo in self.repos.values():
            for files in repo.commits.values():
                for data in files.values():
                    if hashlib.sha256(data).hexdigest() == sha256:
                        return data
        return None

    def hold_heads(self, count: int) -> None:
        """Hold every LFS ``HEAD`` until ``count`` of them have arrived, then let all (and later ones) through: clients
        that all know the file before any of them downloads it (concurrency tests)."""
        with self._lock:
            self._heads_expected, self._heads_seen = count, 0
            self._heads_released.clear()

    def wait_for_heads(self, timeout: float = 120) -> None:
        with self._lock:
            if self._heads_expected is None:
                return
            self._heads_seen += 1
            if self._heads_seen >= self._heads_expected:
                self._heads_released.set()
        self._heads_released.wait(timeout)

    def wait_for_release(self, timeout: float = 120) -> None:
        self.stalled.set()
        self._release.wait(timeout)

    # ---- Xet storage: the CAS and its xorbs, on the CDN host -----------------------------------------
    @property
    def xet_access_token(self) -> str:
        """What the Xet token route hands out and the CAS asks for: this hub's own (a token of another is refused)."""
        return 'xet_' + hmac.new(self._secret, b'xet-read', 'sha256').hexdigest()[:32]

    def xet_files(self) -> Iterator['_XetFile']:
        """Everything the CAS holds: every file of every commit, as Xet stores it (content-addressed, built once)."""
        for repo in self.repos.values():
            for files in repo.commits.values():
                for data in files.values():
                    yield _xet_layout(data)

    def xet_file(self, file_hash: str) -> Optional['_XetFile']:
        return next((f for f in self.xet_files() if f.hash == file_hash), None)

    def xorb(self, xorb_hash: str) -> Optional[Tuple['_XetFile', '_Xorb']]:
        return next(((f, x) for f in self.xet_files() for x in f.xorbs if x.hash == xorb_hash), None)

    def signed_xorb_url(self, xorb_hash: str, first: int, last: int) -> str:
        """A URL on the CDN for bytes ``first..last`` of a xorb; the range is signed too (Xet's API: a client must send
        exactly the signed range as ``Range``). The parameter names are this hub's own."""
        expires = int(time.time()) + (-60 if self.fault == 'expired' else _URL_LIFETIME_S)
        path = f'/xorbs/default/{xorb_hash}'
        query = f'X-Xet-Signed-Range=bytes%3D{first}-{last}&Expires={expires}'
        return f'{self.cdn_url}{path}?{query}&Signature={self._sign(path, query)}'

    def check_xorb_url(self, path: str, query: str, range_header: Optional[str]) -> Optional[str]:
        """None if the xorb URL is valid now and ``Range`` is the range it was signed for, else why it is refused."""
        unsigned, _, signature = query.rpartition('&Signature=')
        params = parse_qs(unsigned)
        try:
            expires, signed_range = int(params['Expires'][0]), params['X-Xet-Signed-Range'][0]
        except (KeyError, ValueError):
            return 'Query-string authentication requires the Signature and Expires parameters'
        if not hmac.compare_digest(signature, self._sign(path, unsigned)):
            return 'The request signature we calculated does not match the signature you provided'
        if expires < time.time():
            return 'Request has expired'
        if range_header != signed_range:
            return f'Range {range_header!r} is not the signed range {signed_range!r}'
        return None

    # ---- lifecycle -----------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._hub is not None, 'start() the hub first'
        return self._hub.url

    @property
    def cdn_url(self) -> str:
        assert self._cdn is not None, 'start() the hub first'
        return self._cdn.url

    def start(self) -> 'LocalHub':
        self._hub = _Server('127.0.0.1', type('Handler', (_HubHandler,), {'hub': self}))
        self._cdn = _Server('127.0.0.2', type('Handler', (_CdnHandler,), {'hub': self}))
        return self

    def stop(self) -> None:
        self._release.set()
        for server in (self._hub, self._cdn):
            if server is not None:
                server.stop()
        self._hub = self._cdn = None

    def __enter__(self) -> 'LocalHub':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    """What both servers share: keep-alive, connection tracking, sending helpers."""

    protocol_version = 'HTTP/1.1'  # keep-alive, like the real Hub and CDN
    hub: LocalHub

    def setup(self) -> None:
        super().setup()
        server = self.server.tracker
        with server.lock:
            server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            server = self.server.tracker
            with server.lock:
                server.connections.discard(self.connection)

    def log_message(self, format: str, *args) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self.route()

    def do_GET(self) -> None:
        self.route()

    def route(self) -> None:
        raise NotImplementedError

    def send(self, status: int, headers: Dict[str, str], body: bytes = b'') -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if 'Content-Length' not in headers:
            self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD' and body:
            self.wfile.write(body)

    def abort(self, rst: bool) -> None:
        """Drop the connection: an RST (reset) or a clean FIN (truncation)."""
        self.wfile.flush()
        if rst:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        else:
            self.connection.shutdown(socket.SHUT_WR)
        self.close_connection = True


class _HubHandler(_Handler):
    def error(self, status: int, code: Optional[str], message: str, extra: Optional[Dict[str, str]] = None) -> None:
        body = json.dumps({'error': message}).encode()
        headers = {'Content-Type': 'application/json', 'X-Error-Message': message}
        if code:
            headers['X-Error-Code'] = code
        headers.update(extra or {})
        self.send(status, headers, body)

    def route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.record('hub', self, path)
        if self.hub.fault == '500':
            self.error(500, None, 'Internal Error - We\'re working hard to fix this as soon as possible!')
            return
        parts = path.strip('/').split('/')
        if parts[:2] == ['api', 'models'] and len(parts) >= 6:
            self.api(f'{parts[2]}/{parts[3]}', parts[4], '/'.join(parts[5:]))
        elif len(parts) >= 5 and parts[2] == 'resolve':
            self.resolve(f'{parts[0]}/{parts[1]}', parts[3], '/'.join(parts[4:]))
        else:
            self.error(404, 'RepoNotFound', f'no route for {path}')

    def lookup(self, repo_id: str, revision: str) -> Optional[Tuple[_Repo, str]]:
        """The repo and commit, or None once an error (401 / 404, as the Hub words them) has been sent."""
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self.error(401 if self.headers.get('Authorization') is None else 404, 'RepoNotFound', 'Repository not found')
            return None
        if self.hub.fault in ('gated', 'private') and self.headers.get('Authorization') != f'Bearer {self.hub.token}':
            if self.hub.fault == 'gated':
                self.error(401, 'GatedRepo', f'Access to model {repo_id} is restricted. You must have access to it '
                                             'and be authenticated to access it. Please log in.')
            else:
                self.error(401, 'RepoNotFound', 'Invalid username or password.')
            return None
        sha = repo.resolve(revision)
        if sha is None:
            self.error(404, 'RevisionNotFound', f'Invalid rev id: {revision}')
            return None
        return repo, sha

    def api(self, repo_id: str, kind: str, revision: str) -> None:
        found = self.lookup(repo_id, revision)
        if found is None:
            return
        repo, sha = found
        files = repo.commits[sha]
        if kind == 'revision':
            self.send_json({'id': repo_id, 'sha': sha, 'siblings': [{'rfilename': p} for p in sorted(files)]})
        elif kind == 'tree':
            self.send_json([_tree_entry(p, d) for p, d in sorted(files.items())])
        elif kind == 'xet-read-token':
            self.xet_token()
        else:
            self.error(404, None, f'no route for {kind}')

    def xet_token(self) -> None:
        if self.hub.fault == 'xet-token':
            self.error(500, None, 'could not issue a Xet token')
            return
        self.send(200, {'X-Xet-Cas-Url': f'{self.hub.cdn_url}/cas', 'X-Xet-Access-Token': self.hub.xet_access_token,
                        'X-Xet-Token-Expiration': str(int(time.time()) + 600)})

    def send_json(self, obj) -> None:
        self.send(200, {'Content-Type': 'application/json'}, json.dumps(obj).encode())

    def resolve(self, repo_id: str, revision: str, filename: str) -> None:
        found = self.lookup(repo_id, revision)
        if found is None:
            return
        repo, sha = found
        data = repo.commits[sha].get(filename)
        if data is None:
            self.error(404, 'EntryNotFound', f'{filename} does not exist at {revision}', {'X-Repo-Commit': sha})
        elif is_lfs(filename) and filename not in self.hub.in_git:
            self.redirect_to_cdn(repo_id, sha, filename, data)
        else:
            headers = {'X-Repo-Commit': sha, 'ETag': f'"{git_blob_sha1(data)}"', 'Accept-Ranges': 'bytes',
                       'Content-Type': 'text/plain; charset=utf-8'}
            self.send(200, headers, data)

    def redirect_to_cdn(self, repo_id: str, sha: str, filename: str, data: bytes) -> None:
        """What the Hub answers for an LFS file: 302 to a signed CDN URL, metadata in X-Linked-* headers."""
        if self.command == 'HEAD':
            self.hub.wait_for_heads()
        size = len(data) + 1000 if self.hub.fault == 'size' else len(data)
        location = self.hub.signed_url(data, filename)
        body = f'Found. Redirecting to {location}'.encode()
        headers = {
            'Location': location, 'X-Repo-Commit': sha, 'ETag': f'"{git_blob_sha1(lfs_pointer(data))}"',
            'X-Linked-Etag': f'"{hashlib.sha256(data).hexdigest()}"', 'X-Linked-Size': str(size),
            'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': str(len(body)),
        }
        if self.hub.xet:
            headers['X-Xet-Hash'] = _xet_hash(data)
            headers['Link'] = f'<{self.hub.endpoint}/api/models/{repo_id}/xet-read-token/{sha}>; rel="xet-auth"'
        self.send(302, headers, body)


class _CdnHandler(_Handler):
    def route(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.hub.record('cdn', self, path)
        segments = path.strip('/').split('/')
        if segments[0] in ('cas', 'xorbs'):
            self.xet(parts.path, segments, parts.query)
            return
        if segments[0] != 'lfs' or len(segments) != 3:
            self.send(404, {'Content-Type': 'application/xml'}, b'<Error><Code>NoSuchKey</Code></Error>')
            return
        refused = self.hub.check_signature(parts.path, parts.query)
        data = self.hub.blob(segments[1])
        if refused or data is None:
            self.storage_error(refused)
            return
        self.serve_bytes(data)

    def storage_error(self, refused: Optional[str]) -> None:
        """What the storage answers a refused URL (403, ``refused`` says why) or a missing object (404), S3-style."""
        code = 'AccessDenied' if refused else 'NoSuchKey'
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{refused}</Message>' \
               f'</Error>'.encode()
        self.send(403 if refused else 404, {'Content-Type': 'application/xml'}, body)

    def serve_bytes(self, data: bytes) -> None:
        fault = self.hub.fault
        if fault == 'corrupt':
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
        start = _range_start(self.headers.get('Range'))
        if fault == 'ignore-range' and start:
            start, fault = 0, None  # the whole file, as a plain 200
        if start >= len(data) and len(data):
            self.send(416, {'Content-Range': f'bytes */{len(data)}'})
            return
        headers = {'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes',
                   'ETag': f'"{hashlib.md5(data).hexdigest()}"', 'Content-Length': str(len(data) - start)}
        if start:
            headers['Content-Range'] = f'bytes {start}-{len(data) - 1}/{len(data)}'
        self.send(206 if start else 200, headers)
        if self.command == 'HEAD':
            return
        self.write_body(data, start, fault)

    def write_body(self, data: bytes, start: int, fault: Optional[str]) -> None:
        half = len(data) // 2
        if fault in ('reset', 'truncate', 'ignore-range'):
            self.wfile.write(data[start:max(half, start)])
            self.abort(rst=fault == 'reset')
        elif fault == 'slow':
            step = -(-len(data) // 10)
            for offset in range(start, len(data), step):
                self.wfile.write(data[offset:min(offset + step, len(data))])
                self.wfile.flush()
                time.sleep(self.hub.slow_gap_s)
        elif fault == 'stall':
            self.wfile.write(data[start:max(half, start)])
            self.wfile.flush()
            self.hub.wait_for_release()
            self.abort(rst=False)
        else:
            self.wfile.write(data[start:])

    # ---- Xet: the CAS API (/cas) and the xorb store (/xorbs) -----------------------------------------
    def do_POST(self) -> None:
        """hf_xet reports each transfer to ``POST /v1/telemetry`` on the CAS host: taken (and logged), not kept."""
        path = unquote(urlsplit(self.path).path)
        self.hub.record('cdn', self, path)
        self.rfile.read(int(self.headers.get('Content-Length') or 0))
        if path == '/v1/telemetry':
            self.send(200, {'Content-Type': 'application/json'}, b'{}')
        else:
            self.cas_error(404, f'no route for {path}')

    def xet(self, raw_path: str, segments: List[str], query: str) -> None:
        if segments[0] == 'xorbs':
            self.serve_xorb(raw_path, segments[-1], query)
        elif segments[1:3] == ['v1', 'reconstructions'] and len(segments) == 4:
            self.reconstruction(segments[3])
        else:  # v2 reconstructions (hf_xet then falls back to v1), uploads, dedup queries: not here
            self.cas_error(404, f'no route for /{"/".join(segments)}')

    def cas_error(self, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        body = json.dumps({'error': message}).encode()
        self.send(status, {'Content-Type': 'application/json', **(headers or {})}, body)

    def reconstruction(self, file_hash: str) -> None:
        """``GET /cas/v1/reconstructions/<file hash>``: what to fetch for the file bytes asked in ``Range``."""
        if self.headers.get('Authorization') != f'Bearer {self.hub.xet_access_token}':
            self.cas_error(401, 'missing or invalid Xet access token')
            return
        file = self.hub.xet_file(file_hash)
        if file is None:
            self.cas_error(404, f'file {file_hash} not found')
            return
        asked = _byte_range(self.headers.get('Range'), file.size)
        if asked is None:
            self.cas_error(416, 'Range not satisfiable', {'Content-Range': f'bytes */{file.size}'})
            return
        body = json.dumps(_reconstruction(self.hub, file, *asked)).encode()
        self.send(200, {'Content-Type': 'application/json'}, body)

    def serve_xorb(self, raw_path: str, xorb_hash: str, query: str) -> None:
        """``GET /xorbs/default/<hash>`` (signed): the chunk bytes of the signed range, the file's middle byte flipped
        under the 'corrupt' fault (a payload byte: the chunk headers stay valid, so only a digest can tell)."""
        range_header = self.headers.get('Range')
        refused = self.hub.check_xorb_url(raw_path, query, range_header)
        found = self.hub.xorb(xorb_hash)
        if refused or found is None:
            self.storage_error(refused)
            return
        file, xorb = found
        first, last = _byte_range(range_header, len(xorb.body)) or (0, -1)
        body = xorb.body[first:last + 1]
        flip = xorb.position(file.size // 2)
        if self.hub.fault == 'corrupt' and flip is not None and first <= flip <= last:
            body = body[:flip - first] + bytes([body[flip - first] ^ 0xFF]) + body[flip - first + 1:]
        self.send(206, {'Content-Type': 'application/octet-stream',
                        'Content-Range': f'bytes {first}-{last}/{len(xorb.body)}'}, body)


def _range_start(header: Optional[str]) -> int:
    if header and header.startswith('bytes='):
        return int(header[len('bytes='):].split('-')[0] or 0)
    return 0


def _byte_range(header: Optional[str], size: int) -> Optional[Tuple[int, int]]:
    """``Range: bytes=A-B`` as ``(A, B)``, B inclusive and clamped to the end (no header: all); None past the end."""
    if not header:
        return 0, size - 1
    first, _, last = header[len('bytes='):].partition('-')
    start, end = int(first or 0), min(int(last) if last else size - 1, size - 1)
    return (start, end) if start <= end else None


@functools.lru_cache(maxsize=16)
def _xet_hash(data: bytes) -> str:
    """Stands in for the Xet file hash (64 hex, but not the sha256: they differ on the Hub too). hf_xet does not
    recompute it from the bytes, so a stand-in serves; the real one is a merkle hash of blake3 chunk hashes."""
    return hashlib.sha256(b'xet-merkle:' + data).hexdigest()


_XET_CHUNK = 64 * 1024  # Xet's target chunk size; its chunker cuts by content, 8 to 128 KiB
_XORB_CHUNKS = 128  # a real xorb holds up to 64 MiB; fewer here, so that a weights file spans several
_CHUNK_HEADER = 8  # version, compressed length (3 bytes LE), compression scheme, uncompressed length (3 bytes LE)


class _Xorb(NamedTuple):
    """A xorb as stored: its chunks back to back, each an 8-byte header and the bytes uncompressed."""
    hash: str
    body: bytes
    starts: Tuple[int, ...]  # where chunk i begins in body; the last entry is len(body)
    sizes: Tuple[int, ...]  # chunk i's bytes (uncompressed)
    offset: int  # where chunk 0 is in the file

    def chunks(self, first: int, last: int) -> Optional[Tuple[int, int]]:
        """Indices ``[i, j)`` of the chunks that hold any of the file's bytes ``first..last``; None if none do."""
        ends = list(itertools.accumulate(self.sizes, initial=self.offset))
        hit = [k for k in range(len(self.sizes)) if ends[k] <= last and ends[k + 1] > first]
        return (hit[0], hit[-1] + 1) if hit else None

    def file_offset(self, chunk: int) -> int:
        return self.offset + sum(self.sizes[:chunk])

    def position(self, file_offset: int) -> Optional[int]:
        """Where the file's byte ``file_offset`` lies in body (past its chunk's header); None if not in this xorb."""
        found = self.chunks(file_offset, file_offset)
        if found is None:
            return None
        chunk = found[0]
        return self.starts[chunk] + _CHUNK_HEADER + file_offset - self.file_offset(chunk)


class _XetFile(NamedTuple):
    hash: str
    size: int
    xorbs: Tuple[_Xorb, ...]  # in file order


def _chunk_header(size: int) -> bytes:
    length = size.to_bytes(3, 'little')
    return b'\0' + length + b'\0' + length  # version 0; scheme 0 = stored uncompressed, so both lengths agree


def _pack_xorb(chunks: List[bytes], offset: int) -> _Xorb:
    body = b''.join(_chunk_header(len(c)) + c for c in chunks)
    starts = tuple(itertools.accumulate((_CHUNK_HEADER + len(c) for c in chunks), initial=0))
    return _Xorb(hashlib.sha256(b'xet-xorb:' + body).hexdigest(), body, starts, tuple(map(len, chunks)), offset)


@functools.lru_cache(maxsize=4)
def _xet_layout(data: bytes) -> _XetFile:
    """How the CAS stores ``data``: fixed-size chunks packed in file order into xorbs of ``_XORB_CHUNKS`` chunks."""
    chunks = [data[i:i + _XET_CHUNK] for i in range(0, len(data), _XET_CHUNK)]
    xorbs = tuple(_pack_xorb(chunks[i:i + _XORB_CHUNKS], i * _XET_CHUNK) for i in range(0, len(chunks), _XORB_CHUNKS))
    return _XetFile(_xet_hash(data), len(data), xorbs)


def _reconstruction(hub: LocalHub, file: _XetFile, first: int, last: int) -> dict:
    """The v1 reconstruction of file bytes ``first..last``: a term per xorb holding any of them (whole chunks), how far
    into the first term the range starts, and per xorb where to fetch the term's chunks (signed URL, byte range)."""
    terms, fetch_info, skip = [], {}, None
    for xorb in file.xorbs:
        found = xorb.chunks(first, last)
        if found is None:
            continue
        i, j = found
        skip = first - xorb.file_offset(i) if skip is None else skip
        chunk_range = {'start': i, 'end': j}
        terms.append({'hash': xorb.hash, 'unpacked_length': sum(xorb.sizes[i:j]), 'range': chunk_range})
        first_byte, last_byte = xorb.starts[i], xorb.starts[j] - 1
        fetch_info[xorb.hash] = [{'range': chunk_range, 'url': hub.signed_xorb_url(xorb.hash, first_byte, last_byte),
                                  'url_range': {'start': first_byte, 'end': last_byte}}]
    return {'offset_into_first_range': skip or 0, 'terms': terms, 'fetch_info': fetch_info}


def _tree_entry(path: str, data: bytes) -> dict:
    if not is_lfs(path):
        return {'type': 'file', 'path': path, 'size': len(data), 'oid': git_blob_sha1(data)}
    pointer = lfs_pointer(data)
    return {'type': 'file', 'path': path, 'size': len(data), 'oid': git_blob_sha1(pointer),
            'lfs': {'oid': hashlib.sha256(data).hexdigest(), 'size': len(data), 'pointerSize': len(pointer)}}
