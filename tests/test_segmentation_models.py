"""segmentation_models_pytorch with ``tu-sknet*`` encoders: Unet, FPN, DeepLabV3+ (output stride 16 and 8), the
embedded weights as encoder weights, and a saved model reloaded by a process that never imports timm_sknet."""
import json

import pytest
import segmentation_models_pytorch as smp
import torch
from installed_package import *  # noqa: F401,F403  (fixtures)
from installed_package import run_python

import timm

# one block per stage: the same SK blocks, a fraction of the time; no zero-initialised last BN, whose zero
# scale would (rightly) stop every gradient inside its residual branch at initialisation
SMALL = dict(layers=(1, 1, 1, 1), zero_init_last=False)
IMG = 64

CASES = {
    'unet-sknet18': (smp.Unet, 'tu-sknet18', {}, 32),
    'fpn-sknet50': (smp.FPN, 'tu-sknet50', {}, 32),
    'deeplabv3plus-sknet50-os16': (smp.DeepLabV3Plus, 'tu-sknet50', dict(encoder_output_stride=16), 16),
    'deeplabv3plus-sknet18-os8': (smp.DeepLabV3Plus, 'tu-sknet18', dict(encoder_output_stride=8), 8),
}


@pytest.mark.parametrize('case', list(CASES))
def test_forward_and_backward_reach_every_encoder_parameter(case):
    cls, encoder, kwargs, stride = CASES[case]
    torch.manual_seed(0)
    model = cls(encoder, encoder_weights=None, classes=3, **kwargs, **SMALL)
    x = torch.randn(2, 3, IMG, IMG)
    features = model.encoder(x)
    assert min(f.shape[-1] for f in features) == IMG // stride, 'the encoder runs at the asked output stride'
    out = model(x)
    assert out.shape == (2, 3, IMG, IMG)
    out.square().mean().backward()
    no_grad = [n for n, p in model.encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == [], no_grad[:5]
    assert any('attn' in n for n, _ in model.encoder.named_parameters()), 'SK attention is inside the encoder'


def test_encoder_weights_true_loads_the_embedded_tag():
    model = smp.Unet('tu-sknet_tiny.synthetic', encoder_weights=True, classes=2)
    reference = timm.create_model('sknet_tiny.synthetic', pretrained=True).state_dict()
    encoder = model.encoder.model.state_dict()
    assert len(encoder) > 100 and all(torch.equal(v, reference[k]) for k, v in encoder.items())
    random = smp.Unet('tu-sknet_tiny', encoder_weights=None, classes=2).encoder.model.state_dict()
    assert not torch.equal(random['conv1.weight'], encoder['conv1.weight'])


RELOAD = """
import json, torch
import segmentation_models_pytorch as smp
model = smp.from_pretrained({folder!r}).eval()
with torch.no_grad():
    torch.save(model(torch.load({inputs!r})), {outputs!r})
print(json.dumps({{'class': type(model).__name__, 'plugin': 'timm_sknet' in sys.modules}}))
"""


def test_a_saved_model_reloads_in_a_process_that_never_imports_the_package(wheel_site, tmp_path):
    torch.manual_seed(1)
    model = smp.DeepLabV3Plus('tu-sknet_tiny.synthetic', encoder_weights=True, encoder_output_stride=8,
                              classes=4).eval()
    model.save_pretrained(tmp_path / 'saved')
    x = torch.randn(2, 3, IMG, IMG)
    torch.save(x, tmp_path / 'x.pt')
    code = RELOAD.format(folder=str(tmp_path / 'saved'), inputs=str(tmp_path / 'x.pt'), outputs=str(tmp_path / 'y.pt'))
    proc = run_python(wheel_site, code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {'class': 'DeepLabV3Plus', 'plugin': True}
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / 'y.pt'), model(x), rtol=0, atol=1e-5)
