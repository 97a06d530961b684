"""The one image decoder: files and uploaded bytes are read by the same rules, with errors that say what to do.

The command line, bulk runs, Ray, the HTTP service, calibration and the analyses all read images through
:func:`read_image` (``load_image`` for paths), so a rule about how pixels reach the model is changed here only.
"""
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:  # PIL is imported when an image is read, not with the module
    from PIL import Image

__all__ = ['SAMPLES_DIR', 'SAMPLE_PHOTO', 'ImageError', 'ImageTooLarge', 'load_image', 'read_image']

#: Images shipped with the package: the main job's samples, named ``<index>_<class>_s<object scale>.png`` and drawn
#: from the synthetic shapes, and the photo below.
SAMPLES_DIR = Path(__file__).resolve().parent / 'samples'
#: A photograph for first examples, bundled so that they run offline: Commodore Grace M. Hopper in an official
#: U.S. Navy portrait (1984), a work of the U.S. federal government and so in the public domain; the 512 x 600
#: crop that matplotlib ships as sample data (``matplotlib/mpl-data/sample_data/grace_hopper.jpg``).
SAMPLE_PHOTO = SAMPLES_DIR / 'grace_hopper.jpg'

ImageSource = Union[str, 'os.PathLike[str]', bytes]


class ImageError(OSError):
    """An image exists but cannot be decoded (not an image, truncated, or an unsupported format)."""


class ImageTooLarge(ImageError):
    """An image with more pixels than the caller allows, refused from its header before its pixels are decoded."""


def _describe(source: ImageSource) -> str:
    return 'the upload' if isinstance(source, bytes) else str(source)


def _open(source: ImageSource) -> 'Image.Image':
    """PIL's lazy open of a path or bytes; a missing path or a folder is refused with what to pass instead."""
    from PIL import Image

    if isinstance(source, bytes):
        if not source:
            raise ImageError('the upload is empty: send the image file itself')
        return Image.open(io.BytesIO(source))
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f'image file not found: {path} (check the path; globs are expanded by your shell)')
    if path.is_dir():
        raise ImageError(f'{path} is a directory, not an image file (pass image files, e.g. {path}/*.jpg)')
    return Image.open(path)


def read_image(source: ImageSource, max_pixels: Optional[int] = None) -> 'Image.Image':
    """``source`` (a path, or an image file's bytes) as an RGB ``PIL.Image``, fully decoded, so that a truncated
    file fails here and not later.

    Args:
        source: a path, or the bytes of an image file (an upload).
        max_pixels: refuse an image with more pixels, from its header, before decoding (a decompression bomb).

    Raises:
        FileNotFoundError: no such file.
        ImageTooLarge: more than ``max_pixels`` pixels.
        ImageError: not a readable image, or an empty upload.
    """
    from PIL import Image, UnidentifiedImageError

    name = _describe(source)
    try:
        with _open(source) as image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ImageTooLarge(f'image of {image.width}x{image.height} pixels is over the limit of '
                                    f'{max_pixels:,} pixels; send a smaller image')
            image.load()
            return image.convert('RGB')
    except (FileNotFoundError, ImageError):
        raise
    except UnidentifiedImageError:
        raise ImageError(f'{name} is not an image PIL can read (supported: JPEG, PNG, WebP, BMP, ...); '
                         'convert it or pass another file') from None
    except Image.DecompressionBombError as e:  # PIL's own limit, past twice Image.MAX_IMAGE_PIXELS
        raise ImageTooLarge(f'{name} refused as a decompression bomb ({e})') from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f'{name} could not be decoded ({e}); the file may be truncated or corrupt') from None


def load_image(path: Union[str, 'os.PathLike[str]']) -> 'Image.Image':
    """:func:`read_image` of a file: an RGB ``PIL.Image``, fully decoded."""
    return read_image(path)
