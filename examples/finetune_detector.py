"""Fine-tune a torchvision detector on an SKNet feature pyramid, on a tiny dataset this script draws.

Rectangles (class 1) and ellipses (class 2) in random colours on noise, with exact boxes. The defaults
train Faster R-CNN on sknet18 for a few epochs on CPU in a couple of minutes, print the losses, then
report precision and recall at IoU 0.5 on held-out images::

    python examples/finetune_detector.py
    python examples/finetune_detector.py --detector retinanet --epochs 10
    python examples/finetune_detector.py --weights skresnet18.safetensors  # start from local weights
    python examples/finetune_detector.py --pretrained --model sknet50      # Hub weights (needs network)

With pretrained weights the backbone's BatchNorm is frozen (batch size 1 then works); from scratch it
trains, so keep --batch-size >= 2.
"""
import argparse
import math
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.ops import box_iou
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import timm_sknet  # noqa: F401  (registers the sknet models in timm)
from timm_sknet.detection import sknet_fpn_backbone

CLASSES = ('background', 'rectangle', 'ellipse')
Target = Dict[str, torch.Tensor]


def make_shapes(n: int, size: int, seed: int) -> List[Tuple[torch.Tensor, Target]]:
    """``n`` images (3, size, size) in [0, 1] with 1-3 shapes each, and their boxes (x1, y1, x2, y2) and labels."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing='ij')
    data = []
    for _ in range(n):
        image = torch.rand(3, size, size, generator=g) * 0.4  # noise background
        boxes, labels = [], []
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            w, h = (torch.rand(2, generator=g) * 0.35 + 0.15) * size
            x1 = float(torch.rand(1, generator=g)) * (size - w)
            y1 = float(torch.rand(1, generator=g)) * (size - h)
            label = int(torch.randint(1, 3, (1,), generator=g))
            if label == 1:
                mask = (xs >= x1) & (xs < x1 + w) & (ys >= y1) & (ys < y1 + h)
            else:
                cx, cy = x1 + w / 2, y1 + h / 2
                mask = ((xs - cx) / (w / 2)) ** 2 + ((ys - cy) / (h / 2)) ** 2 <= 1
            colour = torch.rand(3, 1, generator=g) * 0.5 + 0.5
            image[:, mask] = colour
            rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
            boxes.append([float(cols.min()), float(rows.min()), float(cols.max()) + 1, float(rows.max()) + 1])
            labels.append(label)
        data.append((image, dict(boxes=torch.tensor(boxes), labels=torch.tensor(labels))))
    return data


def build_detector(args: argparse.Namespace) -> torch.nn.Module:
    pretrained = args.pretrained or args.weights is not None
    model_kwargs = dict(pretrained_cfg_overlay=dict(file=args.weights)) if args.weights else {}
    common = dict(num_classes=len(CLASSES), min_size=args.image_size, max_size=args.image_size)
    if args.detector == 'retinanet':
        backbone = sknet_fpn_backbone(
            args.model, pretrained=pretrained, out_indices=(2, 3, 4), out_channels=args.fpn_channels,
            extra_blocks=LastLevelP6P7(args.fpn_channels, args.fpn_channels), **model_kwargs)
        detector = RetinaNet(backbone, **common)
    else:
        backbone = sknet_fpn_backbone(args.model, pretrained=pretrained, out_channels=args.fpn_channels, **model_kwargs)
        # a small box head: the default 1024-wide MLP is sized for COCO
        detector = FasterRCNN(backbone, representation_size=256, box_batch_size_per_image=128, **common)
    if args.grad_checkpointing:
        backbone.set_grad_checkpointing()
    return detector


def train(detector: torch.nn.Module, data: Sequence[Tuple[torch.Tensor, Target]], args: argparse.Namespace) -> float:
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(data) / args.batch_size)
    total, warmup = args.epochs * steps_per_epoch, min(50, steps_per_epoch * args.epochs // 4)
    # linear warm-up, then cosine decay
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * 0.5 * (
        1 + math.cos(math.pi * min(s, total) / total)))
    g = torch.Generator().manual_seed(args.seed)
    mean_loss = float('nan')
    detector.train()
    for epoch in range(args.epochs):
        start, sums, count = time.time(), {}, 0
        order = torch.randperm(len(data), generator=g).tolist()
        for i in range(0, len(order), args.batch_size):
            batch = [data[j] for j in order[i:i + args.batch_size]]
            if len(batch) < 2 and any(isinstance(m, torch.nn.BatchNorm2d) and m.training for m in detector.modules()):
                continue  # a last batch of 1 cannot train BatchNorm (see the SK attention's error)
            losses = detector([image for image, _ in batch], [target for _, target in batch])
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch + 1}: lower --lr')
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            schedule.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            count += 1
        mean_loss = sum(sums.values()) / max(count, 1)
        parts = '  '.join(f'{k} {v / max(count, 1):.3f}' for k, v in sums.items())
        print(f'epoch {epoch + 1}/{args.epochs}  loss {mean_loss:.3f}  ({parts})  {time.time() - start:.1f}s',
              flush=True)
    return mean_loss


@torch.no_grad()
def evaluate(detector: torch.nn.Module, data: Sequence[Tuple[torch.Tensor, Target]],
             score_threshold: float = 0.5) -> Dict[str, float]:
    """Precision and recall at IoU >= 0.5 with matching labels (greedy, highest score first)."""
    detector.eval()
    tp = n_pred = n_true = 0
    for image, target in data:
        out = detector([image])[0]
        keep = out['scores'] >= score_threshold
        boxes, labels = out['boxes'][keep], out['labels'][keep]
        n_pred, n_true = n_pred + len(boxes), n_true + len(target['boxes'])
        if len(boxes) == 0:
            continue
        iou = box_iou(boxes, target['boxes'])
        iou[labels[:, None] != target['labels'][None, :]] = 0
        matched = torch.zeros(len(target['boxes']), dtype=torch.bool)
        for row in iou:  # detections come sorted by score
            row = row.masked_fill(matched, 0)
            best = int(row.argmax())
            if row[best] >= 0.5:
                matched[best] = True
                tp += 1
    return dict(precision=tp / max(n_pred, 1), recall=tp / max(n_true, 1))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--detector', choices=('fasterrcnn', 'retinanet'), default='fasterrcnn')
    p.add_argument('--model', default='sknet18', help='timm model name for the backbone')
    p.add_argument('--pretrained', action='store_true', help="the model's pretrained weights (from the Hub)")
    p.add_argument('--weights', help='local weights file (.safetensors) for the backbone; implies pretrained')
    p.add_argument('--images', type=int, default=64, help='training images to draw')
    p.add_argument('--val-images', type=int, default=16, help='held-out images to draw')
    p.add_argument('--image-size', type=int, default=128)
    p.add_argument('--epochs', type=int, default=8)
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--lr', type=float, default=0.02)
    p.add_argument('--fpn-channels', type=int, default=64)
    p.add_argument('--grad-checkpointing', action='store_true', help='recompute backbone stages in backward')
    p.add_argument('--score-threshold', type=float, default=0.7, help='detections counted in the evaluation')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    train_data = make_shapes(args.images, args.image_size, seed=args.seed)
    val_data = make_shapes(args.val_images, args.image_size, seed=args.seed + 1)
    detector = build_detector(args)
    print(f'{args.detector} on {args.model}: {len(train_data)} training and {len(val_data)} held-out images '
          f'of {args.image_size}px, {args.epochs} epochs', flush=True)
    loss = train(detector, train_data, args)
    metrics = evaluate(detector, val_data, args.score_threshold)
    print(f"held-out: precision {metrics['precision']:.2f}  recall {metrics['recall']:.2f}  "
          f"(IoU >= 0.5, score >= {args.score_threshold})")
    return dict(loss=loss, **metrics)


if __name__ == '__main__':
    main()
