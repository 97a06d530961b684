"""weights_card.md stays true: every pretrained tag, its source repo, and figures recomputed from the code."""
from pathlib import Path

import pytest

import timm

from timm_sknet.cli.list_models import model_table
from timm_sknet.models.complexity import measure

CARD = (Path(__file__).resolve().parents[1] / 'weights_card.md').read_text(encoding='utf-8')
#: ImageNet-1k top-1 of timm's files, from timm's results-imagenet.csv (224 px), keyed by the Hub repository
TIMM_TOP1 = {'timm/skresnet18.ra_in1k': 73.020, 'timm/skresnet34.ra_in1k': 76.956,
             'timm/skresnext50_32x4d.ra_in1k': 80.168}


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
    assert f'{TIMM_TOP1[cfg.hf_hub_id]:.3f}' in row
    params, macs = measure(name)
    assert f'{params / 1e6:.2f} M' in row and f'{macs / 1e9:.3f}' in row
    assert (cfg.input_size, cfg.crop_pct, cfg.interpolation) == ((3, 224, 224), 0.875, 'bicubic')


def test_models_without_weights_are_named():
    for name in ('sknet101', 'sknet152'):
        assert not [t for t in timm.list_pretrained(f'{name}.*') if timm.models.get_pretrained_cfg(t).has_weights]
        assert name.replace('sknet', 'SKNet-') in CARD


def test_the_model_tables_top1_is_that_of_the_file_pretrained_true_loads():
    """One meaning per column: top-1 belongs to the default tag's file, '-' where the default loads nothing."""
    lines = model_table().splitlines()
    header = [c.strip() for c in lines[0].strip('| ').split(' | ')]
    assert len(set(header)) == len(header) == 9
    rows = {cells[0]: dict(zip(header, cells)) for cells in ([c.strip() for c in line.strip('| ').split(' | ')]
                                                             for line in lines[2:])}
    assert list(rows) == timm.list_models('sknet*')
    for name, row in rows.items():
        cfg = timm.models.get_pretrained_cfg(name)
        assert row['`pretrained=True` loads'] == (cfg.tag if cfg.has_weights else '-')
        if cfg.hf_hub_id in TIMM_TOP1:
            assert row['top-1'] == f'{TIMM_TOP1[cfg.hf_hub_id]:.2f}' and cfg.hf_hub_id.split('/')[1] in row['top-1 source']
        else:
            assert row['top-1'] == row['top-1 source'] == '-', name
    assert rows['sknet50']['paper: top-1'] == '79.21' and rows['sknet18']['paper: top-1'] == '-'
