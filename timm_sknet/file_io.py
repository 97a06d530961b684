"""Atomic writes: readers see the old complete file or folder or the new complete one, never a partial one."""
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

__all__ = ['atomic_file', 'atomic_folder']


@contextmanager
def atomic_folder(dest: Union[str, Path]) -> Iterator[Path]:
    """Yield a fresh temporary folder that replaces ``dest`` only if the block completes.

    POSIX cannot swap two non-empty folders in one step, so an existing ``dest`` is first renamed aside,
    then the new one renamed in, then the old one deleted: at every instant ``dest`` is either absent,
    the complete old folder or the complete new one.
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
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(dest: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest`` (same file system); rename it over ``dest`` only on success."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f'.{dest.name}.', suffix='.tmp', dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give the file the usual permissions
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _apply_umask(folder: Path) -> None:
    """mkdtemp makes private (0700) folders; give the result the permissions a plain mkdir/open would."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob('*')]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
