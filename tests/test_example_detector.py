"""examples/finetune_detector.py runs end to end with tiny settings (both detectors)."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

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
    out = capsys.readouterr().out
    assert 'epoch 1/1' in out
    assert f"held-out: precision {result['precision']:.2f}  recall {result['recall']:.2f}" in out


class _Scripted(torch.nn.Module):
    """A stand-in detector that answers each image with the detections written for it."""

    def __init__(self, answers):
        super().__init__()
        self.answers = iter(answers)

    def forward(self, images):
        boxes, labels, scores = next(self.answers)
        return [dict(boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), labels=torch.tensor(labels),
                     scores=torch.tensor(scores))]


def test_evaluate_counts_matches_as_written_by_hand(example):
    """Precision and recall at IoU 0.5 with matching labels, each true box matched once, scores >= 0.5."""
    a, b = [0., 0., 20., 20.], [30., 30., 50., 50.]
    data = [(torch.zeros(3, 64, 64), dict(boxes=torch.tensor([a, b]), labels=torch.tensor([1, 2]))),
            (torch.zeros(3, 64, 64), dict(boxes=torch.tensor([b]), labels=torch.tensor([1])))]
    answers = [
        ([[1., 1., 20., 21.],   # a, right label: true positive (IoU 0.9)
          [0., 0., 19., 20.],   # a again: a is taken, so a false positive
          [30., 30., 50., 50.],  # b's box with a's label: false positive
          [0., 40., 10., 50.],  # nothing there: false positive
          [30., 30., 50., 50.]],  # b, right label, but below the score threshold: not counted
         [1, 1, 1, 2, 2], [0.9, 0.8, 0.7, 0.6, 0.3]),
        ([[30., 30., 40., 40.]], [1], [0.9]),  # right label, IoU 0.25: a false positive, b missed
    ]
    metrics = example.evaluate(_Scripted(answers), data, score_threshold=0.5)
    assert metrics == {'precision': pytest.approx(1 / 5), 'recall': pytest.approx(1 / 3)}
