"""Parameter and multiply-add counts, and the published figures to compare them with.

MACs are counted by ``torch.utils.flop_counter`` (FLOPs / 2) on the meta device, so counting even
SKNet-152 allocates no memory and takes well under a second.
"""
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import timm

__all__ = ['PublishedFigures', 'PUBLISHED', 'count_params', 'count_macs', 'measure']


class PublishedFigures(NamedTuple):
    """Reference figures: the paper's (SKNet-50/101) or timm's (SK-ResNet-18/34) where the paper has none."""
    params_m: float
    gmacs: float
    top1: Optional[float]  # ImageNet-1k top-1 at 224 (paper: 100 - top-1 error)
    source: str


PUBLISHED: Dict[str, PublishedFigures] = {
    'sknet18': PublishedFigures(11.96, 1.814, 73.020, 'timm skresnet18.ra_in1k'),
    'sknet34': PublishedFigures(22.28, 3.664, 76.956, 'timm skresnet34.ra_in1k'),
    'sknet50': PublishedFigures(27.5, 4.47, 79.21, 'paper, Table 2'),
    'sknet101': PublishedFigures(48.9, 8.46, 79.81, 'paper, Table 2'),
    # the authors' Caffe models, whose accuracy Table 2 reports
    'sknet50_caffe': PublishedFigures(27.5, 4.47, 79.21, 'paper, Table 2'),
    'sknet101_caffe': PublishedFigures(48.9, 8.46, 79.81, 'paper, Table 2'),
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
