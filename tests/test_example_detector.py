"""examples/finetune_detector.py runs from data to an exported, running detector with tiny settings, and its
mAP (pycocotools) is the COCO definition, checked on detections whose AP is worked out by hand."""
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
        # the box is tight: each of its edges touches pixels of the shape's colour, brighter than the noise (<= 0.4)
        x1, y1, x2, y2 = boxes[0].int().tolist()
        assert image[:, y1:y2, x1:x2].amax() > 0.4


def test_the_flip_moves_the_boxes_with_the_image(example):
    image, target = example.make_shapes(1, 64, seed=3)[0]
    flipped, moved = example.ShapesDataset([(image, target)], example.v2.RandomHorizontalFlip(1.0))[0]
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(moved['boxes'][:, [0, 2]], 64 - target['boxes'][:, [2, 0]])


@pytest.mark.slow  # trains a detector for 3 epochs: about a minute of CPU time
def test_example_trains_saves_loads_and_exports_a_detector_whose_map_rises(example, tmp_path, capsys):
    result = example.main(['--model', 'sknet_tiny', '--images', '16', '--val-images', '6', '--epochs', '3',
                           '--batch-size', '2', '--image-size', '64', '--fpn-channels', '32', '--out', str(tmp_path)])
    assert math.isfinite(result['loss'])
    assert result['trained']['map'] > result['untrained']['map']
    assert (tmp_path / 'detector.pt').is_file() and (tmp_path / 'detector.onnx').is_file()
    onnx = result['onnx']  # run by onnxruntime on a 96x80 image, against the loaded PyTorch detector
    assert onnx['detections'] == onnx['eager_detections'] > 0 and onnx['max_box_difference'] < 1e-2
    out = capsys.readouterr().out
    assert 'epoch 3/3' in out and f"held-out COCO mAP {result['trained']['map']:.3f}" in out


def _detections(*rows):
    return dict(boxes=torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4),
                labels=torch.tensor([r[1] for r in rows], dtype=torch.int64),
                scores=torch.tensor([r[2] for r in rows], dtype=torch.float32))


def test_coco_map_is_the_coco_definition(example):
    a, b = [0., 0., 20., 20.], [30., 30., 50., 50.]
    data = [(torch.zeros(3, 64, 64), dict(boxes=torch.tensor([a, b]), labels=torch.tensor([1, 1])))]
    assert example.coco_map([_detections((a, 1, 0.9), (b, 1, 0.8))], data) == {'map': 1.0, 'map_50': 1.0}
    assert example.coco_map([_detections()], data) == {'map': 0.0, 'map_50': 0.0}
    # one of two boxes found, exactly: recall reaches 0.5 at precision 1, so of COCO's 101 recall points
    # 0, 0.01, ..., 0.5 (51 of them) have precision 1 and the rest 0, at every IoU threshold
    assert example.coco_map([_detections((a, 1, 0.9))], data)['map'] == pytest.approx(51 / 101)
    # the wrong class finds nothing (class 2 has no ground truth here, so only class 1 is averaged)
    assert example.coco_map([_detections((a, 2, 0.9))], data)['map'] == 0.0
