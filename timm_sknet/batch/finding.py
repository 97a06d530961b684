"""Which files a bulk run reads: image files, folders (recursive), globs and file lists, in a stable order."""
import glob
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Union

__all__ = ['IMAGE_EXTENSIONS', 'find_images', 'read_file_list']

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


def _in_folder(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def find_images(inputs: Sequence[Union[str, Path]], file_list: Optional[str] = None) -> List[Path]:
    """Every image ``inputs`` names, in a stable order: a file as given, a folder searched recursively for
    :data:`IMAGE_EXTENSIONS` (sorted), a glob (``**`` recursive, sorted); then the ``file_list``'s paths.

    Raises:
        FileNotFoundError: a named file or folder does not exist, a glob or folder holds no image, or the file
            list does not exist. A usage mistake, found before any model is built.
    """
    found: List[Path] = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            images = _in_folder(path)
            if not images:
                raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in folder {path} or below it')
        elif path.exists():
            images = [path]
        elif glob.has_magic(item):
            images = sorted(Path(p) for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not images:
                raise FileNotFoundError(f'no file matches {item!r}')
        else:
            raise FileNotFoundError(f'image file not found: {path} (check the path; globs are expanded by your shell)')
        found += images
    if file_list is not None:
        found += read_file_list(file_list)
    return found
