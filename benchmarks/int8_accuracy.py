#!/usr/bin/env python
"""int8's accuracy where it can be measured here: the embedded model on held-out shapes, sknet50 against fp32.

    python benchmarks/int8_accuracy.py             # ~2 minutes on 2 cores; prints a markdown table

1. ``sknet_tiny.synthetic`` (the embedded model, trained on the synthetic shapes): int8 through OpenVINO +
   NNCF, calibrated on 300 training-split images, evaluated with fp32 on 1,200 held-out validation images
   (a split the model never saw): top-1 of each and their top-1 agreement.
2. ``sknet50`` at 224 px with timm's initialisation and randomised BatchNorm statistics (no ImageNet weights
   are reachable offline): int8 calibrated on 300 synthetic images, compared with fp32 on 64 other ones:
   the relative error of the logits and the top-1 / top-5 agreement. Random weights give flat logits, so
   this agreement is a harder test than a trained model's would be, and says nothing about ImageNet top-1.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm  # noqa: E402

import timm_sknet  # noqa: E402,F401  (registers the models)
from timm_sknet.inference import optimize  # noqa: E402
from timm_sknet.inference.outputs import relative_error  # noqa: E402
from timm_sknet.tools.synthetic_data import SyntheticShapes  # noqa: E402


def _batches(model, split: str, n: int, size: int, num_classes: int, seed: int = 0, batch: int = 100):
    config = timm.data.resolve_data_config({'input_size': (3, size, size)}, model=model)
    transform = timm.data.create_transform(**config)
    ds = SyntheticShapes(n, image_size=size, seed=seed, split=split, num_classes=num_classes, transform=transform)
    images = [torch.stack([ds[i][0] for i in range(j, min(j + batch, n))]) for j in range(0, n, batch)]
    return images, torch.tensor(ds.targets)


def _logits(model, batches):
    with torch.inference_mode():
        return torch.cat([model(b) for b in batches])


def embedded_model(num_eval: int) -> dict:
    model = timm.create_model('sknet_tiny.synthetic', pretrained=True).eval()
    calibration, _ = _batches(model, 'train', 300, 64, model.num_classes)
    held_out, labels = _batches(model, 'validation', num_eval, 64, model.num_classes)
    int8 = optimize(model, 'openvino', 'int8', calibration=calibration)
    ref, out = _logits(model, held_out).argmax(1), _logits(int8, held_out).argmax(1)
    return {'images': num_eval, 'fp32_top1': (ref == labels).float().mean().item(),
            'int8_top1': (out == labels).float().mean().item(), 'agreement': (out == ref).float().mean().item()}


def sknet50_agreement(num_eval: int) -> dict:
    torch.manual_seed(0)
    model = timm.create_model('sknet50').eval()
    for m in model.modules():  # BatchNorm statistics as after training, so activations are not all alike
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    calibration, _ = _batches(model, 'calibration', 300, 224, 6, batch=32)
    images, _ = _batches(model, 'validation', num_eval, 224, 6, batch=32)
    int8 = optimize(model, 'openvino', 'int8', calibration=calibration)
    ref, out = _logits(model, images), _logits(int8, images)
    top5 = ref.topk(5, dim=1).indices
    return {'images': num_eval, 'relative_error': relative_error(out, ref),
            'top1_agreement': (out.argmax(1) == ref.argmax(1)).float().mean().item(),
            'top1_in_fp32_top5': (top5 == out.argmax(1, keepdim=True)).any(1).float().mean().item()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--tiny-images', type=int, default=1200)
    p.add_argument('--sknet50-images', type=int, default=64)
    args = p.parse_args(argv)
    tiny = embedded_model(args.tiny_images)
    big = sknet50_agreement(args.sknet50_images)
    print('| model | images | fp32 top-1 | int8 top-1 | top-1 agreement |')
    print('|---|---|---|---|---|')
    print(f"| sknet_tiny.synthetic, held-out shapes | {tiny['images']} | {tiny['fp32_top1']:.2%} | "
          f"{tiny['int8_top1']:.2%} | {tiny['agreement']:.2%} |")
    print(f"\nsknet50 (random weights), {big['images']} synthetic 224 px images: logits' relative error "
          f"{big['relative_error']:.3f}, top-1 agreement {big['top1_agreement']:.1%}, "
          f"int8 top-1 within fp32's top-5 {big['top1_in_fp32_top5']:.1%}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
