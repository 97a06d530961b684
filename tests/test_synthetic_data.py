"""The synthetic multi-scale shapes: determinism by seed, recorded scales that match the pixels, ImageFolder export."""
import csv
import math

import pytest
import torch

from timm.data import create_dataset

from timm_sknet.data.synthetic import CLASSES, ShapeSpec, SyntheticShapes, render_shape, write_image_folder


def _pixels(img) -> torch.Tensor:
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(img.size[1], img.size[0], 3)


def test_same_seed_same_pixels_in_any_order():
    a = SyntheticShapes(16, image_size=32, seed=3)
    b = SyntheticShapes(16, image_size=32, seed=3)
    for i in (5, 0, 15, 5):  # random access, repeated access
        assert torch.equal(_pixels(a[i][0]), _pixels(b[i][0]))
        assert a.metadata(i) == b.metadata(i)


def test_seed_and_split_change_the_samples():
    base = SyntheticShapes(8, image_size=32, seed=0)
    for other in (SyntheticShapes(8, image_size=32, seed=1), SyntheticShapes(8, image_size=32, seed=0, split='validation')):
        assert not torch.equal(_pixels(base[0][0]), _pixels(other[0][0]))
        assert base.spec(0).scale != other.spec(0).scale


def test_labels_balanced_and_scale_varies_within_each_class():
    ds = SyntheticShapes(400, image_size=32, seed=0)
    lo, hi = ds.scale_range
    scales, labels = ds.scales, ds.targets
    assert [ds[i][1] for i in range(len(CLASSES))] == list(range(len(CLASSES)))
    for c in range(len(CLASSES)):
        s = [sc for sc, lab in zip(scales, labels) if lab == c]
        assert len(s) == 50
        assert all(lo <= v <= hi for v in s)
        assert max(s) / min(s) > 2.5, f'class {CLASSES[c]}: scale must vary within the class'


@pytest.mark.parametrize('scale', [0.25, 0.5, 0.9])
def test_recorded_scale_is_the_rendered_size(scale):
    # a disk of diameter s * N on a flat background, no noise: its area must be pi (s N / 2)^2
    n = 128
    spec = ShapeSpec(label=0, class_name='disk', scale=scale, center=(0.5, 0.5), angle=0.0, foreground=(255, 255, 255),
                     background=((0, 0, 0), (0, 0, 0)), noise_std=0.0, noise_seed=0)
    img = _pixels(render_shape(spec, n)).float()[..., 0] / 255
    diameter = 2 * math.sqrt(img.sum().item() / math.pi) / n
    assert diameter == pytest.approx(scale, rel=0.02)
    # and centred where recorded
    ys, xs = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing='ij')
    assert (img * xs).sum().item() / img.sum().item() / n == pytest.approx(0.5, abs=0.01)
    assert (img * ys).sum().item() / img.sum().item() / n == pytest.approx(0.5, abs=0.01)


def test_objects_stay_inside_the_image():
    ds = SyntheticShapes(200, image_size=32, seed=0)
    for i in range(len(ds)):
        s = ds.spec(i)
        for c in s.center:
            assert s.scale / 2 - 1e-9 <= c <= 1 - s.scale / 2 + 1e-9


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match='scale_range'):
        SyntheticShapes(scale_range=(0.5, 1.5))
    with pytest.raises(ValueError, match='num_classes'):
        SyntheticShapes(num_classes=1)
    with pytest.raises(IndexError):
        SyntheticShapes(4).spec(4)


def test_write_image_folder_is_readable_by_timm_and_records_scales(tmp_path):
    root = write_image_folder(tmp_path / 'shapes', {'train': 16, 'validation': 8}, image_size=32, seed=1)
    train = create_dataset('', root=str(root), split='train')
    assert len(train) == 16
    assert sorted(train.reader.class_to_idx) == sorted(CLASSES)
    ref = SyntheticShapes(16, image_size=32, seed=1, split='train')
    with open(root / 'train' / 'metadata.csv') as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        assert row['class_name'] == ref.spec(i).class_name
        assert float(row['scale']) == pytest.approx(ref.spec(i).scale, abs=1e-6)
        from PIL import Image
        assert torch.equal(_pixels(Image.open(root / 'train' / row['file']).convert('RGB')), _pixels(ref.image(i)))
    with pytest.raises(FileExistsError, match='overwrite'):
        write_image_folder(root, {'train': 8})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')], 'no temporary folders left behind'
