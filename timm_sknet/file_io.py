"""Files written whole or not at all, and file digests: the one place the package writes and hashes files.

Every writer in the package goes through :func:`atomic_file` or :func:`atomic_folder`: the result is built
under a temporary name in the destination's folder (same file system) and renamed into place only when it
is complete, so a reader, or a process that crashed mid-write, never finds a partial file under the final
name. Temporary names are unique (``mkstemp`` / ``mkdtemp``), so concurrent writers never share one.
Files that grow record by record (bulk predictions) go through :func:`append_durably` and
:func:`drop_partial_line`: every record is on disk before the next is written, and a record a killed writer
left half-written is cut off before the file is appended to again.
"""
import hashlib
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

__all__ = ['append_durably', 'atomic_file', 'atomic_folder', 'drop_partial_line', 'git_blob_sha1', 'sha256_file',
           'write_text_atomic']

PathLike = Union[str, os.PathLike]
_CHUNK = 1 << 20


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_file(dest: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; it replaces ``dest`` only if the block completes.

    The destination's folder is created if missing. On an exception the temporary file is removed and
    ``dest`` (if it existed) is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{dest.name}.', suffix='.tmp', dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the permissions open() would
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(dest: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``dest`` through :func:`atomic_file`."""
    with atomic_file(dest) as tmp:
        tmp.write_text(text, encoding='utf-8')
    return Path(dest)


@contextmanager
def atomic_folder(dest: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder that replaces ``dest`` only if the block completes.

    POSIX cannot swap two non-empty folders in one step, so an existing ``dest`` is first renamed aside,
    then the new one renamed in, then the old one deleted: at every instant ``dest`` is either absent,
    the complete old folder or the complete new one. If the second rename fails, the old one is put back.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.tmp-', dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _apply_umask(tmp)
    old = None
    if dest.exists():
        old = dest.parent / f'.{dest.name}.old-{uuid.uuid4().hex[:8]}'
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _apply_umask(folder: Path) -> None:
    """mkdtemp makes private (0700) folders; give the result the permissions a plain mkdir/open would."""
    umask = _umask()
    for path in [folder, *folder.rglob('*')]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _hash_file(h: 'hashlib._Hash', path: PathLike) -> str:
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    return _hash_file(hashlib.sha256(), path)


def git_blob_sha1(path: PathLike) -> str:
    """The id git (and the Hub, for a non-LFS file) gives a file: sha1 of ``b'blob <size>\\0' + content``."""
    return _hash_file(hashlib.sha1(b'blob %d\0' % os.path.getsize(path)), path)


def append_durably(path: PathLike, data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing) and return only once it is on disk (flush + fsync)."""
    with open(path, 'ab') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def drop_partial_line(path: PathLike) -> int:
    """Cut ``path`` after its last newline, dropping a line a killed writer left half-written; the new size."""
    size = end = os.path.getsize(path)
    with open(path, 'rb+') as f:
        while end > 0:
            start = max(0, end - _CHUNK)
            f.seek(start)
            cut = f.read(end - start).rfind(b'\n')
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        if end != size:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    return end
