"""Fine-tune a torchvision detector on an SKNet feature pyramid, from data to a deployed ONNX file.

Every step a detection project takes, on a tiny dataset this script draws (rectangles, class 1, and ellipses,
class 2, in random colours on noise, with exact boxes), so it runs on a CPU in minutes:

1. the data as torchvision's detection references keep it: ``(image, {'boxes', 'labels'})`` pairs, boxes as
   ``tv_tensors.BoundingBoxes`` so that ``transforms.v2`` flips them with the image, batched by a
   ``DataLoader`` whose ``collate_fn`` keeps the lists (``tuple(zip(*batch))``, the references' ``collate_fn``);
2. Faster R-CNN (or RetinaNet) on ``timm_sknet.detection.sknet_fpn_backbone``, trained for a few epochs;
3. the checkpoint saved (``torch.save`` of the state dict) and loaded into a freshly built detector;
4. COCO mAP with pycocotools' ``COCOeval``, of the untrained detector and of the loaded one;
5. the detector exported to ONNX with dynamic image height and width, and the file run with onnxruntime on
   an image of another size than trained on, against the PyTorch detector.

::

    python examples/finetune_detector.py --out runs/shapes
    python examples/finetune_detector.py --detector retinanet --epochs 10
    python examples/finetune_detector.py --weights skresnet18.safetensors  # start from local weights
    python examples/finetune_detector.py --pretrained --model sknet50      # Hub weights (needs network)

With pretrained weights the backbone's BatchNorm is frozen; from scratch it trains, so keep --batch-size >= 2.
"""
import argparse
import contextlib
import io
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.transforms import v2

import timm_sknet  # noqa: F401  (registers the sknet models in timm)
from timm_sknet.detection import export_detector_onnx, run_detector_onnx, sknet_fpn_backbone

CLASSES = ('background', 'rectangle', 'ellipse')
Target = Dict[str, torch.Tensor]


def make_shapes(n: int, size: int, seed: int) -> List[Tuple[torch.Tensor, Target]]:
    """``n`` images (3, size, size) in [0, 1] with 1-3 shapes each, their boxes (x1, y1, x2, y2) and labels.

    (timm_sknet.data.synthetic draws one shape per image and records its bounding circle, not a box: a
    detection set wants several objects and tight boxes, so they are drawn here.)
    """
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
        target = dict(boxes=tv_tensors.BoundingBoxes(boxes, format='XYXY', canvas_size=(size, size)),
                      labels=torch.tensor(labels))
        data.append((image, target))
    return data


class ShapesDataset(torch.utils.data.Dataset):
    """The drawn pairs, through a ``transforms.v2`` transform of (image, target) as the references apply it."""

    def __init__(self, data: Sequence[Tuple[torch.Tensor, Target]], transform: Optional[v2.Transform] = None):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Target]:
        image, target = self.data[index]
        return self.transform(image, target) if self.transform is not None else (image, target)


def collate(batch: Sequence[Any]) -> Tuple[Any, ...]:
    """torchvision's references/detection/utils.py ``collate_fn``: lists of images and of targets."""
    return tuple(zip(*batch))


def build_detector(args: argparse.Namespace, pretrained: Optional[bool] = None) -> torch.nn.Module:
    """Faster R-CNN (or RetinaNet) on an SKNet feature pyramid, sized for ``args.image_size`` images."""
    pretrained = (args.pretrained or args.weights is not None) if pretrained is None else pretrained
    model_kwargs = dict(pretrained_cfg_overlay=dict(file=args.weights)) if args.weights and pretrained else {}
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
    """SGD with linear warm-up and cosine decay, as torchvision's detection references train; the last epoch's loss."""
    # drop_last: a batch of one cannot train BatchNorm (see the SK attention's error)
    loader = DataLoader(ShapesDataset(data, v2.RandomHorizontalFlip(0.5)), batch_size=args.batch_size, shuffle=True,
                        drop_last=True, collate_fn=collate, generator=torch.Generator().manual_seed(args.seed))
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    total = args.epochs * len(loader)
    warmup = min(50, total // 4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * 0.5 * (
        1 + math.cos(math.pi * min(s, total) / total)))
    mean_loss = float('nan')
    detector.train()
    for epoch in range(args.epochs):
        start, sums = time.time(), {}
        for images, targets in loader:
            losses = detector(list(images), list(targets))
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch + 1}: lower --lr')
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            schedule.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item() / len(loader)
        mean_loss = sum(sums.values())
        parts = '  '.join(f'{k} {v:.3f}' for k, v in sums.items())
        print(f'epoch {epoch + 1}/{args.epochs}  loss {mean_loss:.3f}  ({parts})  {time.time() - start:.1f}s',
              flush=True)
    return mean_loss


def _xywh(box: Sequence[float]) -> List[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def coco_map(predictions: Sequence[Target], data: Sequence[Tuple[torch.Tensor, Target]]) -> Dict[str, float]:
    """COCO box mAP (IoU 0.5:0.95) and AP50 of ``predictions`` (one dict of boxes, labels, scores per image) by
    pycocotools' ``COCOeval``, the ground truth converted as torchvision's references/detection/coco_utils.py does."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    images, annotations, results = [], [], []
    for i, ((image, target), out) in enumerate(zip(data, predictions)):
        images.append(dict(id=i, height=image.shape[-2], width=image.shape[-1]))
        for box, label in zip(target['boxes'].tolist(), target['labels'].tolist()):
            annotations.append(dict(id=len(annotations) + 1, image_id=i, category_id=label, bbox=_xywh(box),
                                    area=(box[2] - box[0]) * (box[3] - box[1]), iscrowd=0))
        results += [dict(image_id=i, category_id=label, bbox=_xywh(box), score=score) for box, label, score in zip(
            out['boxes'].tolist(), out['labels'].tolist(), out['scores'].tolist())]
    if not results:  # nothing detected (pycocotools cannot load an empty result list)
        return dict(map=0.0, map_50=0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = dict(images=images, annotations=annotations,
                             categories=[dict(id=k, name=name) for k, name in enumerate(CLASSES) if k])
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), 'bbox')
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return dict(map=float(evaluation.stats[0]), map_50=float(evaluation.stats[1]))


@torch.no_grad()
def evaluate(detector: torch.nn.Module, data: Sequence[Tuple[torch.Tensor, Target]]) -> Dict[str, float]:
    """The detector's COCO mAP on ``data``, one image at a time (as deployed)."""
    detector.eval()
    return coco_map([detector([image])[0] for image, _ in data], data)


def run_onnx(path: Path, detector: torch.nn.Module, image: torch.Tensor) -> Dict[str, Any]:
    """Detections of the exported file by onnxruntime on ``image``, and how far they are from PyTorch's."""
    got = run_detector_onnx(path, image)
    with torch.no_grad():
        ref = detector.eval()([image])[0]
    same = len(got['boxes']) == len(ref['boxes']) and torch.equal(got['labels'], ref['labels'])
    difference = float((got['boxes'] - ref['boxes']).abs().max()) if same and len(ref['boxes']) else 0.0 if same \
        else float('inf')
    return dict(detections=len(got['boxes']), eager_detections=len(ref['boxes']), max_box_difference=difference)


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
    p.add_argument('--out', type=Path, default=None, help='folder for detector.pt and detector.onnx (default: a '
                                                           'temporary folder, removed at the end)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    train_data = make_shapes(args.images, args.image_size, seed=args.seed)
    val_data = make_shapes(args.val_images, args.image_size, seed=args.seed + 1)
    detector = build_detector(args)
    print(f'{args.detector} on {args.model}: {len(train_data)} training and {len(val_data)} held-out images '
          f'of {args.image_size}px, {args.epochs} epochs', flush=True)
    untrained = evaluate(detector, val_data)
    loss = train(detector, train_data, args)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(detector.state_dict(), out / 'detector.pt')
        loaded = build_detector(args, pretrained=False)  # the architecture; the weights come from the checkpoint
        loaded.load_state_dict(torch.load(out / 'detector.pt', weights_only=True))
        trained = evaluate(loaded, val_data)
        print(f"held-out COCO mAP {trained['map']:.3f} (AP50 {trained['map_50']:.3f}); untrained "
              f"{untrained['map']:.3f} (AP50 {untrained['map_50']:.3f})", flush=True)
        # an image of another size than trained on: the exported file resizes it as the detector does
        other = make_shapes(1, args.image_size + 32, seed=args.seed + 2)[0][0][:, :, 16:]
        exported = export_detector_onnx(loaded, out / 'detector.onnx', image_size=(3, args.image_size, args.image_size))
        onnx = run_onnx(exported, loaded, other)
        print(f"ONNX on a {other.shape[1]}x{other.shape[2]} image: {onnx['detections']} detections "
              f"(PyTorch: {onnx['eager_detections']}), boxes within {onnx['max_box_difference']:.2g} px", flush=True)
    return dict(loss=loss, untrained=untrained, trained=trained, onnx=onnx)


if __name__ == '__main__':
    main()
