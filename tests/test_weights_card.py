"""weights_card.md stays true: every pretrained tag, its source repo, and figures recomputed from the code."""
from pathlib import Path

import pytest

import timm

from timm_sknet.models.complexity import PUBLISHED, measure

CARD = (Path(__file__).resolve().parents[1] / 'weights_card.md').read_text(encoding='utf-8')
TIMM_TOP1 = {'sknet18': '73.020', 'sknet34': '76.956', 'sknet50': '80.168'}


def _row(tag: str) -> str:
    rows = [line for line in CARD.splitlines() if line.startswith(f'| `{tag}` |')]
    assert len(rows) == 1, f'{tag} needs exactly one row in weights_card.md'
    return rows[0]


TIMM_SOURCED = [t for t in timm.list_pretrained('sknet*') if timm.models.get_pretrained_cfg(t).hf_hub_id]


def test_every_pretrained_tag_is_on_the_card():
    for tag in timm.list_pretrained('sknet*'):
        _row(tag)


def test_embedded_weights_digest_on_the_card_is_the_files():
    from timm_sknet.file_io import sha256_file
    cfg = timm.models.get_pretrained_cfg('sknet_tiny.synthetic')
    assert sha256_file(cfg.file) in _row('sknet_tiny.synthetic')


@pytest.mark.parametrize('tag', TIMM_SOURCED)
def test_every_pretrained_tag_has_a_true_row(tag):
    name = tag.split('.')[0]
    cfg = timm.models.get_pretrained_cfg(tag)
    row = _row(tag)
    assert f'`{cfg.hf_hub_id}`' in row and cfg.license in row
    assert TIMM_TOP1[name] in row
    params, macs = measure(name)
    assert f'{params / 1e6:.2f} M' in row and f'{macs / 1e9:.3f}' in row
    assert PUBLISHED[name].params_m == pytest.approx(params / 1e6, abs=0.06)
    assert (cfg.input_size, cfg.crop_pct, cfg.interpolation) == ((3, 224, 224), 0.875, 'bicubic')


def test_models_without_weights_are_named():
    for name in ('sknet101', 'sknet152'):
        assert not [t for t in timm.list_pretrained(f'{name}.*') if timm.models.get_pretrained_cfg(t).has_weights]
        assert name.replace('sknet', 'SKNet-') in CARD
