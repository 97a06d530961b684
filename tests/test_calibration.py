"""int8 calibration images are what the model sees at inference: timm's eval transform of the user's images."""
import pytest
import torch
from PIL import Image

import timm
from timm.data import create_transform, resolve_data_config

from timm_sknet.data.calibration import calibration_batches


@pytest.fixture(scope='module')
def model():
    return timm.create_model('sknet_tiny', num_classes=6)


def test_a_folders_images_go_through_the_models_eval_transform(model, tmp_path):
    sizes = [(90, 70), (64, 64), (50, 120)]
    for i, size in enumerate(sizes):  # in a subfolder: the folder is searched recursively
        (tmp_path / 'sub').mkdir(exist_ok=True)
        Image.effect_noise(size, 60 + 20 * i).convert('RGB').save(tmp_path / 'sub' / f'{i}.png')
    (tmp_path / 'notes.txt').write_text('not an image')
    batches = calibration_batches(model, tmp_path, batch_size=2)
    transform = create_transform(**resolve_data_config({}, model=model), is_training=False)
    expected = torch.stack([transform(Image.open(tmp_path / 'sub' / f'{i}.png').convert('RGB')) for i in range(3)])
    assert [b.shape[0] for b in batches] == [2, 1]
    torch.testing.assert_close(torch.cat(batches), expected)


def test_synthetic_calibration_has_the_asked_size(model):
    batches = calibration_batches(model, num_images=5, batch_size=4, input_size=(3, 48, 48))
    assert [tuple(b.shape) for b in batches] == [(4, 3, 48, 48), (1, 3, 48, 48)]
    assert not torch.equal(batches[0][0], batches[0][1])  # different images, not one repeated


def test_a_folder_without_images_says_so(model, tmp_path):
    with pytest.raises(FileNotFoundError, match='no images'):
        calibration_batches(model, tmp_path)
    with pytest.raises(FileNotFoundError, match='not found'):
        calibration_batches(model, tmp_path / 'missing')
