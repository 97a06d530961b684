"""The one image decoder: files and uploaded bytes are read by the same rules, with errors that say what to do.

The command line, bulk runs, Ray, the HTTP service, calibration and the analyses all read images through
:func:`read_image` (``load_image`` for paths), so a rule about how pixels reach the model is changed here only.
"""
import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Tuple, Union

if TYPE_CHECKING:  # PIL is imported when an image is read, not with the module
    from PIL import Image

__all__ = ['SAMPLES_DIR', 'SAMPLE_PHOTO', 'ImageError', 'ImageTooLarge', 'decode_size', 'load_image', 'read_image']

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


def decode_size(data_config: Mapping[str, Any]) -> Tuple[int, int]:
    """(width, height) that timm's eval transform of ``data_config`` resizes an image to before its centre crop:
    ``floor(side / crop_pct)`` of each side of ``input_size`` (``transforms_imagenet_eval``'s ``scale_size``). An
    image at least this large in both sides is only ever scaled down by the transform: pass it to
    :func:`read_image` as ``min_size``."""
    from timm.data import DEFAULT_CROP_PCT
    crop_pct = data_config.get('crop_pct') or DEFAULT_CROP_PCT
    _, height, width = data_config['input_size']
    return math.floor(width / crop_pct), math.floor(height / crop_pct)


def _draft(image: 'Image.Image', min_size: Tuple[int, int]) -> None:
    """A JPEG decoded at the smallest DCT scale (1/2, 1/4, 1/8 in libjpeg) that keeps it at least ``min_size``
    (upright width, height; swapped for a file stored turned by 90 degrees); other formats are left as they are."""
    from PIL import ExifTags
    if image.format not in ('JPEG', 'MPO'):  # MPO: a phone's JPEG with more pictures after the first
        return
    turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)  # transpose, 90, transverse, 270
    image.draft('RGB', min_size[::-1] if turned else min_size)


def _scaled_to_8bit(image: 'Image.Image') -> 'Image.Image':
    """A 16-bit or float grayscale image as 8-bit 'L', scaled by the range of its type rather than clipped:
    16-bit ('I;16', 'I;16B', and 'I', which older Pillow gives 16-bit PNGs) by 255 / 65535, float ('F', taken to
    be in [0, 1]) by 255; rounded, and values outside the range clipped."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image, dtype=np.float64)
    pixels = pixels * 255 if image.mode == 'F' else pixels * (255 / 65535)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), 'L')


def _to_rgb(image: 'Image.Image') -> 'Image.Image':
    """A decoded image as the model sees it: turned upright by its EXIF orientation, 16-bit and float scaled,
    transparency composited onto white, any other mode (CMYK, palette, LA, 1, ...) converted to RGB."""
    from PIL import Image, ImageOps

    ImageOps.exif_transpose(image, in_place=True)
    if image.mode in ('I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F'):
        image = _scaled_to_8bit(image)
    if image.mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA') or 'transparency' in image.info:
        # PIL's convert('RGB') would drop alpha, showing the colour under a transparent pixel (as transformers'
        # convert_to_rgb, composite onto white instead)
        rgba = image.convert('RGBA')
        return Image.alpha_composite(Image.new('RGBA', rgba.size, (255, 255, 255, 255)), rgba).convert('RGB')
    return image if image.mode == 'RGB' else image.convert('RGB')


def read_image(source: ImageSource, max_pixels: Optional[int] = None,
               min_size: Optional[Tuple[int, int]] = None) -> 'Image.Image':
    """``source`` (a path, or an image file's bytes) as an RGB ``PIL.Image``, fully decoded, so that a truncated
    file fails here and not later. Read as transformers' ``load_image`` + ``convert_to_rgb`` and torchvision's
    ``decode_image(apply_exif_orientation=True)`` read it (docs/bulk-inference.md, "How images are read"):

    - EXIF orientation applied (``PIL.ImageOps.exif_transpose``);
    - transparency (RGBA, LA, PA, a palette or colour with a transparent entry) composited onto white;
    - 16-bit grayscale scaled by 255 / 65535 and float by 255 (taken to be in [0, 1]), not clipped;
    - CMYK, palette, grayscale and bilevel converted to RGB by PIL; an animated image read at its first frame.

    Args:
        source: a path, or the bytes of an image file (an upload).
        max_pixels: refuse an image with more pixels, from its header, before decoding (a decompression bomb).
        min_size: (width, height) of the upright image that the caller needs at least, e.g. :func:`decode_size`
            of the model's data config. A JPEG is then decoded at the smallest DCT scale that still covers it
            (PIL's ``Image.draft``: 1/2, 1/4 or 1/8 of each side, several times faster); None decodes in full.

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
            if min_size is not None:
                _draft(image, min_size)
            image.load()  # the first frame of an animated image
            return _to_rgb(image)
    except (FileNotFoundError, ImageError):
        raise
    except UnidentifiedImageError:
        raise ImageError(f'{name} is not an image PIL can read (supported: JPEG, PNG, WebP, BMP, ...); '
                         'convert it or pass another file') from None
    except Image.DecompressionBombError as e:  # PIL's own limit, past twice Image.MAX_IMAGE_PIXELS
        raise ImageTooLarge(f'{name} refused as a decompression bomb ({e})') from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f'{name} could not be decoded ({e}); the file may be truncated or corrupt') from None


def load_image(path: Union[str, 'os.PathLike[str]'],
               min_size: Optional[Tuple[int, int]] = None) -> 'Image.Image':
    """:func:`read_image` of a file: an RGB ``PIL.Image``, fully decoded (a JPEG at the DCT scale for ``min_size``)."""
    return read_image(path, min_size=min_size)
