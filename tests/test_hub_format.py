"""The package's Hub export loads back through timm's own ``local-dir:`` and ``hf-hub:`` loaders, output for output."""
import copy
import hashlib
import json

import pytest
import torch
import yaml
from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import SMALL

import timm

from timm_sknet.hub import export_hub_folder
from timm_sknet.models import CheckpointError, model_from_checkpoint


@pytest.fixture(scope='module')
def trained():
    """A reduced sknet18 with a 5-class head and non-default BatchNorm statistics, as after fine-tuning."""
    torch.manual_seed(7)
    model = timm.create_model('sknet18', num_classes=5, **SMALL)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _front_matter(readme: str) -> dict:
    assert readme.startswith('---\n')
    return yaml.safe_load(readme.split('---\n')[1])


def test_export_writes_the_hub_layout_with_a_model_card(trained, tmp_path):
    out = export_hub_folder(trained, tmp_path / 'export', repo_id='me/sknet18-tiny')
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'sknet18' and config['num_classes'] == 5
    assert config['model_args']['layers'] == [1, 1, 1, 1]
    meta = _front_matter((out / 'README.md').read_text())
    assert meta['library_name'] == 'timm'
    assert meta['license'] == 'apache-2.0'
    assert 'datasets' not in meta, 'a re-headed (5-class) model is not the ImageNet model its tag names'
    assert '**Trained on:** not recorded' in (out / 'README.md').read_text()
    assert {'timm', 'image-classification'} <= set(meta['tags'])
    digest = hashlib.sha256((out / 'model.safetensors').read_bytes()).hexdigest()
    assert meta['weights_sha256'] == {'model.safetensors': digest}
    assert "timm.create_model('hf-hub:me/sknet18-tiny'" in (out / 'README.md').read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temp folder left


def test_a_channels_last_model_exports_and_round_trips(trained, tmp_path):
    """safetensors refuses non-contiguous tensors; the writer stores contiguous copies, the model is untouched."""
    model = copy.deepcopy(trained).to(memory_format=torch.channels_last)
    assert not model.conv1.weight.is_contiguous()
    out = export_hub_folder(model, tmp_path / 'export')
    assert not model.conv1.weight.is_contiguous(), 'the caller keeps its memory format'
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(_logits(loaded, x), _logits(trained, x), rtol=0, atol=0)


def test_local_dir_loads_the_export(trained, tmp_path):
    out = export_hub_folder(trained, tmp_path / 'export')
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    assert isinstance(loaded, type(trained)) and loaded.num_classes == 5
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(_logits(loaded, x), _logits(trained, x), rtol=0, atol=0)


def test_hf_hub_loads_the_export_with_verification(trained, tmp_path, local_hub):
    out = export_hub_folder(trained, tmp_path / 'export', repo_id='me/sknet18-tiny')
    local_hub.add_commit('me/sknet18-tiny', {p.name: p.read_bytes() for p in out.iterdir()})
    loaded = timm.create_model('hf-hub:me/sknet18-tiny', pretrained=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(_logits(loaded, x), _logits(trained, x), rtol=0, atol=0)
    assert local_hub.count('GET', 'model.safetensors') == 1
    assert local_hub.count('GET', 'config.json') == 1
    assert not [p for _, p in local_hub.requests if p.endswith('.bin')]


def test_hf_hub_export_corrupted_in_transit_is_refused(trained, tmp_path, local_hub):
    from timm_sknet import WeightsError
    out = export_hub_folder(trained, tmp_path / 'export')
    local_hub.add_commit('me/sknet18-tiny', {p.name: p.read_bytes() for p in out.iterdir()})
    local_hub.fault = 'corrupt'
    with pytest.raises(WeightsError, match='integrity check failed'):
        timm.create_model('hf-hub:me/sknet18-tiny', pretrained=True)
    local_hub.fault = None
    loaded = timm.create_model('hf-hub:me/sknet18-tiny', pretrained=True)
    assert torch.equal(loaded.fc.weight, trained.fc.weight)


def test_export_from_a_timm_training_checkpoint(trained, tmp_path):
    """A timm train.py checkpoint (EMA weights preferred, `module.` prefixes from DDP) becomes a loadable folder."""
    ema = {f'module.{k}': v for k, v in trained.state_dict().items()}
    noise = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in trained.state_dict().items()}
    ckpt = tmp_path / 'model_best.pth.tar'
    torch.save({'epoch': 9, 'arch': 'sknet18', 'state_dict': noise, 'state_dict_ema': ema}, ckpt)
    out = export_hub_folder(model_from_checkpoint(ckpt, 'sknet18', **SMALL), tmp_path / 'export')
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(_logits(loaded, x), _logits(trained, x), rtol=0, atol=0)


def test_a_mismatched_checkpoint_says_what_to_pass(trained, tmp_path):
    ckpt = tmp_path / 'w.pth'
    torch.save(trained.state_dict(), ckpt)
    with pytest.raises(CheckpointError, match='model_kwargs'):
        model_from_checkpoint(ckpt, 'sknet18')  # trained with layers=(1,1,1,1)


def test_failed_export_leaves_nothing_behind(tmp_path):
    """save_for_hf writes model.safetensors, then fails on config.json: no folder may look complete."""
    model = timm.create_model('sknet18', act_layer=torch.nn.ReLU, **SMALL)  # a class is not JSON
    with pytest.raises(ValueError, match='not serializable'):
        export_hub_folder(model, tmp_path / 'export')
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_kept_unless_overwrite(trained, tmp_path):
    out = export_hub_folder(trained, tmp_path / 'export')
    first = (out / 'model.safetensors').read_bytes()
    with pytest.raises(FileExistsError, match='overwrite=True'):
        export_hub_folder(trained, out)
    other = timm.create_model('sknet18', num_classes=3, **SMALL)
    export_hub_folder(other, out, overwrite=True)
    assert (out / 'model.safetensors').read_bytes() != first
    assert json.loads((out / 'config.json').read_text())['num_classes'] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ['export']


@pytest.mark.parametrize('tag, num_classes, datasets, trained_on', [
    ('sknet_tiny.synthetic', None, None, "timm-sknet's synthetic multi-scale shapes"),
    ('sknet18.ra_in1k', None, ['imagenet-1k'], 'ImageNet-1k'),
    ('sknet18.ra_in1k', 7, None, 'not recorded'),
])
def test_the_model_card_states_the_weights_true_dataset(tag, num_classes, datasets, trained_on, tmp_path):
    kwargs = {} if num_classes is None else dict(num_classes=num_classes)
    model = timm.create_model(tag, **SMALL if tag.startswith('sknet18') else {}, **kwargs)
    readme = (export_hub_folder(model, tmp_path / 'export') / 'README.md').read_text()
    meta = _front_matter(readme)
    assert meta.get('datasets') == datasets
    assert meta['license'] == model.pretrained_cfg['license'] == 'apache-2.0'
    assert f'**Trained on:** {trained_on}' in readme


def test_explicit_card_metadata_wins(trained, tmp_path):
    out = export_hub_folder(trained, tmp_path / 'export', datasets=['my-org/flowers'], license='cc-by-4.0')
    meta = _front_matter((out / 'README.md').read_text())
    assert meta['datasets'] == ['my-org/flowers'] and meta['license'] == 'cc-by-4.0'


def test_config_json_has_class_names_at_the_root_and_no_num_classes_in_model_args(tmp_path):
    """transformers reads ``label_names`` at the root and passes num_classes itself (a second one is a TypeError);
    timm still builds the right head from the root / pretrained_cfg count."""
    model = timm.create_model('sknet_tiny.synthetic', pretrained=True).eval()
    out = export_hub_folder(model, tmp_path / 'export')
    config = json.loads((out / 'config.json').read_text())
    assert config['label_names'] == list(model.pretrained_cfg['label_names'])
    assert 'num_classes' not in config.get('model_args', {}) and config['num_classes'] == 6
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    assert loaded.num_classes == 6 and list(loaded.pretrained_cfg['label_names']) == config['label_names']


def test_class_names_that_no_longer_fit_the_head_are_left_out(tmp_path):
    """sknet_tiny.synthetic names 6 classes; with a 3-class head those names would be wrong (and transformers
    would build a 6-label config for 3 outputs)."""
    model = timm.create_model('sknet_tiny.synthetic', num_classes=3)
    assert len(model.pretrained_cfg['label_names']) == 6
    config = json.loads((export_hub_folder(model, tmp_path / 'export') / 'config.json').read_text())
    assert config['num_classes'] == 3 and 'label_names' not in config


def test_export_of_a_headless_checkpoint_builds_a_headless_model(trained, tmp_path):
    """A backbone checkpoint (no fc) needs num_classes=0, which the exporter reads from the missing head."""
    backbone = {k: v for k, v in trained.state_dict().items() if not k.startswith('fc.')}
    ckpt = tmp_path / 'backbone.pth'
    torch.save(backbone, ckpt)
    out = export_hub_folder(model_from_checkpoint(ckpt, 'sknet18', **SMALL), tmp_path / 'export')
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    assert loaded.num_classes == 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained.forward_head(trained.forward_features(x), pre_logits=True),
                                   rtol=0, atol=0)
