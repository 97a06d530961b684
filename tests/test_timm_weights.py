"""timm's SK checkpoints load into sknet18/34/50 through timm's real pretrained path and give the same logits."""
import pytest
import torch
from helpers import TIMM_TWINS, randomize_batchnorm, rel_max_diff, save_safetensors

import timm


@pytest.mark.parametrize('ours, theirs', TIMM_TWINS)
def test_timm_checkpoint_gives_identical_logits(ours, theirs, tmp_path):
    reference = randomize_batchnorm(timm.create_model(theirs), seed=1).eval()
    path = save_safetensors(reference, tmp_path / 'model.safetensors')

    model = timm.create_model(ours, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        got = model(x)
    assert rel_max_diff(got, expected) < 1e-5
    # the comparison is meaningful: the loaded model is not a random one that happens to agree
    assert rel_max_diff(timm.create_model(ours).eval()(x).detach(), expected) > 1e-2


@pytest.mark.parametrize('ours, theirs', TIMM_TWINS)
def test_same_parameter_layout_as_timm(ours, theirs):
    with torch.device('meta'):
        a = timm.create_model(ours).state_dict()
        b = timm.create_model(theirs).state_dict()
    assert {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}


@pytest.mark.parametrize('ours, theirs', TIMM_TWINS)
def test_preprocessing_matches_the_weights_source(ours, theirs):
    """The cfg that ships with our tag describes the same preprocessing as timm's for the same weights."""
    mine = timm.models.get_pretrained_cfg(f'{ours}.ra_in1k').to_dict()
    source = timm.models.get_pretrained_cfg(f'{theirs}.ra_in1k').to_dict()
    for key in ('input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std', 'num_classes',
                'first_conv', 'classifier', 'license', 'test_input_size', 'crop_mode'):
        assert mine.get(key) == source.get(key), key
    assert mine['hf_hub_id'] == f'timm/{theirs}.ra_in1k'
