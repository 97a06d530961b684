"""Reading images for the command line and the analysis tools, with errors that say what to do."""
import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # PIL is imported when an image is read, not with the module
    from PIL import Image

__all__ = ['SAMPLE_PHOTO', 'ImageError', 'load_image']

#: A photograph for first examples, bundled so that they run offline: Commodore Grace M. Hopper in an official
#: U.S. Navy portrait (1984), a work of the U.S. federal government and so in the public domain; the 512 x 600
#: crop that matplotlib ships as sample data (``matplotlib/mpl-data/sample_data/grace_hopper.jpg``).
SAMPLE_PHOTO = Path(__file__).resolve().parent / 'samples' / 'grace_hopper.jpg'


class ImageError(OSError):
    """An image file exists but cannot be decoded (not an image, truncated, or an unsupported format)."""


def load_image(path: Union[str, 'os.PathLike[str]']) -> 'Image.Image':
    """Open ``path`` as an RGB ``PIL.Image``, fully decoded (so a truncated file fails here, not later).

    Raises:
        FileNotFoundError: no such file.
        ImageError: the file is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'image file not found: {path} (check the path; globs are expanded by your shell)')
    if path.is_dir():
        raise ImageError(f'{path} is a directory, not an image file (pass image files, e.g. {path}/*.jpg)')
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert('RGB')
    except UnidentifiedImageError:
        raise ImageError(
            f'{path} is not an image PIL can read (supported: JPEG, PNG, WebP, BMP, ...); '
            f'convert it or pass another file') from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f'{path} could not be decoded ({e}); the file may be truncated or corrupt') from None
