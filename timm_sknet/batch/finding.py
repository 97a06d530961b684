"""Which files a bulk run reads: image files, folders (recursive), globs and file lists, in a stable order.

Folders and globs follow one rule: the tree is walked with symlinked folders followed (``os.walk(followlinks=True)``),
each real folder entered once (by ``(st_dev, st_ino)``, so a symlink loop ends), and each real file kept once, by its
resolved path, under the first path (in sorted order) that reaches it. Files named on the command line or in a file
list are kept as given, so a file named twice is predicted twice.
"""
import fnmatch
import glob
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Set, Tuple, Union

__all__ = ['IMAGE_EXTENSIONS', 'find_images', 'read_file_list', 'walk_files']

#: what a folder is searched for (case-insensitive); globs and file lists name their files themselves
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.tif', '.tiff', '.gif')


def read_file_list(file_list: str) -> List[Path]:
    """The paths of ``file_list``, one a line (blank lines skipped; ``-`` reads stdin), relative to the current
    folder. They are not checked here: a missing one is a failed image of the run, not the end of it."""
    if file_list == '-':
        lines = sys.stdin.read().splitlines()
    elif not Path(file_list).is_file():
        raise FileNotFoundError(f'file list not found: {file_list} (one image path a line; - reads stdin)')
    else:
        lines = Path(file_list).read_text(encoding='utf-8').splitlines()
    return [Path(line) for line in lines if line.strip()]


def walk_files(root: Path, max_depth: Optional[int] = None) -> Iterator[Path]:
    """Every file under ``root`` (symlinks to files included), symlinked folders followed, each real folder once.

    ``max_depth``: how many folder levels below ``root`` to enter (None: all). ``os.walk`` alone follows a
    symlink loop until the path is too long; the visited set of real folders is what ends it.
    """
    visited: Set[Tuple[int, int]] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        stat = os.stat(folder)
        depth = len(Path(folder).relative_to(root).parts)
        if (stat.st_dev, stat.st_ino) in visited:
            subfolders[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        subfolders.sort()
        if max_depth is not None and depth >= max_depth:
            subfolders[:] = []
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_file():  # a broken symlink is not an image
                yield path


def _matches(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """``parts`` of a relative path against glob segments: ``**`` any number of folders, others ``fnmatch``
    (case-sensitive, and ``*`` does not match a leading dot, as in ``glob``)."""
    if not pattern:
        return not parts
    if pattern[0] == '**':
        return any(_matches(parts[i:], pattern[1:]) for i in range(len(parts) + 1)
                   if not any(p.startswith('.') for p in parts[:i]))
    if not parts or (parts[0].startswith('.') and not pattern[0].startswith('.')):
        return False
    return fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def _glob(pattern: str) -> List[Path]:
    """``glob.glob(pattern, recursive=True)`` by :func:`walk_files` (glob's ``**`` follows a symlink loop until the
    path is too long). The walk starts at the pattern's longest folder without wildcards."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root, rest = Path(*parts[:fixed]) if fixed else Path('.'), parts[fixed:]
    if not root.is_dir():
        return []
    depth = None if '**' in rest else len(rest) - 1
    return [p for p in walk_files(root, depth) if _matches(p.relative_to(root).parts, rest)]


def _unique(paths: List[Path], seen: Set[str]) -> List[Path]:
    """``paths`` sorted, less those whose resolved file is in ``seen`` (which they join)."""
    kept = []
    for path in sorted(paths):
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            kept.append(path)
    return kept


def find_images(inputs: Sequence[Union[str, Path]], file_list: Optional[str] = None) -> List[Path]:
    """Every image ``inputs`` names, in a stable order: a file as given, a folder searched recursively for
    :data:`IMAGE_EXTENSIONS` (sorted), a glob (``**`` recursive, sorted); then the ``file_list``'s paths.
    Folders and globs follow symlinked folders and give each real file once (see the module docstring).

    Raises:
        FileNotFoundError: a named file or folder does not exist, a glob or folder holds no image, or the file
            list does not exist. A usage mistake, found before any model is built.
    """
    found: List[Path] = []
    seen: Set[str] = set()  # resolved paths found by folders and globs
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            images = _unique([p for p in walk_files(path) if p.suffix.lower() in IMAGE_EXTENSIONS], seen)
            if not images:
                raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in folder {path} or below it '
                                        '(or all of them were found already through another input)')
        elif path.exists():
            images = [path]
        elif glob.has_magic(item):
            images = _unique(_glob(item), seen)
            if not images:
                raise FileNotFoundError(f'no file matches {item!r}')
        else:
            raise FileNotFoundError(f'image file not found: {path} (check the path; globs are expanded by your shell)')
        found += images
    if file_list is not None:
        found += read_file_list(file_list)
    return found
