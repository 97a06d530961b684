"""The SKNet family registered in timm: ``SKNet``, its ``default_cfgs`` and one entrypoint per model.

House style follows ``timm/models/resnet.py``: a module-level ``default_cfgs`` (timm's registry reads it
while ``@register_model`` runs, so it must come first), one small entrypoint per model, and
``build_model_with_cfg`` for pretrained loading, features_only and the rest. The module is called
``sknets``, not ``sknet``: timm records a model's module by its last dotted name and owns ``sknet``
already, so ``timm.list_models(module='sknets')`` lists exactly this family.

| name       | base                            | layers   | SK unit                                   |
|------------|---------------------------------|----------|-------------------------------------------|
| sknet18    | ResNet-18, SKBasicBlock         | 2-2-2-2  | split input, d = max(C/8, 16)             |
| sknet34    | ResNet-34, SKBasicBlock         | 3-4-6-3  | split input, d = max(C/8, 16)             |
| sknet50    | ResNeXt-50 32x4d, SKBottleneck  | 3-4-6-3  | paper: 3x3 + 3x3 dil 2, d = max(C/16, 32) |
| sknet101   | ResNeXt-101 32x4d, SKBottleneck | 3-4-23-3 | paper                                     |
| sknet152   | ResNeXt 32x4d, SKBottleneck     | 3-8-36-3 | paper                                     |
| sknet_tiny | sknet18 at 1/4 width            | 2-2-2-2  | as sknet18; ships with weights (synthetic)|
"""
from typing import Any, Dict, Optional, Sequence, Type, Union

from torch import nn

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models.resnet import ResNet

from ..errors import WeightsError
from ..hub.download import pretrained_kwargs
from ..hub.embedded import EMBEDDED_CLASSES, WEIGHTS_FILE
from ..layers import FusedConvAct, fold_batchnorm, fold_sequential, is_batchnorm
from ..layers.batchnorm_fold import bn_act_parts
from .blocks import SKBasicBlock, SKBottleneck
from .feature_extractors import feature_kwargs

__all__ = ['SKNet']

PAPER = dict(paper_ids='arXiv:1903.06586', paper_name='Selective Kernel Networks')


class SKNet(ResNet):
    """Selective Kernel Network: timm's ResNet with SK blocks.

    Everything but the blocks is timm's ResNet (stem, stages, output_stride, feature_info,
    forward_intermediates, grad checkpointing, group_matcher, classifier), so timm's tooling works as is.

    Args:
        block: ``SKBottleneck`` or ``SKBasicBlock``.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)``.
        num_classes: classifier outputs.
        kernel_sizes: kernel size of each SK path (the paper's 3 and 5).
        base_width: bottleneck width per group (4 for 32x4d).
        cardinality: groups of the SK convolutions (32 for 32x4d).
        reduction: r in the fuse MLP width d = max(C / r, L).
        min_attn_channels: L in d = max(C / r, L).
        split_input: each SK path sees 1/M of the input channels (timm's skresnet18/34).
        dilated_kernels: k > 3 as a dilated 3x3 (paper) rather than a true k x k kernel.
        **resnet_args: any other ``timm.models.resnet.ResNet`` argument (in_chans, output_stride,
            drop_rate, drop_path_rate, stem_type, attn via ``block_args``, ...).
    """

    def __init__(
            self,
            block: Type[Union[SKBottleneck, SKBasicBlock]] = SKBottleneck,
            layers: Sequence[int] = (3, 4, 6, 3),
            num_classes: int = 1000,
            kernel_sizes: Sequence[int] = (3, 5),
            base_width: int = 64,
            cardinality: int = 1,
            reduction: float = 16,
            min_attn_channels: int = 32,
            split_input: bool = False,
            dilated_kernels: bool = True,
            block_args: Optional[Dict[str, Any]] = None,
            **resnet_args: Any,
    ):
        sk_kwargs = dict(
            kernel_sizes=list(kernel_sizes), reduction=reduction, min_attn_channels=min_attn_channels,
            split_input=split_input, dilated_kernels=dilated_kernels)
        block_args = dict(block_args or {})
        block_args['sk_kwargs'] = {**sk_kwargs, **block_args.get('sk_kwargs', {})}
        super().__init__(
            block, tuple(layers), num_classes=num_classes, cardinality=cardinality, base_width=base_width,
            block_args=block_args, **resnet_args)
        self.kernel_sizes = list(kernel_sizes)
        self.base_width = base_width
        self.cardinality = cardinality

    def fuse(self) -> 'SKNet':
        """Fold the stem's BatchNorm into the stem convolution, in place, and return the model.

        The stem (``conv1``, ``bn1``, ``act1``) belongs to the model itself, so the model folds it; every
        other part folds itself. ``timm.utils.reparameterize_model`` calls ``fuse()`` on the modules it
        walks, which are the children of the module it is given: it reaches this method wherever an SKNet
        is a child (``timm_sknet.inference.fuse_model``, transformers' ``TimmWrapper``, a user's
        ``nn.Sequential``), then folds everything below. Called on a bare SKNet, timm's walk folds all but
        the stem, whose BatchNorm stays an exact eval-mode affine; call ``fuse_model(model)`` to fold all.
        """
        if not is_batchnorm(self.bn1):
            return self  # already folded
        conv, bn = self.conv1, self.bn1
        if isinstance(conv, nn.Sequential):  # deep stems: conv-bn-act-conv-bn-act-conv, then bn1
            conv = fold_sequential(conv)
            conv[-1] = FusedConvAct(fold_batchnorm(conv[-1], bn))
            self.conv1 = conv
        elif isinstance(conv, nn.Conv2d):
            self.conv1 = FusedConvAct(fold_batchnorm(conv, bn), act=self.act1)
            self.act1 = nn.Identity()
        else:
            raise ValueError(f'cannot fold the stem: conv1 is a {type(conv).__name__}, not a Conv2d or Sequential')
        tail = bn_act_parts(bn)
        self.bn1 = nn.Sequential(*tail) if tail else nn.Identity()
        return self


def _weight_source(cfg) -> Optional[str]:
    return cfg.state_dict is not None and 'state_dict' or cfg.file or cfg.hf_hub_id or cfg.url or None


def _create_sknet(variant: str, pretrained: bool = False, **kwargs) -> SKNet:
    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
            pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
        if not _weight_source(cfg):
            available = timm.list_pretrained('sknet*')
            raise WeightsError(
                f'No pretrained weights exist for {variant}'
                f'{"." + cfg.tag if cfg.tag else ""}: none have been published for it anywhere. '
                f'Pretrained tags that exist: {", ".join(available) or "none"}. Use pretrained=False to '
                f'train it, or load your own with pretrained_cfg_overlay=dict(file="weights.safetensors").')
        # Hub weights: safetensors only, sha256-verified, failures as WeightsError (see timm_sknet/hub/download.py).
        kwargs = pretrained_kwargs(variant, cfg, kwargs)
    # features_only: extractors whose set_grad_checkpointing works (feature_extractors.py)
    kwargs = feature_kwargs(kwargs)
    return build_model_with_cfg(SKNet, variant, pretrained, **kwargs)


def _cfg(hf_hub_id: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'hf_hub_id': hf_hub_id or None,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'conv1', 'classifier': 'fc',
        'license': 'apache-2.0', **PAPER,
        **kwargs,
    }


def _timm_weights(repo: str) -> Dict[str, Any]:
    return _cfg(
        hf_hub_id=f'timm/{repo}', origin_url=f'https://huggingface.co/timm/{repo}',
        notes=(f'Weights of timm {repo}, trained by Ross Wightman with the RandAugment recipe; '
               'they load into this architecture unchanged.',))


default_cfgs = generate_default_cfgs({
    'sknet18.ra_in1k': _timm_weights('skresnet18.ra_in1k'),
    'sknet34.ra_in1k': _timm_weights('skresnet34.ra_in1k'),
    'sknet50.ra_in1k': _timm_weights('skresnext50_32x4d.ra_in1k'),
    'sknet101.untrained': _cfg(),
    'sknet152.untrained': _cfg(),
    # Embedded in the package (no download): 64x64 synthetic shapes, see timm_sknet/hub/embedded.py.
    'sknet_tiny.synthetic': _cfg(
        file=str(WEIGHTS_FILE), num_classes=len(EMBEDDED_CLASSES), label_names=EMBEDDED_CLASSES,
        input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0, interpolation='bilinear',
        notes=('Trained by timm-sknet on its synthetic multi-scale shapes (timm_sknet.tools.synthetic_data); '
               'a demonstration model for the offline main job, not an ImageNet model.',)),
})

# SK settings of the two families: timm's split-input basic blocks, and the paper's ResNeXt units.
_BASIC_SK = dict(block=SKBasicBlock, reduction=8, min_attn_channels=16, split_input=True)
_PAPER_SK = dict(block=SKBottleneck, cardinality=32, base_width=4, reduction=16, min_attn_channels=32)


@register_model
def sknet18(pretrained: bool = False, **kwargs) -> SKNet:
    """SK-ResNet-18: basic blocks, input split across 2 paths (timm's skresnet18 layout)."""
    model_args = dict(layers=(2, 2, 2, 2), **_BASIC_SK)
    return _create_sknet('sknet18', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet34(pretrained: bool = False, **kwargs) -> SKNet:
    """SK-ResNet-34: basic blocks, input split across 2 paths (timm's skresnet34 layout)."""
    model_args = dict(layers=(3, 4, 6, 3), **_BASIC_SK)
    return _create_sknet('sknet34', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet_tiny(pretrained: bool = False, **kwargs) -> SKNet:
    """sknet18 at a quarter of the width (stages 16-32-64-128): 0.74M params, for small images.

    The stem conv stays 64 wide: timm's plain ResNet stem ignores ``stem_width`` (only deep stems use it),
    and the embedded weights were trained that way.

    Its ``synthetic`` weights ship inside the package, so it runs with no network.
    """
    model_args = dict(layers=(2, 2, 2, 2), channels=(16, 32, 64, 128), stem_width=16, **_BASIC_SK)
    return _create_sknet('sknet_tiny', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet50(pretrained: bool = False, **kwargs) -> SKNet:
    """SKNet-50 of the paper: ResNeXt-50 32x4d with SK units (M=2, G=32, r=16, L=32)."""
    model_args = dict(layers=(3, 4, 6, 3), **_PAPER_SK)
    return _create_sknet('sknet50', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet101(pretrained: bool = False, **kwargs) -> SKNet:
    """SKNet-101 of the paper: ResNeXt-101 32x4d with SK units. No pretrained weights exist."""
    model_args = dict(layers=(3, 4, 23, 3), **_PAPER_SK)
    return _create_sknet('sknet101', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet152(pretrained: bool = False, **kwargs) -> SKNet:
    """SKNet-152: ResNeXt-152 32x4d depth (3-8-36-3) with the paper's SK units. No pretrained weights exist."""
    model_args = dict(layers=(3, 8, 36, 3), **_PAPER_SK)
    return _create_sknet('sknet152', pretrained, **dict(model_args, **kwargs))
