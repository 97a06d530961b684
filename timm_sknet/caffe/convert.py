"""Convert the authors' Caffe SKNet-50 / SKNet-101 into timm models and Hub-format folders.

What the conversion does, and why it is exact:

- **Architecture.** The prototxt must be the authors' (checked layer by layer, :func:`official.match_official`);
  it becomes ``sknet50_caffe`` / ``sknet101_caffe``, whose stem pooling rounds like Caffe's and whose
  SKNet-101 stage conv3 has d = 16, as the file says. Caffe's final 7x7 average pool is timm's global pool:
  the same where Caffe's network runs at all (a 7x7 last map, e.g. 224 px).
- **Weights**, mapped by layer name, every blob checked against its parameter's shape: Convolution (one blob,
  no bias), CuDNNBatchNorm (four blobs: scale, bias, mean, variance, each 1 x C x 1 x 1), InnerProduct
  (weight, bias). A caffemodel layer with blobs that the network has no place for, a layer the network needs
  that the caffemodel lacks, a shape that differs, or a value that is not finite is an error naming the file
  and the layer: nothing is dropped or guessed.
- **BatchNorm eps.** cuDNN computes with ``max(eps, 1e-5)`` (eps from the prototxt, 1e-5 by default); timm's
  layers use 1e-5, so a larger eps is added to the running variance, which is the same arithmetic.
- **Input.** Caffe's network sees BGR pixels in 0-255 minus per-channel means. The first convolution's input
  channels are flipped to RGB and the model's config records mean = means / 255 (RGB) and std = 1 / 255, so
  timm's usual ``(x - mean) / std`` on an RGB image in [0, 1] gives Caffe's input exactly, zero-padded borders
  included (folding the means into a bias would not be exact there).
"""
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

import timm

from ..file_io import sha256_file
from ..hub.folder import export_hub_folder
from ..models.complexity import PAPER
from ..models.sknets import CAFFE_MEAN_RGB, CAFFE_REPO, CAFFE_SOURCES
from .caffemodel import CaffeLayer, read_caffemodel
from .errors import CaffeError
from .official import OfficialVariant, computing_layers, match_official
from .prototxt import Message, read_prototxt

__all__ = ['CAFFE_MEAN_BGR', 'convert_caffe', 'load_caffe_model', 'timm_module']

CAFFE_MEAN_BGR = tuple(reversed(CAFFE_MEAN_RGB))
CUDNN_MIN_EPS = 1e-5  # cuDNN's CUDNN_BN_MIN_EPSILON: CuDNNBatchNorm uses max(eps, this)
TIMM_BN_EPS = 1e-5
PathLike = Union[str, Path]

_UNIT_PARTS = {
    '1x1_reduce': ('conv1.conv', 'conv1.bn'),
    '3x3g32': ('conv2.paths.0.conv', 'conv2.paths.0.bn'),
    '3x3g32d2': ('conv2.paths.1.conv', 'conv2.paths.1.bn'),
    'B_fc1': ('conv2.attn.fc_reduce', 'conv2.attn.bn'),
    'B_fc2': ('conv2.attn.fc_select', None),
    '1x1_increase': ('conv3.conv', 'conv3.bn'),
    '1x1_proj': ('downsample.0', 'downsample.1'),
}
_UNIT_LAYER = re.compile(r'conv(?P<stage>[2-5])_(?P<block>[1-9]\d*)/(?P<part>[\w]+?)(?P<bn>/bn)?')
_STEM_AND_HEAD = {'conv1/7x7_s2': 'conv1', 'conv1/7x7_s2/bn': 'bn1', 'classifier': 'fc'}
_PARAMETER_NAMES = {
    'Convolution': ('weight',),
    'CuDNNBatchNorm': ('weight', 'bias', 'running_mean', 'running_var'),
    'InnerProduct': ('weight', 'bias'),
}


def timm_module(layer_name: str) -> Optional[str]:
    """The timm module that holds a Caffe layer's weights (``conv3_2/B_fc1/bn`` -> ``layer2.1.conv2.attn.bn``)."""
    if layer_name in _STEM_AND_HEAD:
        return _STEM_AND_HEAD[layer_name]
    m = _UNIT_LAYER.fullmatch(layer_name)
    if m is None or m['part'] not in _UNIT_PARTS:
        return None
    conv, bn = _UNIT_PARTS[m['part']]
    module = bn if m['bn'] else conv
    return module and f'layer{int(m["stage"]) - 1}.{int(m["block"]) - 1}.{module}'


def _without_ones(shape: Sequence[int]) -> Tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _blobs_to_tensors(layer: Message, blobs: List[np.ndarray], targets: Dict[str, torch.Tensor],
                      eps: float, source: str) -> Dict[str, torch.Tensor]:
    """One layer's blobs as the timm tensors they become, checked against the parameters' shapes."""
    name, kind = str(layer.get('name')), str(layer.get('type'))
    module = timm_module(name)
    keys = [f'{module}.{p}' for p in _PARAMETER_NAMES[kind]]
    if len(blobs) != len(keys):
        raise CaffeError(f'{source}: layer {name!r} ({kind}) has {len(blobs)} blobs; the network needs '
                         f'{len(keys)} ({", ".join(_PARAMETER_NAMES[kind])})')
    out = {}
    for i, (key, blob) in enumerate(zip(keys, blobs)):
        want = tuple(targets[key].shape)
        if _without_ones(blob.shape) != _without_ones(want):
            raise CaffeError(f'{source}: layer {name!r} blob {i} has shape {tuple(blob.shape)}; {key} of the '
                             f'network needs {want}. Is the caffemodel for this prototxt?')
        if not np.isfinite(blob).all():
            raise CaffeError(f'{source}: layer {name!r} blob {i} holds NaN or infinite values; the file is corrupt')
        out[key] = torch.from_numpy(np.ascontiguousarray(blob, dtype=np.float32)).reshape(want)
    if kind == 'CuDNNBatchNorm':
        variance = out[f'{module}.running_var'] + (max(eps, CUDNN_MIN_EPS) - TIMM_BN_EPS)
        if (variance + TIMM_BN_EPS <= 0).any():
            raise CaffeError(f'{source}: layer {name!r} has a negative variance (blob 3); the file is corrupt')
        out[f'{module}.running_var'] = variance
    if name == 'conv1/7x7_s2':
        out['conv1.weight'] = out['conv1.weight'].flip(1)  # input channels BGR -> RGB
    return out


def _weighted_layers(net: Message) -> List[Message]:
    return [layer for layer in computing_layers(net) if layer.get('type') in _PARAMETER_NAMES]


def _check_layer_sets(weighted: List[Message], caffemodel: Dict[str, CaffeLayer], variant: OfficialVariant,
                      source: str) -> None:
    """Every layer the network needs is in the file with its type; every layer of the file with blobs is used."""
    needed = {str(layer.get('name')): str(layer.get('type')) for layer in weighted}
    for name, kind in needed.items():
        found = caffemodel.get(name)
        if found is None or not found.blobs:
            raise CaffeError(f'{source}: has no weights for layer {name!r}, which {variant.title} needs. Is it the '
                             f'{variant.title} caffemodel? (A truncated download also ends early.)')
        if found.type and found.type != kind:
            raise CaffeError(f'{source}: layer {name!r} is a {found.type} in the caffemodel but a {kind} in the '
                             f'prototxt; the two files are not of one network')
    unused = [layer for name, layer in caffemodel.items() if layer.blobs and name not in needed]
    if unused:
        raise CaffeError(f'{source}: layer {unused[0].name!r} ({unused[0].type}, {len(unused[0].blobs)} blobs) '
                         f'has no place in {variant.title}' + (f', nor do {len(unused) - 1} more' if unused[1:] else '')
                         + '; the caffemodel is not for this prototxt')


def _batchnorm_eps(layer: Message) -> float:
    return float(layer.get('batch_norm_param', Message()).get('eps', CUDNN_MIN_EPS))


def _mean_overlay(mean_bgr: Sequence[float]) -> Dict[str, tuple]:
    if len(mean_bgr) != 3 or not all(np.isfinite(m) for m in mean_bgr):
        raise CaffeError(f'mean_bgr needs three finite numbers (B, G, R in 0-255), got {tuple(mean_bgr)}')
    return dict(mean=tuple(float(m) / 255 for m in reversed(mean_bgr)), std=(1 / 255,) * 3)


def _convert(prototxt: PathLike, caffemodel: PathLike,
             mean_bgr: Sequence[float]) -> Tuple[nn.Module, OfficialVariant]:
    overlay = _mean_overlay(mean_bgr)
    net = read_prototxt(prototxt)
    variant = match_official(net, str(prototxt))
    layers = read_caffemodel(caffemodel)
    weighted = _weighted_layers(net)
    _check_layer_sets(weighted, layers, variant, str(caffemodel))
    model = timm.create_model(variant.model, pretrained_cfg_overlay=overlay)
    state = model.state_dict()
    converted: Dict[str, torch.Tensor] = {}
    for layer in weighted:
        name = str(layer.get('name'))
        converted.update(_blobs_to_tensors(layer, layers[name].blobs, state, _batchnorm_eps(layer), str(caffemodel)))
    left = sorted(k for k in state if k not in converted and not k.endswith('num_batches_tracked'))
    if left:  # the official networks cover every tensor; anything else is a bug here, not the user's
        raise RuntimeError(f'{variant.model}: no Caffe blob for {left[:3]} ({len(left)} tensors)')
    model.load_state_dict({**state, **converted}, strict=True)
    return model.eval(), variant


def load_caffe_model(prototxt: PathLike, caffemodel: PathLike,
                     mean_bgr: Sequence[float] = CAFFE_MEAN_BGR) -> nn.Module:
    """The authors' Caffe SKNet as a timm model in eval mode (``sknet50_caffe`` or ``sknet101_caffe``).

    Args:
        prototxt: the authors' ``sknet50.prototxt`` / ``sknet101.prototxt`` (or a deploy version of it).
        caffemodel: the matching ``.caffemodel``.
        mean_bgr: the per-channel means Caffe subtracted from BGR pixels in 0-255; recorded in the model's
            ``pretrained_cfg`` as timm's mean / std. The default is the SENet pipeline's (104, 117, 123).

    Raises:
        CaffeError: a file that is missing, unreadable or not of the official network, naming file and layer.
    """
    return _convert(prototxt, caffemodel, mean_bgr)[0]


def _card(model: nn.Module, variant: OfficialVariant, prototxt: Path, caffemodel: Path,
          mean_bgr: Sequence[float]) -> str:
    source = CAFFE_SOURCES[variant.model]
    top1 = PAPER[variant.model].top1
    mean_rgb = tuple(round(m, 6) for m in getattr(model, 'pretrained_cfg')['mean'])
    return '\n'.join([
        f"{source.title} of Li et al., the authors' own Caffe model, converted to timm's `{variant.model}` by "
        f'`timm-sknet convert-caffe`.',
        '',
        '## Source',
        f'- **caffemodel:** `{caffemodel.name}`, sha256 `{sha256_file(caffemodel)}` (published at '
        f'{source.caffemodel_url})',
        f'- **prototxt:** `{prototxt.name}`, sha256 `{sha256_file(prototxt)}` ({CAFFE_REPO}, `{source.prototxt}`)',
        f'- **Reported accuracy:** ImageNet-1k top-1 {top1:.2f} % at 224 px (paper, Table 2); not re-measured here.',
        '',
        '## License of the original',
        f'{CAFFE_REPO} states no license, for its code or for the models, so the weights keep whatever terms '
        'their authors set (hence `license: unknown` above). Ask them before you redistribute this folder.',
        '',
        '## Preprocessing',
        f'Caffe fed the network BGR pixels in 0-255 minus the means (B, G, R) = {tuple(mean_bgr)}. The converter '
        'flipped the first convolution to RGB input and config.json records '
        f'mean = {mean_rgb} and std = 1/255: give the model timm\'s usual RGB image in [0, 1] normalised by those '
        '(`timm.data.resolve_data_config({}, model=model)` does this); the result equals Caffe\'s input exactly. '
        'Resize the shorter side to 256 and centre-crop 224, as the authors evaluate.',
        '',
        '## Architecture',
        f"`{variant.model}`: stem max pool 3x3 / 2 without padding, size rounded up (Caffe's rounding)"
        + (', and d = 16 in the SK units of stage conv3 (where d = max(C/16, 32) would give 32)'
           if variant.key == 'sknet101' else '')
        + ". BatchNorm eps is cuDNN's max(eps, 1e-5); Caffe's final 7x7 average pool is global average pooling.",
    ])


def convert_caffe(prototxt: PathLike, caffemodel: PathLike, out_dir: PathLike, *,
                  mean_bgr: Sequence[float] = CAFFE_MEAN_BGR, repo_id: Optional[str] = None,
                  overwrite: bool = False) -> Path:
    """Write the authors' Caffe SKNet as a Hub-format folder (config.json, model.safetensors, README.md card).

    The folder loads with ``timm.create_model('local-dir:OUT_DIR', pretrained=True)`` (after
    ``import timm_sknet``). Everything is checked before anything is written, and the folder is written
    atomically (``file_io.atomic_folder``), so a failed conversion leaves no folder.

    Raises:
        CaffeError: bad input (see :func:`load_caffe_model`).
        FileExistsError: ``out_dir`` exists and is not empty, and ``overwrite`` is False.
    """
    prototxt, caffemodel, out_dir = Path(prototxt), Path(caffemodel), Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f'{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it')
    model, variant = _convert(prototxt, caffemodel, mean_bgr)
    card = _card(model, variant, prototxt, caffemodel, mean_bgr)
    return export_hub_folder(model, out_dir, repo_id=repo_id, license='unknown', datasets=('imagenet-1k',),
                             tags=('caffe', 'sknet-caffe'), description=card, overwrite=overwrite)
