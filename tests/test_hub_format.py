"""The package's Hub export loads back through timm's own ``local-dir:`` and ``hf-hub:`` loaders, output for output."""
import copy
import hashlib
import json

import pytest
import torch
import yaml
from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import SKNET18_REPO, SMALL, load_small_sknet18

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
    """The YAML between the card's first line ``---`` and the next line that is exactly ``---``."""
    lines = readme.split('\n')
    assert lines[0] == '---'
    return yaml.safe_load('\n'.join(lines[1:lines.index('---', 1)]))


def test_export_writes_the_hub_layout_with_a_model_card(trained, tmp_path):
    out = export_hub_folder(trained, tmp_path / 'export', repo_id='me/sknet18-tiny')
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'sknet18' and config['num_classes'] == 5
    assert config['model_args']['layers'] == [1, 1, 1, 1]
    meta = _front_matter((out / 'README.md').read_text())
    assert meta['library_name'] == 'timm'
    assert 'license' not in meta and 'datasets' not in meta, 'random weights are not those its tag names'
    assert '**Trained on:** unknown' in (out / 'README.md').read_text()
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


def _card_and_config(model, folder):
    out = export_hub_folder(model, folder)
    readme = (out / 'README.md').read_text()
    return _front_matter(readme), readme, json.loads((out / 'config.json').read_text())['pretrained_cfg']


def test_a_pretrained_models_card_names_its_weights_data_and_license(tmp_path):
    model = timm.create_model('sknet_tiny.synthetic', pretrained=True)   # the embedded weights, loaded by timm
    meta, readme, cfg = _card_and_config(model, tmp_path / 'tiny')
    assert meta['license'] == cfg['license'] == 'apache-2.0' and cfg['tag'] == 'synthetic'
    assert "timm-sknet's synthetic multi-scale shapes" in readme and '`sknet_tiny.synthetic`, unchanged' in readme
    assert 'base_model' not in meta


def test_a_hub_pretrained_model_is_imagenet_and_a_reheaded_one_only_started_from_it(
        local_hub, sknet18_small, tmp_path):
    local_hub.add_commit(SKNET18_REPO, {'model.safetensors': sknet18_small.data})
    meta, readme, cfg = _card_and_config(load_small_sknet18(), tmp_path / 'in1k')
    assert meta['datasets'] == ['imagenet-1k'] and meta['license'] == 'apache-2.0' and cfg['tag'] == 'ra_in1k'
    assert f'(Hub repository `{SKNET18_REPO}`), unchanged' in readme
    meta, readme, cfg = _card_and_config(load_small_sknet18(num_classes=7), tmp_path / 'reheaded')
    assert 'datasets' not in meta and 'license' not in meta and 'tag' not in cfg and 'license' not in cfg
    assert meta['base_model'] == SKNET18_REPO
    assert '**Trained on:** unknown' in readme and 'started from the weights of `sknet18.ra_in1k`' in readme


def test_random_and_fine_tuned_weights_claim_nothing(tmp_path):
    """A model created with a tag's cfg but random weights, and a pretrained one trained one step since."""
    random_init = timm.create_model('sknet_tiny.synthetic')               # the tag's cfg, not its weights
    tuned = timm.create_model('sknet_tiny.synthetic', pretrained=True)
    tuned(torch.randn(2, 3, 64, 64)).logsumexp(-1).mean().backward()
    torch.optim.SGD(tuned.parameters(), lr=1e-3).step()
    for name, model in (('random', random_init), ('tuned', tuned)):
        meta, readme, cfg = _card_and_config(model, tmp_path / name)
        assert 'datasets' not in meta and 'license' not in meta, name
        assert not {'tag', 'license', 'notes'} & set(cfg), name
        assert '- **Trained on:** unknown\n' in readme, name
    assert 'randomly initialised' in (tmp_path / 'random' / 'README.md').read_text()
    assert 'started from the weights of `sknet_tiny.synthetic`' in (tmp_path / 'tuned' / 'README.md').read_text()


def test_what_the_exporter_states_is_written_and_hostile_strings_stay_strings(trained, tmp_path):
    from huggingface_hub import ModelCard
    hostile = 'a: b\n---\nlicense: mit\n"quoted" \'single\' # not a comment'
    out = export_hub_folder(trained, tmp_path / 'export', datasets=['my-org/flowers', hostile], license=hostile,
                            tags=[hostile, '- x'], description=hostile)
    meta = _front_matter((out / 'README.md').read_text())
    assert meta['datasets'] == ['my-org/flowers', hostile] and meta['license'] == hostile
    assert {hostile, '- x'} <= set(meta['tags']) and meta['library_name'] == 'timm'
    card = ModelCard.load(out / 'README.md')   # the Hub's own parser
    assert card.data.license == hostile and card.data.datasets == ['my-org/flowers', hostile]
    assert json.loads((out / 'config.json').read_text())['pretrained_cfg']['license'] == hostile


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
