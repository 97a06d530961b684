"""Parameter and multiply-add counts, the paper's figures, and the published top-1 of the pretrained weights.

MACs are counted by ``torch.utils.flop_counter`` (FLOPs / 2) on the meta device, so counting even
SKNet-152 allocates no memory and takes well under a second.
"""
from typing import Any, Dict, NamedTuple, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import timm

__all__ = ['PAPER', 'PaperFigures', 'WEIGHTS_TOP1', 'WeightsTop1', 'count_params', 'count_macs', 'measure']


class PaperFigures(NamedTuple):
    """The paper's Table 2 for SKNet-50/101 (its GFLOPs are multiply-adds), for the networks it describes."""
    params_m: float
    gmacs: float
    top1: float  # ImageNet-1k top-1 at 224, single crop: 100 - the reported top-1 error


#: SKNet-50/101 of the paper; the ``*_caffe`` models are the authors' published networks of that table
PAPER: Dict[str, PaperFigures] = {
    'sknet50': PaperFigures(27.5, 4.47, 79.21),
    'sknet101': PaperFigures(48.9, 8.46, 79.81),
    'sknet50_caffe': PaperFigures(27.5, 4.47, 79.21),
    'sknet101_caffe': PaperFigures(48.9, 8.46, 79.81),
}


class WeightsTop1(NamedTuple):
    """ImageNet-1k top-1 of one pretrained tag's file, as its publisher reports it (not measured here)."""
    top1: float
    source: str


#: the tags whose files are timm's: timm's results-imagenet.csv (224 px, crop 0.875) for the source checkpoint
WEIGHTS_TOP1: Dict[str, WeightsTop1] = {
    'sknet18.ra_in1k': WeightsTop1(73.020, 'timm, skresnet18.ra_in1k'),
    'sknet34.ra_in1k': WeightsTop1(76.956, 'timm, skresnet34.ra_in1k'),
    'sknet50.ra_in1k': WeightsTop1(80.168, 'timm, skresnext50_32x4d.ra_in1k'),
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: Tuple[int, int, int] = (3, 224, 224)) -> int:
    """Multiply-adds of one forward pass of one image, counted by torch's flop counter."""
    device = next(model.parameters()).device
    x = torch.zeros((1, *input_size), device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def measure(model_name: str, input_size: Tuple[int, int, int] = (3, 224, 224), **kwargs: Any) -> Tuple[int, int]:
    """(params, MACs) of a registered model, built on the meta device."""
    with torch.device('meta'):
        model = timm.create_model(model_name, **kwargs)
    return count_params(model), count_macs(model, input_size)
