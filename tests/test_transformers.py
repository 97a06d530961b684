"""transformers' TimmWrapper loads the package's Hub folders: AutoModel, TimmWrapperModel, pipeline, fine-tuning.

Offline, on the embedded ``sknet_tiny.synthetic`` weights (exported with the package's exporter) and on a folder
written by the training's checkpoint writer. References are timm's own model and transforms, same weights.
"""
import json
import shutil

import pytest
import torch
from installed_package import *  # noqa: F401,F403  (fixtures)
from installed_package import run_python
from left_out import LEFT_OUT
from PIL import Image

import timm

from timm_sknet.data.images import SAMPLES_DIR
from timm_sknet.hub import export_hub_folder
from timm_sknet.hub.embedded import EMBEDDED_CLASSES, EMBEDDED_TAG, WEIGHTS_DIR
from timm_sknet.training.checkpoint import save_checkpoint

if 'transformers' in LEFT_OUT:  # CI's minimum-versions job: transformers needs a newer huggingface_hub
    pytest.skip('TIMM_SKNET_TESTS_WITHOUT names transformers', allow_module_level=True)
from transformers import (  # noqa: E402
    AutoModelForImageClassification,
    TimmWrapperForImageClassification,
    TimmWrapperModel,
    pipeline,
)

ATOL = 1e-5


@pytest.fixture(scope='module')
def timm_model():
    return timm.create_model(EMBEDDED_TAG, pretrained=True).eval()


@pytest.fixture(scope='module')
def exported(timm_model, tmp_path_factory):
    return export_hub_folder(timm_model, tmp_path_factory.mktemp('export') / 'sknet_tiny')


def _images(n=4):
    return [Image.open(p).convert('RGB') for p in sorted(SAMPLES_DIR.glob('*.png'))[:n]]


def _timm_logits(model, images):
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.no_grad():
        return model(torch.stack([transform(im) for im in images]))


def test_the_exported_config_is_one_transformers_accepts(exported):
    config = json.loads((exported / 'config.json').read_text())
    assert 'num_classes' not in config.get('model_args', {}), 'transformers passes num_classes itself'
    assert config['label_names'] == list(EMBEDDED_CLASSES)
    assert config['num_classes'] == len(EMBEDDED_CLASSES)


@pytest.mark.parametrize('folder', ['exported', 'embedded'])
def test_auto_model_loads_the_folder_with_class_names_and_timms_logits(folder, exported, timm_model):
    path = exported if folder == 'exported' else WEIGHTS_DIR
    model = AutoModelForImageClassification.from_pretrained(str(path)).eval()
    assert isinstance(model, TimmWrapperForImageClassification)
    assert model.config.id2label == dict(enumerate(EMBEDDED_CLASSES))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected, got = timm_model(x), model(x).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)
    assert not torch.allclose(expected, timm.create_model('sknet_tiny', num_classes=6).eval()(x), atol=1e-3)


def test_timm_wrapper_model_gives_timms_pooled_features(exported, timm_model):
    model = TimmWrapperModel.from_pretrained(str(exported)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = timm_model.forward_head(timm_model.forward_features(x), pre_logits=True)
        out = model(x)
    torch.testing.assert_close(out.pooler_output, expected, rtol=0, atol=ATOL)


def test_pipeline_reports_class_names_with_timms_scores(exported, timm_model):
    images = _images()
    probs = _timm_logits(timm_model, images).softmax(-1)
    classify = pipeline('image-classification', model=str(exported), top_k=len(EMBEDDED_CLASSES))
    for image, p, result in zip(images, probs, classify(images)):
        got = {r['label']: r['score'] for r in result}
        assert set(got) == set(EMBEDDED_CLASSES)
        expected = {name: p[i].item() for i, name in enumerate(EMBEDDED_CLASSES)}
        assert got == pytest.approx(expected, abs=ATOL)


def test_a_fine_tuning_step_with_other_labels_then_the_export_still_loads_in_timm(exported, timm_model):
    labels = ['round', 'angular', 'other']
    model = AutoModelForImageClassification.from_pretrained(
        str(exported), num_labels=3, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
        ignore_mismatched_sizes=True)
    model.train()
    assert model.timm_model.get_classifier().out_features == 3
    stem_before = model.timm_model.conv1.weight.detach().clone()
    torch.testing.assert_close(stem_before, timm_model.conv1.weight)  # the backbone is the exported one
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(torch.randn(4, 3, 64, 64), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    optimizer.step()
    assert torch.isfinite(out.loss) and not torch.equal(model.timm_model.conv1.weight, stem_before)
    assert model.config.id2label == dict(enumerate(labels))
    # the folder is untouched and still timm's
    reloaded = timm.create_model(f'local-dir:{exported}', pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), timm_model(x), rtol=0, atol=0)


def test_a_training_checkpoint_folder_loads_in_transformers(tmp_path):
    """``timm-sknet train`` writes its model/ and checkpoint/ folders with save_checkpoint; the same writer here."""
    torch.manual_seed(3)
    model = timm.create_model('sknet18', layers=(1, 1, 1, 1), num_classes=3).eval()
    folder = save_checkpoint(tmp_path / 'model', model, None, label_names=['cat', 'dog', 'fox'])
    loaded = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    assert loaded.config.id2label == {0: 'cat', 1: 'dog', 2: 'fox'}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x), rtol=0, atol=ATOL)


FRESH_PROCESS = """
import json
from transformers import pipeline
classify = pipeline('image-classification', model={folder!r})
print(json.dumps([result[0]['label'] for result in classify({images!r})]))
"""


def test_the_pipeline_works_in_a_process_that_never_imports_the_package(exported, timm_model, wheel_site, tmp_path):
    """Without the autoload, transformers answers 'not supported in your version of timm' here."""
    images = sorted(str(p) for p in shutil.copytree(SAMPLES_DIR, tmp_path / 'images').glob('*.png'))[:4]
    proc = run_python(wheel_site, FRESH_PROCESS.format(folder=str(exported), images=images))
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = [EMBEDDED_CLASSES[i] for i in _timm_logits(timm_model, _images(4)).argmax(-1).tolist()]
    assert json.loads(proc.stdout.splitlines()[-1]) == expected
