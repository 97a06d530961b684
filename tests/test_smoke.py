import torch

import timm


def test_sknet50_forward_small():
    model = timm.create_model('sknet50', num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)
