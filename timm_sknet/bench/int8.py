"""``int8-accuracy``: what int8 costs in accuracy, where that can be measured offline."""
from typing import Callable, List, Tuple

import torch
from torch import nn

import timm

from ..inference import optimize
from .report import Report
from .timing import describe_machine, randomize_batchnorm

__all__ = ['int8_accuracy']


def int8_accuracy(tiny_images: int = 1200, sknet50_images: int = 64, log: Callable[[str], None] = print) -> Report:
    """int8 (OpenVINO + NNCF) against fp32 where it can be measured offline.

    The embedded ``sknet_tiny.synthetic``: calibrated on 300 training-split shapes, evaluated on held-out ones (top-1
    of each and their agreement). ``sknet50`` with random weights and trained-like BatchNorm statistics at 224 px:
    calibrated on 300 synthetic images, compared with fp32 on others (relative error, top-1 agreement); random
    weights give flat logits, so this agreement is harder than a trained model's, and says nothing about ImageNet.
    """
    from ..data.synthetic import SyntheticShapes

    def batches(model: nn.Module, split: str, n: int, size: int, seed: int = 0,
                batch: int = 32) -> Tuple[List[torch.Tensor], List[int]]:
        transform = timm.data.create_transform(**timm.data.resolve_data_config(
            {'input_size': (3, size, size)}, model=model))
        ds = SyntheticShapes(n, image_size=size, seed=seed, split=split, num_classes=6, transform=transform)
        return [torch.stack([ds[i][0] for i in range(j, min(j + batch, n))]) for j in range(0, n, batch)], ds.targets

    def logits(model: nn.Module, images: List[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model(b) for b in images])
    rows = []
    for name, n_eval in (('sknet_tiny.synthetic', tiny_images), ('sknet50', sknet50_images)):
        model = timm.create_model(name, pretrained=name.endswith('synthetic')).eval()
        if name == 'sknet50':
            randomize_batchnorm(model)
        size = getattr(model, 'pretrained_cfg')['input_size'][-1]
        calibration, _ = batches(model, 'train', 300, size)
        images, labels = batches(model, 'validation', n_eval, size)
        ref, out = logits(model, images), logits(optimize(model, 'openvino', 'int8', calibration=calibration), images)
        targets = torch.tensor(labels)
        rows.append(dict(model=name, images=n_eval, relative_error=float((out - ref).abs().max() / ref.abs().max()),
                         top1_agreement=float((out.argmax(1) == ref.argmax(1)).float().mean()),
                         fp32_top1=float((ref.argmax(1) == targets).float().mean()) if model.num_classes == 6 else None,
                         int8_top1=float((out.argmax(1) == targets).float().mean()) if model.num_classes == 6 else None))
        log(f'  {name}: top-1 agreement {rows[-1]["top1_agreement"]:.2%}')
    return Report('int8 (OpenVINO + NNCF) against fp32', describe_machine(), {'accuracy': rows})
