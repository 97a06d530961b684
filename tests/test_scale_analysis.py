"""The paper's scale analysis on a model whose answer is known by construction, and its verdict on known numbers.

The known-answer model has two one-channel SK units built by hand. Each path averages its input (a positive
3x3 kernel; the larger path is the dilated one, listed first so that "larger" cannot come from the order), so
the pooled descriptor ``s`` grows with the image's mean brightness, and the attention is
``softmax([g * relu(s), 0])`` over the paths. In unit SK_2_1 the larger path takes the ``g * relu(s)`` logit,
so its weight provably rises as a bright centred object grows; SK_2_2 has the logits the other way round, so
there the larger path's weight falls by exactly as much. Enlarging the object (zooming in) must raise the first
unit's difference and lower the second's.
"""
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from timm_sknet import SelectiveKernel
from timm_sknet.analysis.attention import find_sk_units
from timm_sknet.analysis.scale import (
    DEFAULT_SCALES,
    ScaleAnalysis,
    UnitScaleStat,
    attention_difference,
    run_scale_analysis,
)

GAIN = 6.0
SIZE = 64
DATA_CONFIG = dict(input_size=(3, SIZE, SIZE), crop_pct=1.0, interpolation='bilinear', mean=(0, 0, 0), std=(1, 1, 1))


def _known_unit(larger_path_logit: bool) -> SelectiveKernel:
    """kernel_sizes=[5, 3]: path 0 is a 3x3 conv with dilation 2 (extent 5), path 1 a plain 3x3 (extent 3)."""
    unit = SelectiveKernel(1, 1, kernel_sizes=[5, 3], attn_channels=1).eval()
    with torch.no_grad():
        for path in unit.paths:
            path.conv.weight.fill_(1 / 9)  # each path averages its neighbourhood
        for bn in [p.bn for p in unit.paths] + [unit.attn.bn]:
            bn.running_mean.zero_(), bn.running_var.fill_(1.0), bn.weight.fill_(1.0), bn.bias.zero_()
            bn.eps = 0.0  # identity
        unit.attn.fc_reduce.weight.fill_(1.0)  # z = relu(s)
        logits = [GAIN, 0.0] if larger_path_logit else [0.0, GAIN]
        unit.attn.fc_select.weight.copy_(torch.tensor(logits).view(2, 1, 1, 1))
    return unit


class _Block(nn.Module):
    def __init__(self, larger_path_logit: bool):
        super().__init__()
        self.sk = _known_unit(larger_path_logit)


class _KnownAnswerNet(nn.Module):
    """Grey image -> two SK units side by side (named SK_2_1 and SK_2_2 by the paper's convention)."""

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(_Block(larger_path_logit=True), _Block(larger_path_logit=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(1, keepdim=True)
        return torch.cat([block.sk(grey).mean((2, 3)) for block in self.layer1], dim=1)


def _bright_disks(diameters):
    """White centred disks on black, of the given diameters (fractions of the side)."""
    images = []
    for d in diameters:
        image = Image.new('RGB', (SIZE, SIZE))
        r = d * SIZE / 2
        ImageDraw.Draw(image).ellipse([SIZE / 2 - r, SIZE / 2 - r, SIZE / 2 + r, SIZE / 2 + r], fill=(255, 255, 255))
        images.append(image)
    return images


@pytest.fixture(scope='module')
def analysis() -> ScaleAnalysis:
    return run_scale_analysis(_KnownAnswerNet(), _bright_disks([0.2, 0.3, 0.4]), DEFAULT_SCALES,
                              data_config=DATA_CONFIG, batch_size=2)


def test_the_larger_path_is_found_by_receptive_field_not_by_position():
    units = find_sk_units(_KnownAnswerNet())
    assert list(units) == ['SK_2_1', 'SK_2_2']
    for info, _ in units.values():
        assert info.path_extents == (5, 3)
        assert (info.largest_path, info.smallest_path) == (0, 1)


def test_zooming_in_on_a_growing_bright_object_moves_attention_to_the_larger_kernel(analysis):
    toward_large, toward_small = analysis.mean_diffs()['SK_2_1'], analysis.mean_diffs()['SK_2_2']
    # SK_2_1 prefers its larger path more and more as the object fills more of the image
    assert toward_large[0] > 0 and all(b > a + 0.02 for a, b in zip(toward_large, toward_large[1:])), toward_large
    # SK_2_2 is the mirror image: exactly the opposite difference at every scale
    assert toward_small == pytest.approx([-v for v in toward_large], abs=1e-6)
    assert [analysis.stats['SK_2_1'][s].n for s in DEFAULT_SCALES] == [3, 3, 3]


def test_the_verdict_reports_what_the_known_answer_model_does(analysis):
    verdict = analysis.verdict()
    assert verdict['units_growing'] == ['SK_2_1'] and verdict['units_monotone'] == ['SK_2_1']
    assert verdict['mean_by_scale'] == pytest.approx([0.0] * 3, abs=1e-6)  # the two units cancel
    assert verdict['statement'].split('? ')[1].startswith('mostly not: it grows in 1 of 2 SK units')


def _analysis(diffs_by_unit) -> ScaleAnalysis:
    scales = [1.0, 1.5, 2.0]
    result = ScaleAnalysis(scales=scales, units={name: None for name in diffs_by_unit})
    result.stats = {name: {s: UnitScaleStat(v, 0.0, 4) for s, v in zip(scales, values)}
                    for name, values in diffs_by_unit.items()}
    return result


@pytest.mark.parametrize('diffs, growing, monotone, answer', [
    ({'a': [0.1, 0.2, 0.3], 'b': [-0.2, -0.1, 0.0]}, ['a', 'b'], ['a', 'b'], 'yes: in every SK unit'),
    ({'a': [0.1, 0.2, 0.3], 'b': [0.0, -0.1, 0.1], 'c': [0.3, 0.2, 0.1]}, ['a', 'b'], ['a'],
     'mostly: in 2 of 3 SK units'),
    ({'a': [0.1, 0.2, 0.3], 'b': [0.2, 0.1, 0.0], 'c': [0.3, 0.2, 0.1]}, ['a'], ['a'],
     'mostly not: it grows in 1 of 3 SK units and does not in the other 2'),
    ({'a': [0.3, 0.2, 0.1], 'b': [0.0, 0.0, 0.0]}, [], [], 'no: it grows in none of the 2 SK units'),
])
def test_verdict_on_hand_written_numbers(diffs, growing, monotone, answer):
    verdict = _analysis(diffs).verdict()
    assert verdict['units_growing'] == growing and verdict['units_monotone'] == monotone
    expected_means = [sum(v[i] for v in diffs.values()) / len(diffs) for i in range(3)]
    assert verdict['mean_by_scale'] == pytest.approx(expected_means)
    assert verdict['statement'].split('? ')[1].startswith(answer + '.')


def test_attention_difference_is_larger_minus_smaller_averaged_over_channels():
    weights = torch.tensor([[[0.9, 0.5, 0.1], [0.1, 0.5, 0.9]],    # image 0: (M=2, C=3)
                            [[0.3, 0.3, 0.3], [0.7, 0.7, 0.7]]])   # image 1
    assert attention_difference(weights, larger=0, smaller=1).tolist() == pytest.approx([0.0, -0.4], abs=1e-6)
    assert attention_difference(weights, larger=1, smaller=0).tolist() == pytest.approx([0.0, 0.4], abs=1e-6)
