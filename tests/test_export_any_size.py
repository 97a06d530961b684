"""Exports that take any input size, as detectors need: backbones, the FPN backbone and a whole detector.

Each exported file is run at sizes other than the one it was exported at (odd ones, and the detectors' usual
ones) and compared with the eager model on the same input.
"""
import onnxruntime as ort
import pytest
import torch
from helpers import rel_max_diff
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import timm

from timm_sknet.cli import main
from timm_sknet.detection import export_detector_onnx, run_detector_onnx, sknet_fpn_backbone
from timm_sknet.inference.export import export_onnx, export_torchscript

#: a small sknet: the sizes, not the width, are what these tests are about
TINY = dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64))
#: the issue's sizes: odd, square, letterboxed 640, and a Detectron-style 800 x 1344
SIZES = ((97, 131), (320, 320), (640, 640), (800, 1344))


def rel_err(outputs, references):
    """The largest relative difference over a model's outputs, each against its own scale."""
    return max(rel_max_diff(o, r) for o, r in zip(outputs, references, strict=True))


def _onnx_outputs(path, x):
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return [torch.from_numpy(o) for o in session.run(None, {'input': x.numpy()})]


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    return timm.create_model('sknet_tiny', features_only=True, out_indices=(1, 2, 3, 4), **TINY).eval()


@pytest.fixture(scope='module')
def pyramid():
    torch.manual_seed(0)
    return sknet_fpn_backbone('sknet_tiny', out_channels=16, feature_cls='list', **TINY).eval()


def test_a_backbone_exported_with_dynamic_size_runs_at_every_size(backbone, tmp_path):
    path = export_onnx(backbone, tmp_path / 'backbone.onnx', input_size=(3, 64, 64), dynamic_size=True)
    for h, w in SIZES:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = list(backbone(x))
        out = _onnx_outputs(path, x)
        assert [o.shape for o in out] == [r.shape for r in ref], (h, w)
        assert rel_err(out, ref) <= 1e-4, (h, w)


def test_without_dynamic_size_the_file_takes_its_export_size_only(backbone, tmp_path):
    path = export_onnx(backbone, tmp_path / 'fixed.onnx', input_size=(3, 64, 64))
    _onnx_outputs(path, torch.randn(2, 3, 64, 64))  # the batch stays dynamic
    with pytest.raises(Exception, match='dimensions'):
        _onnx_outputs(path, torch.randn(1, 3, 96, 64))


def test_the_fpn_backbone_exports_one_output_per_level_at_any_size(pyramid, tmp_path):
    path = export_onnx(pyramid, tmp_path / 'fpn.onnx', input_size=(3, 64, 64), dynamic_size=True)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        levels = list(pyramid(torch.randn(1, 3, 64, 64)))
    assert [o.name for o in session.get_outputs()] == [f'feature_{k}' for k in levels]
    for h, w in SIZES[:2]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = list(pyramid(x).values())
        assert rel_err(_onnx_outputs(path, x), ref) <= 1e-4, (h, w)


def test_the_fpn_backbone_scripts_with_torchscript(pyramid, tmp_path):
    path = export_torchscript(pyramid, tmp_path / 'fpn.pt', input_size=(3, 64, 64))
    scripted = torch.jit.load(str(path))
    for h, w in SIZES[:2]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            out, ref = scripted(x), pyramid(x)
        assert list(out) == list(ref)
        assert rel_err(list(out.values()), list(ref.values())) <= 1e-5


def _detections(d):
    """One row per detection (label, score, box), in an order that does not depend on how ties were broken."""
    rows = torch.cat([d['labels'][:, None].float(), d['scores'][:, None], d['boxes']], 1)
    return rows[sorted(range(len(rows)), key=lambda i: (rows[i, 0].item(), round(rows[i, 1].item(), 3),
                                                         *rows[i, 2:].round().tolist()))]


@pytest.mark.parametrize('kind', ['fasterrcnn', 'retinanet'])
def test_a_whole_detector_exports_and_gives_the_same_detections_at_several_sizes(kind, tmp_path):
    torch.manual_seed(0)
    if kind == 'fasterrcnn':
        detector = FasterRCNN(sknet_fpn_backbone('sknet_tiny', out_channels=16, **TINY), num_classes=3,
                              min_size=64, max_size=128, rpn_post_nms_top_n_test=50, box_detections_per_img=20,
                              box_score_thresh=0.0)
    else:
        # torchvision's RetinaNet layout: strides 8-32 and two extra levels, five in all
        detector = RetinaNet(sknet_fpn_backbone('sknet_tiny', out_channels=16, out_indices=(2, 3, 4),
                                                extra_blocks=LastLevelP6P7(16, 16), **TINY),
                             num_classes=3, min_size=64, max_size=128, detections_per_img=20, score_thresh=0.0)
        # untrained, every score sits at the head's prior (0.01) and the order of near-ties is arbitrary: spread them
        cls_logits = detector.head.classification_head.cls_logits
        torch.nn.init.normal_(cls_logits.weight, std=1.0)
        torch.nn.init.zeros_(cls_logits.bias)
    detector.eval()
    path = export_detector_onnx(detector, tmp_path / 'detector.onnx', image_size=(3, 64, 80))
    # short side at min_size: the detector's resize is the identity, so both see the same pixels (see the
    # function's docstring for other sizes)
    for h, w in ((64, 80), (64, 128), (100, 64), (64, 64)):
        image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.no_grad():
            ref = detector([image])[0]
        out = run_detector_onnx(path, image)
        assert sorted(out) == sorted(ref)
        assert len(ref['boxes']) > 0, 'the comparison needs detections'
        got, want = _detections(out), _detections(ref)  # as sets: the order of equal scores is arbitrary
        assert got.shape == want.shape, (h, w)
        assert torch.allclose(got, want, atol=1e-2), (h, w)


def test_cli_exports_a_backbone_for_any_size(tmp_path, capsys):
    out = tmp_path / 'backbone.onnx'
    assert main(['export', 'onnx', str(out), '--model', 'sknet_tiny', '--features-only', '--out-indices', '2', '3',
                 '--dynamic-size', '--img-size', '64']) == 0
    assert 'any input size' in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert len(session.get_outputs()) == 2
    x = torch.randn(1, 3, 97, 131)
    shapes = [o.shape for o in session.run(None, {'input': x.numpy()})]
    eager = timm.create_model('sknet_tiny', features_only=True, out_indices=(2, 3)).eval()
    with torch.no_grad():
        assert shapes == [tuple(f.shape) for f in eager(x)]  # strides 8 and 16 of 97 x 131


def test_cli_refuses_out_indices_without_features_only(tmp_path, capsys):
    assert main(['export', 'onnx', str(tmp_path / 'm.onnx'), '--model', 'sknet_tiny', '--out-indices', '2']) == 2
    assert '--features-only' in capsys.readouterr().err


def test_openvino_ir_exported_with_dynamic_size_runs_at_every_size(backbone, tmp_path):
    ov = pytest.importorskip('openvino')
    from timm_sknet.inference.openvino_ir import compile_config, export_openvino
    folder = export_openvino(backbone, tmp_path / 'ir', input_size=(3, 64, 64), dynamic_size=True)
    compiled = ov.Core().compile_model(str(folder / 'model.xml'), 'CPU', compile_config('fp32'))
    for h, w in SIZES[:3]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = list(backbone(x))
        result = compiled(x.numpy())
        out = [torch.from_numpy(result[o]) for o in compiled.outputs]
        assert rel_err(out, ref) <= 1e-4, (h, w)
