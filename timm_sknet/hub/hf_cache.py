"""One file of one repo in huggingface_hub's cache: where it lives, and how a verified download enters it.

The layout is huggingface_hub's own (its "Manage cache" guide), shared with every library reading the cache::

    <cache>/models--<org>--<name>/blobs/<etag>                      the bytes, named after the Hub's ETag
    <cache>/models--<org>--<name>/snapshots/<commit>/<filename>     -> ../../blobs/<etag>
    <cache>/models--<org>--<name>/refs/<branch>                     the commit the branch pointed to
    <cache>/.locks/models--<org>--<name>/<etag>.lock                one downloader per blob, across processes

timm_sknet writes a blob only after its sha256 matched (the temporary file is renamed into ``blobs/`` then),
so no other reader of the cache ever finds an unverified file under a final name. The lock is
huggingface_hub's lock file for the same blob, so our downloads and its own serialise with each other.
"""
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ..file_io import atomic_file, atomic_symlink, write_text_atomic

__all__ = ['CachedFile']


class CachedFile:
    """``filename`` of model repo ``repo_id`` in the cache at ``cache_dir``."""

    def __init__(self, cache_dir: str, repo_id: str, filename: str) -> None:
        from huggingface_hub.file_download import repo_folder_name

        self.cache_dir, self.repo_id, self.filename = cache_dir, repo_id, filename
        self.folder = repo_folder_name(repo_id=repo_id, repo_type='model')
        self.storage = Path(cache_dir) / self.folder

    def find(self, revision: Optional[str]) -> Optional[Path]:
        """The cached snapshot file for ``revision`` (a branch is resolved through ``refs/``), or None."""
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo_id, self.filename, cache_dir=self.cache_dir, revision=revision)
        return Path(found) if isinstance(found, str) else None

    def pointer(self, commit: str) -> Path:
        return self.storage / 'snapshots' / commit / self.filename

    def blob(self, etag: str) -> Path:
        return self.storage / 'blobs' / etag

    @contextmanager
    def locked(self, etag: str) -> Iterator[None]:
        """Hold the cross-process lock of this blob (huggingface_hub's lock file, released if the holder dies)."""
        from huggingface_hub.utils import WeakFileLock

        lock = Path(self.cache_dir) / '.locks' / self.folder / f'{etag}.lock'
        lock.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(lock):
            yield

    def remove_leftovers(self, etag: str) -> int:
        """Delete temporary files of downloads of this blob that died (killed process). Call under the lock."""
        removed = 0
        for partial in self.blob(etag).parent.glob(f'.{etag}.*.tmp'):
            partial.unlink(missing_ok=True)
            removed += 1
        return removed

    @contextmanager
    def new_blob(self, etag: str) -> Iterator[Path]:
        """A temporary file beside the blob; it becomes ``blobs/<etag>`` only if the block completes."""
        with atomic_file(self.blob(etag)) as tmp:
            yield tmp

    def link(self, commit: str, etag: str, revision: Optional[str]) -> Path:
        """Point ``snapshots/<commit>/<filename>`` at the blob and record ``refs/<revision>``; return the pointer."""
        pointer, blob = self.pointer(commit), self.blob(etag)
        try:
            atomic_symlink(os.path.relpath(blob, pointer.parent), pointer)
        except OSError:  # no symlinks here (Windows without developer mode): a copy, as huggingface_hub makes
            with atomic_file(pointer) as tmp:
                shutil.copyfile(blob, tmp)
        self.record_ref(revision, commit)
        return pointer

    def record_ref(self, revision: Optional[str], commit: str) -> None:
        """Remember which commit a branch or tag resolved to (what offline loads of that revision use)."""
        if revision and revision != commit:
            write_text_atomic(self.storage / 'refs' / revision, commit)

    @staticmethod
    def evict(pointer: Path) -> None:
        """Remove a cached file: the blob and the snapshot link that points to it."""
        blob = Path(os.path.realpath(pointer))
        for path in (pointer, blob):
            path.unlink(missing_ok=True)
