"""SKNet feature pyramids for torchvision's detectors (Faster/Mask R-CNN, RetinaNet, FCOS, ...).

torchvision's detectors take a backbone module with an ``out_channels`` attribute whose forward returns an
ordered dict of equally wide feature maps. Its ``BackboneWithFPN`` builds that from torchvision-style models
by module name; this module builds it from a timm ``features_only`` model, so every sknet (and every other
timm model with ``feature_info``) plugs in with timm's pretrained loading, ``output_stride``, ``in_chans``
and gradient checkpointing::

    from torchvision.models.detection import FasterRCNN
    from timm_sknet.detection import sknet_fpn_backbone

    backbone = sknet_fpn_backbone('sknet50', pretrained=True, trainable_layers=3)
    detector = FasterRCNN(backbone, num_classes=91)

:func:`export_detector_onnx` writes a whole detector (backbone, RPN or heads, box post-processing) as one ONNX
file that takes an image of any size.

torchvision is needed only here (``pip install timm-sknet[detection]``); ``import timm_sknet`` never
imports this module.
"""
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork, LastLevelMaxPool

import timm
from timm.layers import freeze_batch_norm_2d

from .inference.export import MIN_ONNX_OPSET, PathLike, atomic_export_path, eval_copy

__all__ = ['FeaturePyramidBackbone', 'export_detector_onnx', 'run_detector_onnx', 'sknet_fpn_backbone']

# the body's top-level modules per pyramid level, stem first (as torchvision's trainable_layers counts them)
_LEVEL_MODULES = (('conv1', 'bn1'), ('layer1',), ('layer2',), ('layer3',), ('layer4',))


class FeaturePyramidBackbone(nn.Module):
    """A timm ``features_only`` model followed by torchvision's Feature Pyramid Network.

    Args:
        body: a timm feature extractor (``features_only=True``); its ``feature_info`` gives the widths.
        out_channels: width of every pyramid level (256 in the FPN paper).
        extra_blocks: extra levels; ``None`` is torchvision's default, one max-pooled level ('pool'), as
            Faster R-CNN expects. RetinaNet uses ``LastLevelP6P7(out_channels, out_channels)``.
        norm_layer: normalisation inside the FPN convs (none by default, as torchvision).

    Forward returns an ``OrderedDict`` with keys '0', '1', ... (finest first) plus the extra levels' names.
    """

    def __init__(
            self,
            body: nn.Module,
            out_channels: int = 256,
            extra_blocks: Optional[ExtraFPNBlock] = None,
            norm_layer: Optional[Callable[..., nn.Module]] = None,
    ):
        super().__init__()
        if not hasattr(body, 'feature_info'):
            raise TypeError(
                f'body must be a timm feature extractor with feature_info, got {type(body).__name__}; '
                f"create it with timm.create_model(name, features_only=True)")
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=getattr(body, 'feature_info').channels(),
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool() if extra_blocks is None else extra_blocks,
            norm_layer=norm_layer,
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = self.body(x)
        if not torch.jit.is_scripting():  # TorchScript compiles only the list route (feature_cls='list')
            if isinstance(features, dict):  # feature_cls='dict'
                features = list(features.values())
        return self.fpn({str(i): f for i, f in enumerate(features)})

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the body's stages in backward instead of storing their activations."""
        getattr(self.body, 'set_grad_checkpointing')(enable)


def sknet_fpn_backbone(
        model_name: str = 'sknet50',
        pretrained: bool = False,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        out_channels: int = 256,
        extra_blocks: Optional[ExtraFPNBlock] = None,
        freeze_bn: Optional[bool] = None,
        trainable_layers: Optional[int] = None,
        **model_kwargs: Any,
) -> FeaturePyramidBackbone:
    """An sknet (or any timm model) with an FPN, ready for ``torchvision.models.detection``.

    Args:
        model_name: timm model name, e.g. 'sknet50'.
        pretrained: load the model's pretrained weights (``model_kwargs`` may carry
            ``pretrained_cfg_overlay=dict(file=...)`` for local weights).
        out_indices: feature levels fed to the FPN; (1, 2, 3, 4) are strides 4 to 32, as torchvision's ResNets.
        out_channels: FPN width.
        extra_blocks: extra pyramid levels (see :class:`FeaturePyramidBackbone`).
        freeze_bn: replace every BatchNorm (the SK attention's included) by a frozen one, as detectors do
            for pretrained backbones trained at small batch sizes (batch 1 works). Default: ``pretrained``,
            as torchvision. Not for random init: it would freeze the zero-initialised last BN of each block.
        trainable_layers: train only the last N of the 5 levels (stem, stage 1-4), as torchvision's
            ``trainable_layers``; the rest get ``requires_grad=False``. Default: all when not pretrained,
            3 when pretrained.
        **model_kwargs: passed to ``timm.create_model`` (``output_stride``, ``in_chans``, ``drop_path_rate``,
            ``feature_cls``: 'getter' by default, which checkpoints block by block).
    """
    if freeze_bn is None:
        freeze_bn = pretrained
    elif freeze_bn and not pretrained:
        warnings.warn(
            'freeze_bn=True without pretrained weights fixes BatchNorm at its initial values, including the '
            'zero scale timm gives the last BatchNorm of every residual block, so those blocks stay dead. '
            'Load trained weights into the backbone before training, or use freeze_bn=False.', stacklevel=2)
    if trainable_layers is None:
        trainable_layers = 3 if pretrained else 5
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f'trainable_layers must be in 0..5 (stem and 4 stages), got {trainable_layers}')
    # 'getter' runs forward_intermediates, whose grad checkpointing is per block rather than per stage:
    # a lower peak for the same features (`timm-sknet bench backbone`, training step memory)
    model_kwargs.setdefault('feature_cls', 'getter')
    body = timm.create_model(
        model_name, pretrained=pretrained, features_only=True, out_indices=tuple(out_indices), **model_kwargs)
    if freeze_bn:
        body = freeze_batch_norm_2d(body)
    frozen = {m for level in _LEVEL_MODULES[:5 - trainable_layers] for m in level}
    if frozen:
        def top_module(name: str) -> str:  # 'model.layer1.0.conv1.weight' (getter) -> 'layer1'
            return name.removeprefix('model.').split('.')[0]
        # by module, not parameter: a frozen BatchNorm (pretrained) keeps its statistics as buffers only
        missing = frozen - {top_module(n) for n, _ in body.named_modules() if n}
        if missing:
            raise ValueError(
                f'trainable_layers={trainable_layers} freezes ResNet-style modules (conv1, bn1, layer1-4); '
                f'{model_name} has no {", ".join(sorted(missing))}. Use trainable_layers=5 and set requires_grad '
                f'yourself')
        for name, param in body.named_parameters():
            if top_module(name) in frozen:
                param.requires_grad_(False)
    return FeaturePyramidBackbone(body, out_channels=out_channels, extra_blocks=extra_blocks)



def export_detector_onnx(detector: nn.Module, path: PathLike, *, image_size: Sequence[int] = (3, 320, 320),
                         opset: int = MIN_ONNX_OPSET) -> Path:
    """Write a torchvision detector (Faster R-CNN, RetinaNet, FCOS, ...; on :func:`sknet_fpn_backbone` or any
    backbone) as one ONNX file whose input ``image`` is one (3, H, W) image of any H and W, in [0, 1] as the
    detector takes it, and whose outputs are the detector's own per-image keys (``boxes``, ``labels``, ``scores``;
    ``masks`` for Mask R-CNN), in its order.

    The detector's own transform (resize to ``min_size``, normalisation) and post-processing are in the file, so it
    answers what ``detector([image])[0]`` answers. One difference remains: ONNX's resize samples pixels with the
    scale it is given where PyTorch recomputes it from the rounded output size, so for an image whose short side
    is not ``min_size`` (the resize scale not 1) the inputs of the two differ by a fraction of a pixel, and scores
    close to a tie may swap; an image already at ``min_size`` gives the same detections. Written atomically, after
    ``onnx.checker``; compare with :func:`run_detector_onnx`.
    """
    import onnx  # (fail early, with the package name, if the extra is missing)

    model = eval_copy(detector)
    example = torch.rand(*image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        names = list(model([example])[0])  # the exporter flattens the dict in its order (RetinaNet: scores first)
    axes = {'image': {1: 'height', 2: 'width'}, **{name: {0: 'detections'} for name in names}}
    with atomic_export_path(path, '.onnx') as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # tracer warnings on torchvision's size arithmetic, which it handles
            torch.onnx.export(model, ([example],), str(tmp), dynamo=False, opset_version=opset,
                              input_names=['image'], output_names=names, dynamic_axes=axes)
        onnx.checker.check_model(str(tmp))
    return Path(path)


def run_detector_onnx(path: Union[str, Path], image: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The detections of one (3, H, W) image by the file :func:`export_detector_onnx` wrote, run by onnxruntime
    (CPU), as the detector's own ``{'boxes', 'labels', 'scores', ...}`` dict."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    outputs: List[Any] = session.run(None, {'image': image.detach().float().cpu().numpy()})
    return {o.name: torch.from_numpy(v) for o, v in zip(session.get_outputs(), outputs)}
