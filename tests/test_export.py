"""Exported models (ONNX via onnxruntime, TorchScript, torch.compile) against the eager plain model."""
import os

import onnx
import onnxruntime as ort
import pytest
import torch
from small_models import make, rel_err
from torch import nn

from timm_sknet.inference import fuse_model
from timm_sknet.inference.export import export_onnx, export_torchscript

EXPORT_CONFIGS = ['sknet18', 'sknet50-M3-os16']


@pytest.fixture(scope='module', params=EXPORT_CONFIGS)
def models(request):
    torch.manual_seed(0)
    plain = make(request.param)
    return {'plain': plain, 'fused': fuse_model(plain)}


@pytest.mark.parametrize('kind', ['plain', 'fused'])
def test_onnx_dynamic_batch_matches_eager(models, kind, tmp_path):
    path = export_onnx(models[kind], tmp_path / 'm.onnx', input_size=(3, 64, 64), batch_size=2)
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')) >= 17
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x = torch.randn(3, 3, 64, 64)  # not the export batch size: the batch axis is dynamic
    out = torch.from_numpy(session.run(None, {'input': x.numpy()})[0])
    with torch.no_grad():
        ref = models['plain'](x)
    assert rel_err(out, ref) <= 1e-4
    assert os.listdir(tmp_path) == ['m.onnx']  # no temporary file left behind


@pytest.mark.parametrize('kind', ['plain', 'fused'])
def test_torchscript_matches_eager(models, kind, tmp_path):
    path = export_torchscript(models[kind], tmp_path / 'm.pt', input_size=(3, 64, 64))
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(loaded(x), models['plain'](x)) <= 1e-4


@pytest.mark.parametrize('kind', ['plain', 'fused'])
def test_torch_compile_fullgraph(models, kind):
    # backend='eager' proves one graph with no breaks (fullgraph raises otherwise) and stays fast in CI;
    # test_optimize exercises inductor
    compiled = torch.compile(models[kind], backend='eager', fullgraph=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert rel_err(compiled(x), models['plain'](x)) <= 1e-4


def test_export_leaves_nothing_on_failure(tmp_path):
    model = make('sknet18')
    with pytest.raises(RuntimeError, match='nothing was written'):
        export_onnx(model, tmp_path / 'bad.onnx', input_size=(3, 32, 32), rtol=-1.0)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='opset must be >= 17'):
        export_onnx(model, tmp_path / 'm.onnx', opset=16)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        export_onnx(model, tmp_path / 'missing' / 'm.onnx')
    with pytest.raises(ValueError, match="'script' or 'trace'"):
        export_torchscript(model, tmp_path / 'm.pt', method='freeze')


def test_export_keeps_callers_model_in_train_mode(tmp_path):
    model = make('sknet18').train()
    export_torchscript(model, tmp_path / 'm.pt', input_size=(3, 32, 32), method='trace')
    assert model.training


class _ScriptedDiffers(nn.Module):
    """A model whose TorchScript form computes something else than its eager form (a stand-in for an export bug)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if torch.jit.is_scripting():
            return y + 1.0
        return y


def test_torchscript_verification_refuses_a_file_that_differs_from_eager(tmp_path):
    with pytest.raises(RuntimeError, match='TorchScript differs from eager'):
        export_torchscript(_ScriptedDiffers(), tmp_path / 'm.pt', input_size=(3, 8, 8))
    assert os.listdir(tmp_path) == []  # nothing half-checked left at the destination
    export_torchscript(_ScriptedDiffers(), tmp_path / 'm.pt', input_size=(3, 8, 8), verify=False)
    assert os.listdir(tmp_path) == ['m.pt']  # the same model exports when the check is turned off
