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
| sknet_tiny | sknet18, stages at 1/4 width    | 2-2-2-2  | as sknet18; ships with weights (synthetic)|
| sknet50_caffe  | the authors' Caffe SKNet-50  | 3-4-6-3  | paper; Caffe's stem pooling               |
| sknet101_caffe | the authors' Caffe SKNet-101 | 3-4-23-3 | paper, but d = 16 in the second stage; Caffe's stem pooling |

The ``*_caffe`` models are the networks of the authors' published Caffe models (github.com/implus/SKNet),
layer for layer, so that ``timm-sknet convert-caffe`` (``timm_sknet.caffe``) gives their exact outputs.
"""
from typing import Any, Dict, NamedTuple, Optional, Sequence, Type, Union, cast

from torch import nn

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models.resnet import ResNet

from ..errors import WeightsError, remedy
from ..hub.download import verified_pretrained_cfg
from ..hub.embedded import EMBEDDED_CLASSES, WEIGHTS_FILE
from ..hub.provenance import stamp_loaded_weights
from ..layers import SelectiveKernel, SelectiveKernelAttn, bn_act_parts, fold_batchnorm, fold_sequential, is_batchnorm
from .blocks import SKBasicBlock, SKBottleneck
from .feature_extractors import feature_kwargs

__all__ = ['CAFFE_SOURCES', 'CaffeSource', 'SKNet']

PAPER = dict(paper_ids='arXiv:1903.06586', paper_name='Selective Kernel Networks')


class CaffeSource(NamedTuple):
    """Where the authors publish one Caffe model (github.com/implus/SKNet, README, "Trained Models")."""
    title: str  # the paper's name of the network
    prototxt: str  # path in the repository
    caffemodel_url: str  # Google Drive, reachable by users, not by this project's machines


CAFFE_REPO = 'https://github.com/implus/SKNet'
CAFFE_SOURCES = {
    'sknet50_caffe': CaffeSource(
        'SKNet-50', 'models/sknet50.prototxt',
        'https://drive.google.com/file/d/1EKanqFkqoU3L6vgSLW3GjPciesZ2rrUH/view?usp=sharing'),
    'sknet101_caffe': CaffeSource(
        'SKNet-101', 'models/sknet101.prototxt',
        'https://drive.google.com/file/d/1NEYIYeSXQeinLGU5GH2hf8T6MJytzt0U/view?usp=sharing'),
}
#: Caffe's input: BGR pixels in 0-255 minus these means (the SENet data pipeline, which the SKNet authors
#: used; also what OpenVINO's model zoo documents for the SENet Caffe models). Listed here in RGB order.
CAFFE_MEAN_RGB = (123.0, 117.0, 104.0)
STEM_POOLS = ('timm', 'caffe')


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
        stem_pool: ``'timm'``: the stem's 3x3 stride-2 max pool pads by 1 (timm, torchvision);
            ``'caffe'``: no padding and the output size rounded up, as Caffe pools (the authors' models).
            They give the same size for even inputs and differ by one row / column for odd ones.
        stage_attn_channels: the fuse width d of each stage's SK units, one entry per stage; ``None``
            entries keep d = max(C / r, L). The authors' SKNet-101 uses ``(None, 16, None, None)``.
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
            stem_pool: str = 'timm',
            stage_attn_channels: Optional[Sequence[Optional[int]]] = None,
            block_args: Optional[Dict[str, Any]] = None,
            **resnet_args: Any,
    ):
        _check_caffe_args(stem_pool, stage_attn_channels, len(layers), resnet_args)
        sk_kwargs = dict(
            kernel_sizes=list(kernel_sizes), reduction=reduction, min_attn_channels=min_attn_channels,
            split_input=split_input, dilated_kernels=dilated_kernels)
        block_args = dict(block_args or {})
        block_args['sk_kwargs'] = {**sk_kwargs, **block_args.get('sk_kwargs', {})}
        super().__init__(
            block,  # type: ignore[arg-type]  # timm annotates block as an instance; it takes the class
            tuple(layers), num_classes=num_classes, cardinality=cardinality, base_width=base_width,
            block_args=block_args, **resnet_args)
        self.kernel_sizes = list(kernel_sizes)
        self.base_width = base_width
        self.cardinality = cardinality
        if stem_pool == 'caffe':
            self.maxpool = nn.MaxPool2d(  # type: ignore[assignment]  # timm infers its own stems' Sequential
                kernel_size=3, stride=2, padding=0, ceil_mode=True)
        if stage_attn_channels is not None:
            self._set_stage_attn_channels(stage_attn_channels, resnet_args)

    def _set_stage_attn_channels(self, widths: Sequence[Optional[int]], resnet_args: Dict[str, Any]) -> None:
        """Give the SK units of stage i a fuse width of ``widths[i]`` (built new, initialised as timm's ResNet)."""
        from timm.layers import get_act_layer, get_norm_layer
        act_layer = get_act_layer(resnet_args.get('act_layer', nn.ReLU))
        norm_layer = get_norm_layer(resnet_args.get('norm_layer', nn.BatchNorm2d))
        dd = {'device': resnet_args.get('device'), 'dtype': resnet_args.get('dtype')}
        for stage, width in enumerate(widths, start=1):
            if width is None:
                continue
            for unit in getattr(self, f'layer{stage}').modules():
                if isinstance(unit, SelectiveKernel):
                    unit.attn = SelectiveKernelAttn(
                        unit.out_channels, unit.num_paths, width, act_layer=act_layer, norm_layer=norm_layer, **dd)
                    for conv in (unit.attn.fc_reduce, unit.attn.fc_select):
                        nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')

    def reparameterize(self) -> None:
        """Fold the stem's BatchNorm into the stem convolution, in place, for inference.

        The stem (``conv1``, ``bn1``, ``act1``) belongs to the model itself, so the model folds it; every other
        part folds itself. ``timm.utils.reparameterize_model`` calls ``reparameterize()`` on the modules it
        walks, which are the children of the module it is given: it reaches this method wherever an SKNet is a
        child (``timm_sknet.inference.fuse_model``, transformers' ``TimmWrapper``, a user's ``nn.Sequential``),
        then folds everything below. Called on a bare SKNet, timm's walk folds all but the stem, whose BatchNorm
        stays an exact eval-mode affine; call ``fuse_model(model)`` to fold all.
        """
        if not is_batchnorm(self.bn1):
            return  # already folded
        if isinstance(self.conv1, nn.Sequential):  # deep stems: conv-bn-act-conv-bn-act-conv, then bn1
            self.conv1 = fold_sequential(self.conv1)
            self.conv1[-1] = fold_batchnorm(cast(nn.Conv2d, self.conv1[-1]), self.bn1)  # the stem ends in a conv
        elif isinstance(self.conv1, nn.Conv2d):
            self.conv1 = fold_batchnorm(self.conv1, self.bn1)
        else:
            raise ValueError(f'cannot fold the stem: conv1 is a {type(self.conv1).__name__}, not a Conv2d or '
                             'Sequential')
        self.bn1 = bn_act_parts(self.bn1)


def _check_caffe_args(
        stem_pool: str, stage_attn_channels: Optional[Sequence[Optional[int]]], num_stages: int,
        resnet_args: Dict[str, Any]) -> None:
    if stem_pool not in STEM_POOLS:
        raise ValueError(f'stem_pool must be one of {STEM_POOLS}, got {stem_pool!r}')
    if stem_pool == 'caffe' and (resnet_args.get('aa_layer') or resnet_args.get('replace_stem_pool')):
        raise ValueError("stem_pool='caffe' is a plain max pool: it cannot be combined with aa_layer or "
                         'replace_stem_pool')
    if stage_attn_channels is None:
        return
    widths = list(stage_attn_channels)
    if len(widths) != num_stages or any(w is not None and (not isinstance(w, int) or w <= 0) for w in widths):
        raise ValueError(f'stage_attn_channels must give one positive int or None per stage ({num_stages}), '
                         f'got {stage_attn_channels!r}')


def _weight_source(cfg: Any) -> Optional[str]:
    return cfg.state_dict is not None and 'state_dict' or cfg.file or cfg.hf_hub_id or cfg.url or None


def _create_sknet(variant: str, pretrained: bool = False, **kwargs: Any) -> SKNet:
    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
            pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
        if not _weight_source(cfg) and variant in CAFFE_SOURCES:
            raise WeightsError(_convert_caffe_hint(variant))
        if not _weight_source(cfg):
            raise WeightsError(_no_weights_hint(variant, cfg.tag))
        # Hub weights: safetensors only, sha256-verified, failures as WeightsError (see timm_sknet/hub/download.py).
        # timm is handed the cfg resolved here (an instance: it looks nothing up again) with the overlay applied.
        loading = verified_pretrained_cfg(variant, cfg, kwargs.get('cache_dir'))
        build_kwargs = {k: v for k, v in kwargs.items() if k != 'pretrained_cfg_overlay'}
        model = build_model_with_cfg(SKNet, variant, pretrained, **feature_kwargs(dict(build_kwargs,
                                                                                       pretrained_cfg=loading)))
        _stamp_if_the_tags_own(model, variant, cfg, kwargs)
        return model
    # features_only: extractors whose set_grad_checkpointing works (feature_extractors.py)
    return build_model_with_cfg(SKNet, variant, pretrained, **feature_kwargs(kwargs))


def _stamp_if_the_tags_own(model: nn.Module, variant: str, cfg: 'timm.models.PretrainedCfg',
                           kwargs: Dict[str, Any]) -> None:
    """Stamp ``model`` with its tag when the weights just loaded are the tag's own (its registered source, not a
    file, folder or Hub repository the user named), for the model card (``timm_sknet.hub.provenance``)."""
    registered = timm.models.get_pretrained_cfg(f'{variant}.{cfg.tag}') if cfg.tag and not cfg.source else None
    if registered is None or kwargs.get('features_only'):
        return
    ours = (cfg.state_dict, cfg.file, cfg.url, (cfg.hf_hub_id or '').partition('@')[0])
    if ours != (registered.state_dict, registered.file, registered.url, registered.hf_hub_id or ''):
        return
    exact = (getattr(model, 'num_classes', None) == registered.num_classes
             and kwargs.get('in_chans', 3) == registered.input_size[0])
    stamp_loaded_weights(model, f'{variant}.{cfg.tag}', exact)


def _no_weights_hint(variant: str, tag: Optional[str]) -> str:
    """Why ``variant`` has no pretrained weights, and what the user can load instead."""
    caffe = f'{variant}_caffe' if f'{variant}_caffe' in CAFFE_SOURCES else None
    why = (f"no PyTorch weights of it have been published; the authors' Caffe {CAFFE_SOURCES[caffe].title} "
           f'exists and runs as {caffe} once you convert it (`timm-sknet convert-caffe`; asking for '
           f'{caffe} with pretrained weights says where to get the files)' if caffe else
           'neither timm nor the paper\'s authors publish weights of it')
    available = ', '.join(timm.list_pretrained('sknet*')) or 'none'
    instead = remedy('Use pretrained=False to train it, or load your own with '
                     "pretrained_cfg_overlay=dict(file='weights.safetensors')",
                     'Leave out --pretrained for random weights, or pass your own with --checkpoint FILE')
    return (f'No pretrained weights exist for {variant}{"." + tag if tag else ""}: {why}. Pretrained tags that '
            f'exist: {available}. {instead}.')


def _convert_caffe_hint(variant: str) -> str:
    source = CAFFE_SOURCES[variant]
    folder = variant.replace('_', '-')
    load = remedy(f"timm.create_model('local-dir:{folder}', pretrained=True)", f'--model local-dir:{folder}')
    return (
        f'No converted weights of {variant} ship with timm-sknet: the authors publish {source.title} as a Caffe '
        f'model without a license, so it is not redistributed here. Download the caffemodel '
        f'({source.caffemodel_url}) and the prototxt ({CAFFE_REPO}/blob/master/{source.prototxt}), convert them '
        f'with `timm-sknet convert-caffe {source.prototxt.rsplit("/", 1)[-1]} <file>.caffemodel {folder}/`, then '
        f'load {load}.')


def _cfg(hf_hub_id: str = '', **kwargs: Any) -> Dict[str, Any]:
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


def _caffe_weights(variant: str) -> Dict[str, Any]:
    """The preprocessing that makes timm's usual RGB [0, 1] input exactly Caffe's BGR 0-255 minus means.

    timm feeds ``(x - mean) / std``; with mean = Caffe's means / 255 and std = 1 / 255 that is
    ``255 x - Caffe's means``, Caffe's input in RGB order. The converter flips the first convolution's input
    channels from BGR to RGB. Resize 256, centre crop 224, bilinear, as the authors evaluate.
    """
    source = CAFFE_SOURCES[variant]
    return _cfg(
        mean=tuple(m / 255 for m in CAFFE_MEAN_RGB), std=(1 / 255,) * 3, interpolation='bilinear',
        license='unknown', origin_url=CAFFE_REPO,
        notes=(f"The authors' {source.title} Caffe model, converted by `timm-sknet convert-caffe`; the "
               f'weights are not distributed (no license): see {source.caffemodel_url}.',))


default_cfgs = generate_default_cfgs({
    'sknet18.ra_in1k': _timm_weights('skresnet18.ra_in1k'),
    'sknet34.ra_in1k': _timm_weights('skresnet34.ra_in1k'),
    'sknet50.ra_in1k': _timm_weights('skresnext50_32x4d.ra_in1k'),
    'sknet101.untrained': _cfg(),
    'sknet50_caffe.in1k': _caffe_weights('sknet50_caffe'),
    'sknet101_caffe.in1k': _caffe_weights('sknet101_caffe'),
    'sknet152.untrained': _cfg(),
    # Embedded in the package (no download): 64x64 synthetic shapes, see timm_sknet/hub/embedded.py.
    'sknet_tiny.synthetic': _cfg(
        file=str(WEIGHTS_FILE), num_classes=len(EMBEDDED_CLASSES), label_names=EMBEDDED_CLASSES,
        input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0, interpolation='bilinear',
        notes=('Trained by timm-sknet on its synthetic multi-scale shapes (timm_sknet.data.synthetic); '
               'a demonstration model for the offline main job, not an ImageNet model.',)),
})

# SK settings of the two families: timm's split-input basic blocks, and the paper's ResNeXt units.
_BASIC_SK = dict(block=SKBasicBlock, reduction=8, min_attn_channels=16, split_input=True)
_PAPER_SK = dict(block=SKBottleneck, cardinality=32, base_width=4, reduction=16, min_attn_channels=32)


@register_model
def sknet18(pretrained: bool = False, **kwargs: Any) -> SKNet:
    """SK-ResNet-18: basic blocks, input split across 2 paths (timm's skresnet18 layout)."""
    model_args = dict(layers=(2, 2, 2, 2), **_BASIC_SK)
    return _create_sknet('sknet18', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet34(pretrained: bool = False, **kwargs: Any) -> SKNet:
    """SK-ResNet-34: basic blocks, input split across 2 paths (timm's skresnet34 layout)."""
    model_args = dict(layers=(3, 4, 6, 3), **_BASIC_SK)
    return _create_sknet('sknet34', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet_tiny(pretrained: bool = False, **kwargs: Any) -> SKNet:
    """A narrow sknet18, its stages a quarter as wide (stages 16-32-64-128): 0.74M params, for small images.

    The stem conv stays 64 wide: timm's plain ResNet stem ignores ``stem_width`` (only deep stems use it),
    and the embedded weights were trained that way.

    Its ``synthetic`` weights ship inside the package, so it runs with no network.
    """
    model_args = dict(layers=(2, 2, 2, 2), channels=(16, 32, 64, 128), stem_width=16, **_BASIC_SK)
    return _create_sknet('sknet_tiny', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet50(pretrained: bool = False, **kwargs: Any) -> SKNet:
    """SKNet-50 of the paper: ResNeXt-50 32x4d with SK units (M=2, G=32, r=16, L=32)."""
    model_args = dict(layers=(3, 4, 6, 3), **_PAPER_SK)
    return _create_sknet('sknet50', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet101(pretrained: bool = False, **kwargs: Any) -> SKNet:
    """SKNet-101 of the paper: ResNeXt-101 32x4d with SK units. No pretrained weights exist."""
    model_args = dict(layers=(3, 4, 23, 3), **_PAPER_SK)
    return _create_sknet('sknet101', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet152(pretrained: bool = False, **kwargs: Any) -> SKNet:
    """SKNet-152: ResNeXt-152 32x4d depth (3-8-36-3) with the paper's SK units. No pretrained weights exist."""
    model_args = dict(layers=(3, 8, 36, 3), **_PAPER_SK)
    return _create_sknet('sknet152', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet50_caffe(pretrained: bool = False, **kwargs: Any) -> SKNet:
    """The authors' Caffe SKNet-50: sknet50 with Caffe's stem pooling (no padding, size rounded up).

    Weights: convert the authors' caffemodel with ``timm-sknet convert-caffe``; ``pretrained=True`` says how.
    """
    model_args = dict(layers=(3, 4, 6, 3), stem_pool='caffe', **_PAPER_SK)
    return _create_sknet('sknet50_caffe', pretrained, **dict(model_args, **kwargs))


@register_model
def sknet101_caffe(pretrained: bool = False, **kwargs: Any) -> SKNet:
    """The authors' Caffe SKNet-101: sknet101 with Caffe's stem pooling and d = 16 in the second stage.

    The paper's rule gives 32 there; the published model uses 16 (48.69 M parameters).
    Weights: convert the authors' caffemodel with ``timm-sknet convert-caffe``; ``pretrained=True`` says how.
    """
    model_args = dict(
        layers=(3, 4, 23, 3), stem_pool='caffe', stage_attn_channels=(None, 16, None, None), **_PAPER_SK)
    return _create_sknet('sknet101_caffe', pretrained, **dict(model_args, **kwargs))
