"""examples/finetune_detector.py runs end to end with tiny settings (both detectors)."""
import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / 'examples' / 'finetune_detector.py'


@pytest.fixture(scope='module')
def example():
    spec = importlib.util.spec_from_file_location('finetune_detector', EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_boxes_enclose_their_shapes(example):
    for image, target in example.make_shapes(4, 64, seed=3):
        assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
        boxes = target['boxes']
        assert len(boxes) == len(target['labels']) >= 1
        assert ((boxes[:, 2:] > boxes[:, :2]) & (boxes >= 0).all(1, keepdim=True)).all() and (boxes <= 64).all()
        assert set(target['labels'].tolist()) <= {1, 2}


@pytest.mark.parametrize('detector', ['fasterrcnn', 'retinanet'])
def test_example_trains_and_evaluates(example, detector, capsys):
    result = example.main([
        '--detector', detector, '--images', '4', '--val-images', '2', '--epochs', '1', '--batch-size', '2',
        '--image-size', '64', '--grad-checkpointing'])
    assert math.isfinite(result['loss'])
    assert 0 <= result['precision'] <= 1 and 0 <= result['recall'] <= 1
    out = capsys.readouterr().out
    assert 'epoch 1/1' in out and 'held-out: precision' in out
