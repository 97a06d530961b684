"""How :func:`timm_sknet.data.images.read_image` reads each kind of image (docs/bulk-inference.md, "How images are
read"): every image is built here with PIL / numpy, and the pixels read are compared with an expectation computed
here with numpy, never with the PIL conversion the decoder itself calls."""
import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image, features

import timm
from timm.data import create_transform, resolve_data_config

from timm_sknet.batch.predictor import BatchPredictor
from timm_sknet.cli import main
from timm_sknet.data.images import SAMPLES_DIR, decode_size, load_image, read_image
from timm_sknet.data.synthetic import SyntheticShapes

ORIENTATION = ExifTags.Base.Orientation
RNG = np.random.default_rng(0)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pixels(source, **kwargs) -> np.ndarray:
    image = read_image(source, **kwargs)
    assert image.mode == 'RGB'
    return np.asarray(image).astype(int)


def upright_photo(width: int = 48, height: int = 32) -> np.ndarray:
    """A non-square RGB image whose every pixel differs from its mirror and rotations (a gradient plus noise)."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + 2 * y) % 256], axis=-1)
    return np.clip(base + RNG.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif


# what each EXIF orientation asks a viewer to do to the stored pixels, written as its inverse: how a camera that
# holds the upright image stores it (np.rot90 turns counter-clockwise)
STORED = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, 1), 8: lambda a: np.rot90(a, -1)}


@pytest.mark.parametrize('orientation', [3, 6, 8])
def test_exif_orientation_turns_a_png_upright(orientation):
    upright = upright_photo()
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](upright)))
    data = encoded(stored, 'PNG', exif=with_orientation(orientation))
    np.testing.assert_array_equal(pixels(data), upright)


@pytest.mark.parametrize('orientation', [3, 6, 8])
def test_exif_orientation_turns_a_jpeg_upright(orientation):
    """A JPEG is lossy: the expectation is its own decoded pixels (PIL's JPEG decoder, no conversion), turned."""
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](upright_photo(64, 40))))
    data = encoded(stored, 'JPEG', quality=95, exif=with_orientation(orientation))
    as_stored = np.asarray(Image.open(io.BytesIO(data))).astype(int)
    turn_back = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}
    np.testing.assert_array_equal(pixels(data), turn_back[orientation](as_stored))


def onto_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None] / 255
    return rgb * a + 255 * (1 - a)


def test_rgba_is_composited_onto_white():
    rgb = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    alpha[0, :4] = [0, 128, 255, 64]
    rgb[0, 0] = (255, 0, 0)  # a fully transparent red pixel
    data = encoded(Image.fromarray(np.dstack([rgb, alpha]), 'RGBA'), 'PNG')
    got = pixels(data)
    assert tuple(got[0, 0]) == (255, 255, 255)
    np.testing.assert_allclose(got, onto_white(rgb, alpha), atol=1)


def test_grayscale_with_alpha_is_composited_onto_white():
    gray = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    data = encoded(Image.fromarray(np.dstack([gray, alpha]), 'LA'), 'PNG')
    np.testing.assert_allclose(pixels(data), onto_white(np.repeat(gray[..., None], 3, -1), alpha), atol=1)


def test_palette_with_a_transparent_index_reads_white_there():
    palette = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255)], dtype=np.uint8)
    index = RNG.integers(0, 3, (8, 8), dtype=np.uint8)
    image = Image.fromarray(index, 'P')
    image.putpalette(palette.ravel().tolist())
    expected = np.where(index[..., None] == 0, 255, palette[index])  # index 0, red, is transparent
    np.testing.assert_array_equal(pixels(encoded(image, 'PNG', transparency=0)), expected)


def test_16_bit_grayscale_is_scaled_not_clipped():
    values = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    got = pixels(encoded(Image.fromarray(values), 'PNG'))
    expected = np.repeat(values[..., None], 3, -1).astype(float) * 255 / 65535
    np.testing.assert_allclose(got, expected, atol=0.5 + 1e-9)
    assert (got == 255).mean() < 0.01  # clipping read 99 % of such an image as 255


def test_32_bit_integer_is_read_on_the_16_bit_scale():
    values = np.linspace(0, 65535, 16 * 16).round().astype(np.int32).reshape(16, 16)
    image = Image.fromarray(values)
    assert image.mode == 'I'
    np.testing.assert_allclose(pixels(encoded(image, 'TIFF')), np.repeat(values[..., None], 3, -1) * 255 / 65535,
                               atol=0.5 + 1e-9)


def test_float_in_0_1_is_scaled_to_255():
    values = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    image = Image.fromarray(values)
    assert image.mode == 'F'
    np.testing.assert_allclose(pixels(encoded(image, 'TIFF')), np.repeat(values[..., None], 3, -1) * 255,
                               atol=0.5 + 1e-6)


def test_cmyk_jpeg_is_converted():
    """Expectation: R = (255 - C)(255 - K) / 255 (and G, B from M, Y) of the CMYK values the file holds."""
    cmyk = RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    data = encoded(Image.fromarray(cmyk, 'CMYK'), 'JPEG', quality=95)
    held = np.asarray(Image.open(io.BytesIO(data))).astype(float)  # the decoded CMYK values, before conversion
    expected = (255 - held[..., :3]) * (255 - held[..., 3:]) / 255
    np.testing.assert_allclose(pixels(data), expected, atol=1)


def test_bilevel_reads_black_and_white():
    bits = RNG.integers(0, 2, (8, 8)).astype(bool)
    data = encoded(Image.fromarray(bits), 'PNG')
    np.testing.assert_array_equal(pixels(data), np.repeat(bits[..., None], 3, -1) * 255)


@pytest.mark.parametrize('fmt', ['GIF', 'PNG', 'WEBP'])
def test_animated_image_is_read_at_its_first_frame(fmt):
    if fmt == 'WEBP' and not features.check('webp'):
        pytest.skip('this PIL has no WebP support')
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    frames = [Image.new('RGB', (8, 8), c) for c in colours]
    options = dict(lossless=True) if fmt == 'WEBP' else {}
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    np.testing.assert_array_equal(pixels(data), np.broadcast_to(colours[0], (8, 8, 3)))


def test_bytes_and_path_read_the_same(tmp_path):
    rgba = np.dstack([upright_photo(), RNG.integers(0, 256, (32, 48), dtype=np.uint8)])
    files = {'exif.jpg': encoded(Image.fromarray(upright_photo()), 'JPEG', exif=with_orientation(6)),
             'alpha.png': encoded(Image.fromarray(rgba, 'RGBA'), 'PNG')}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        np.testing.assert_array_equal(pixels(data), pixels(tmp_path / name))
        np.testing.assert_array_equal(pixels(data, min_size=(10, 10)), np.asarray(load_image(tmp_path / name,
                                                                                               (10, 10))))


# ---------------------------------------------------------------------------------------------------------
# fast decode: JPEGs at the smallest DCT scale that still covers the size the transform resizes to
# ---------------------------------------------------------------------------------------------------------

def test_decode_size_is_timm_eval_transforms_resize():
    """timm's eval transform resizes to floor(side / crop_pct): its Resize step says so itself."""
    config = dict(input_size=(3, 224, 224), crop_pct=0.875, interpolation='bilinear', crop_mode='center',
                  mean=(0.5,) * 3, std=(0.5,) * 3)
    resize = create_transform(**config).transforms[0]
    assert decode_size(config) == (resize.size, resize.size) == (256, 256)
    assert decode_size(dict(config, input_size=(3, 160, 320))) == (math.floor(320 / 0.875), math.floor(160 / 0.875))


def dct_sizes(path: Path):
    """{scale: (width, height)} PIL reports for a JPEG drafted at each libjpeg scale 1, 1/2, 1/4, 1/8."""
    width, height = Image.open(path).size
    sizes = {}
    for scale in (1, 2, 4, 8):
        with Image.open(path) as image:
            image.draft('RGB', (width // scale, height // scale))
            sizes[scale] = image.size
        assert sizes[scale] == (math.ceil(width / scale), math.ceil(height / scale))
    return sizes


@pytest.mark.parametrize('target', [(400, 300), (401, 300), (200, 150), (199, 149), (100, 75), (99, 60), (20, 20),
                                    (100, 151), (800, 600), (1000, 1000)])
def test_draft_decodes_at_the_smallest_dct_scale_covering_the_target(tmp_path, target):
    path = tmp_path / 'photo.jpg'
    Image.fromarray(upright_photo(800, 600)).save(path, quality=90)
    sizes = dct_sizes(path)
    covering = [size for size in sizes.values() if size[0] >= target[0] and size[1] >= target[1]]
    expected = min(covering, key=lambda s: s[0]) if covering else sizes[1]
    assert read_image(path, min_size=target).size == expected
    assert read_image(path).size == sizes[1]


@pytest.mark.parametrize('target', [(300, 400), (150, 400), (100, 300)])
def test_draft_turns_the_target_for_a_jpeg_stored_sideways(tmp_path, target):
    """Stored 800x600 with orientation 6: upright 600x800. The target is upright, the DCT scale applies to the
    stored image, so the target is turned before it is compared with the stored sizes."""
    path = tmp_path / 'sideways.jpg'
    Image.fromarray(upright_photo(800, 600)).save(path, quality=90, exif=with_orientation(6))
    stored = dct_sizes(path)
    covering = [(h, w) for w, h in stored.values() if h >= target[0] and w >= target[1]]  # upright sizes
    assert read_image(path, min_size=target).size == min(covering, key=lambda s: s[0])


def test_a_phones_multi_picture_jpeg_is_drafted_too():
    """MPO (a JPEG followed by more pictures, as some phones save): its first picture, drafted."""
    first, second = Image.new('RGB', (800, 600), (10, 200, 30)), Image.new('RGB', (800, 600), (200, 0, 0))
    data = encoded(first, 'MPO', save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == 'MPO'
    got = pixels(data, min_size=(100, 75))
    assert got.shape == (75, 100, 3)
    np.testing.assert_allclose(got, np.broadcast_to((10, 200, 30), got.shape), atol=2)


def test_other_formats_decode_in_full():
    data = encoded(Image.fromarray(upright_photo(800, 600)), 'PNG')
    assert read_image(data, min_size=(100, 75)).size == (800, 600)


# ---------------------------------------------------------------------------------------------------------
# issue 29, "done when": the same labels through `timm-sknet predict` as the same images saved plainly
# ---------------------------------------------------------------------------------------------------------

def hard_and_plain_copies(hard: Path, plain: Path) -> None:
    """Three bundled samples as a phone or an editor might save them (``hard``: stored sideways with EXIF
    orientation 6, transparent over coloured junk, 16-bit grayscale) and the same pixels saved upright, opaque
    and 8-bit (``plain``), computed here with numpy."""
    samples = {s.name.split('_')[1]: np.asarray(Image.open(s).convert('RGB'))
               for s in sorted(SAMPLES_DIR.glob('*.png'))}
    for folder in (hard, plain):
        folder.mkdir()
    Image.fromarray(np.ascontiguousarray(np.rot90(samples['triangle'], 1))).save(
        hard / 'photo.jpg', quality=90, exif=with_orientation(6))
    stored = np.asarray(Image.open(hard / 'photo.jpg'))  # its JPEG pixels, as decoded; turned upright by hand
    Image.fromarray(np.ascontiguousarray(np.rot90(stored, -1))).save(plain / 'photo.png')

    rgb = samples['cross'].copy()
    alpha = np.full(rgb.shape[:2], 255, dtype=np.uint8)
    alpha[:, :20] = 0
    alpha[RNG.random(alpha.shape) < 0.1] = 0
    rgb[alpha == 0] = RNG.integers(0, 256, (int((alpha == 0).sum()), 3))  # colours no one should see
    Image.fromarray(np.dstack([rgb, alpha]), 'RGBA').save(hard / 'logo.png')
    Image.fromarray(np.where(alpha[..., None] == 0, 255, rgb).astype(np.uint8)).save(plain / 'logo.png')

    gray = np.rint(samples['star'] @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    Image.fromarray(gray.astype(np.uint16) * 257).save(hard / 'scan.png')  # 16-bit: 8-bit value v is v * 257
    Image.fromarray(gray).save(plain / 'scan.png')


def predictions(capsys, folder: Path, csv_path: Path) -> dict:
    assert main(['predict', str(folder), '--model', 'sknet_tiny.synthetic', '--pretrained', '--workers', '0',
                 '--output', str(csv_path)]) == 0
    capsys.readouterr()
    with open(csv_path, newline='') as f:
        return {Path(row['path']).stem: row for row in csv.DictReader(f)}


def test_predict_labels_hard_images_as_their_plain_copies(tmp_path, capsys):
    hard_and_plain_copies(tmp_path / 'hard', tmp_path / 'plain')
    hard = predictions(capsys, tmp_path / 'hard', tmp_path / 'hard.csv')
    plain = predictions(capsys, tmp_path / 'plain', tmp_path / 'plain.csv')
    assert sorted(hard) == sorted(plain) == ['logo', 'photo', 'scan']
    model = timm.create_model('sknet_tiny.synthetic', pretrained=True).eval()
    transform = create_transform(**resolve_data_config(model=model))
    for name in hard:
        assert [hard[name][f'label_{k}'] for k in range(1, 6)] == [plain[name][f'label_{k}'] for k in range(1, 6)]
        assert float(hard[name]['probability_1']) == pytest.approx(float(plain[name]['probability_1']), abs=1e-5)
        # the check has teeth: read as PIL's plain convert('RGB') reads it, the hard copy scores otherwise
        path = next((tmp_path / 'hard').glob(f'{name}.*'))
        with torch.no_grad():
            naive = model(transform(Image.open(path).convert('RGB'))[None]).softmax(-1)[0]
        assert abs(naive[int(plain[name]['index_1'])].item() - float(plain[name]['probability_1'])) > 1e-3


def test_fast_decode_gives_full_decodes_answers_on_large_jpegs(tmp_path):
    """200 of the embedded model's shapes as 2000x1500 JPEGs (at 4000x3000 each image costs about 3.5 times as
    much to encode and decode: 300 against 90 ms here, a minute for the test), predicted by ``BatchPredictor`` with JPEGs drafted (default) and decoded in full:
    top-1 agrees on >= 99 % of images and accuracy moves by <= 0.5 points.

    Each shape is rendered at 64 px without pixel noise and enlarged nearest-neighbour: hard-edged, as a shape
    rendered at full size is (the hard case for DCT scaling); the renderer's pixel noise would become 23-pixel
    blocks, noise no camera makes, which a large render would not have.
    """
    width, height, count = 2000, 1500, 200
    shapes = SyntheticShapes(count, image_size=64, split='validation', seed=2, num_classes=6, noise_std=0)
    paths = []
    for i in range(count):
        photo = Image.new('RGB', (width, height), (128, 128, 128))  # the sides fall outside the centre crop
        photo.paste(shapes.image(i).resize((height, height), Image.NEAREST), ((width - height) // 2, 0))
        paths.append(tmp_path / f'{i}.jpg')
        photo.save(paths[-1], quality=90)
    top1 = {}
    for full_decode in (False, True):
        predictor = BatchPredictor('sknet_tiny.synthetic', pretrained=True, backend='eager', topk=1,
                                   full_decode=full_decode)
        assert (predictor.decode_size is None) == full_decode
        top1[full_decode] = predictor({'path': np.array([str(p) for p in paths])})['index_1']
    labels = np.array(shapes.targets)
    assert (top1[False] == top1[True]).mean() >= 0.99
    assert abs((top1[False] == labels).mean() - (top1[True] == labels).mean()) <= 0.005
    assert (top1[True] == labels).mean() > 0.7  # the model recognises these shapes: agreement is not by chance
