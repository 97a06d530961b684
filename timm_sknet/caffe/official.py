"""The authors' Caffe networks, written down here: SKNet-50 and SKNet-101 layer by layer, as in their prototxts.

``official_net('sknet101')`` builds the network as a parsed-prototxt ``Message`` (layer names, types, blobs
and settings as the files of github.com/implus/SKNet have them; their training-only fields, learning-rate
multipliers and fillers, are left out); :func:`render_official_prototxt` writes it as prototxt text. The
converter checks a user's prototxt against it (:func:`match_official`), which is what makes mapping the
caffemodel by layer name safe; the tests generate the prototxts from it, since the authors' files have no
license and are not copied here.

One SK unit (``P`` = ``conv{stage}_{block}``, C its width, d its fuse width), after ``P/1x1_reduce``:

- ``P/3x3g32`` and ``P/3x3g32d2``: 3x3 convolutions, 32 groups, dilation 1 and 2, each with a CuDNNBatchNorm
  (``/bn``) and an in-place ReLU;
- ``P_3x3`` sums them (Eltwise), ``P/B_global_pool`` averages, ``P/B_fc1`` (1x1 to d) with BN and ReLU,
  ``P/B_fc2`` (1x1 to 2C);
- ``P/B_re`` reshapes to (N, 2, C, 1), ``P/B_softmax`` normalises over the 2 paths, ``P/B_slice`` splits
  them, ``P/B_slice0`` / ``P/B_slice1`` reshape each to (N, C, 1, 1), ``P/B_w0/reshape`` to (N, C);
- ``P/scale`` = a_0 * path 0 (Scale), ``P/B_axpy`` = a_1 * path 1 + that (Axpy).
"""
import copy
from functools import lru_cache
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..models.sknets import CAFFE_REPO, CAFFE_SOURCES
from .errors import CaffeError
from .prototxt import Enum, Message, format_prototxt, message

__all__ = [
    'OFFICIAL', 'OfficialVariant', 'layer_signature', 'match_official', 'official_net', 'render_official_prototxt',
]


class OfficialVariant(NamedTuple):
    key: str  # 'sknet50' / 'sknet101'
    model: str  # the timm model it converts to
    net_name: str  # the prototxt's ``name``
    blocks: Tuple[int, ...]  # blocks in stages conv2 .. conv5
    attn_channels: Tuple[int, ...]  # d of the SK units in stages conv2 .. conv5

    @property
    def title(self) -> str:
        return CAFFE_SOURCES[self.model].title


OFFICIAL: Dict[str, OfficialVariant] = {
    'sknet50': OfficialVariant('sknet50', 'sknet50_caffe', 'sknet50_basic', (3, 4, 6, 3), (32, 32, 32, 64)),
    'sknet101': OfficialVariant('sknet101', 'sknet101_caffe', 'sknet101', (3, 4, 23, 3), (32, 16, 32, 64)),
}
GROUPS = 32
WIDTHS = (128, 256, 512, 1024)  # SK unit width C of stages conv2 .. conv5 (32 groups x 4 .. 32)
#: Layers that carry no computation of the network (data, loss, metrics): not compared, not converted.
IGNORED_TYPES = frozenset({
    'Input', 'Data', 'ImageData', 'DummyData', 'HDF5Data', 'MemoryData', 'WindowData', 'SoftmaxWithLoss',
    'Accuracy', 'Silence'})


def _layer(name: str, type_: str, bottom: List[str], top: List[str], **params: Message) -> Message:
    return message(name=name, type=type_, bottom=bottom, top=top, **params)


def _conv(name: str, bottom: str, num_output: int, kernel: int = 1, stride: int = 1, pad: int = 0,
          group: int = 1, dilation: int = 1) -> Message:
    settings = dict(num_output=num_output, bias_term=False)
    if pad:
        settings['pad'] = pad
    settings.update(kernel_size=kernel)
    if group > 1:
        settings['group'] = group
    settings['stride'] = stride
    if dilation > 1:
        settings['dilation'] = dilation
    return _layer(name, 'Convolution', [bottom], [name], convolution_param=message(**settings))


def _conv_bn(name: str, bottom: str, num_output: int, relu: bool = True, **conv: int) -> List[Message]:
    """Convolution, CuDNNBatchNorm (top ``name/bn``) and an in-place ReLU on it."""
    layers = [_conv(name, bottom, num_output, **conv), _layer(f'{name}/bn', 'CuDNNBatchNorm', [name], [f'{name}/bn'])]
    if relu:
        layers.append(_layer(f'{name}/relu', 'ReLU', [f'{name}/bn'], [f'{name}/bn']))
    return layers


def _reshape(name: str, bottom: str, dims: List[int]) -> Message:
    return _layer(name, 'Reshape', [bottom], [name], reshape_param=message(shape=message(dim=dims)))


def _sk_unit(p: str, bottom: str, width: int, stride: int, attn_channels: int) -> List[Message]:
    """Split (two grouped 3x3 paths), fuse (sum, pool, fc1) and select (fc2, softmax, Scale + Axpy)."""
    small, large = f'{p}/3x3g32', f'{p}/3x3g32d2'
    return [
        *_conv_bn(small, bottom, width, kernel=3, stride=stride, pad=1, group=GROUPS),
        *_conv_bn(large, bottom, width, kernel=3, stride=stride, pad=2, group=GROUPS, dilation=2),
        _layer(f'{p}_3x3', 'Eltwise', [f'{small}/bn', f'{large}/bn'], [f'{p}_3x3'],
               eltwise_param=message(operation=Enum('SUM'))),
        _layer(f'{p}/B_global_pool', 'Pooling', [f'{p}_3x3'], [f'{p}/B_global_pool'],
               pooling_param=message(pool=Enum('AVE'), engine=Enum('CAFFE'), global_pooling=True)),
        *_conv_bn(f'{p}/B_fc1', f'{p}/B_global_pool', attn_channels),
        _conv(f'{p}/B_fc2', f'{p}/B_fc1/bn', 2 * width),
        _reshape(f'{p}/B_re', f'{p}/B_fc2', [0, 2, -1, 0]),
        _layer(f'{p}/B_softmax', 'Softmax', [f'{p}/B_re'], [f'{p}/B_softmax'], softmax_param=message(axis=1)),
        _layer(f'{p}/B_slice', 'Slice', [f'{p}/B_softmax'], [f'{p}/B_slice0_', f'{p}/B_slice1_'],
               slice_param=message(slice_point=1, axis=1)),
        _reshape(f'{p}/B_slice1', f'{p}/B_slice1_', [0, width, -1, 0]),
        _reshape(f'{p}/B_slice0', f'{p}/B_slice0_', [0, width, -1, 0]),
        _reshape(f'{p}/B_w0/reshape', f'{p}/B_slice0', [0, 0]),
        _layer(f'{p}/scale', 'Scale', [f'{small}/bn', f'{p}/B_w0/reshape'], [f'{p}/scale'],
               scale_param=message(axis=0, bias_term=False)),
        _layer(f'{p}/B_axpy', 'Axpy', [f'{p}/B_slice1', f'{large}/bn', f'{p}/scale'], [f'{p}/B_axpy']),
    ]


def _block(stage: int, index: int, bottom: str, attn_channels: int) -> List[Message]:
    """Bottleneck ``conv{stage}_{index}``: 1x1 reduce, SK unit, 1x1 increase, projection on the first, add, ReLU."""
    p = f'conv{stage}_{index}'
    width, out = WIDTHS[stage - 2], 2 * WIDTHS[stage - 2]
    stride = 2 if index == 1 and stage > 2 else 1
    layers = [*_conv_bn(f'{p}/1x1_reduce', bottom, width),
              *_sk_unit(p, f'{p}/1x1_reduce/bn', width, stride, attn_channels),
              *_conv_bn(f'{p}/1x1_increase', f'{p}/B_axpy', out, relu=False)]
    shortcut = bottom
    if index == 1:
        layers += _conv_bn(f'{p}/1x1_proj', bottom, out, relu=False, stride=stride)
        shortcut = f'{p}/1x1_proj/bn'
    return layers + [
        _layer(p, 'Eltwise', [f'{p}/1x1_increase/bn', shortcut], [p], eltwise_param=message(operation=Enum('SUM'))),
        _layer(f'{p}/relu', 'ReLU', [p], [p]),
    ]


@lru_cache(maxsize=None)
def _official_net(key: str, batch: int) -> Message:
    variant = OFFICIAL[key]
    layers = [
        _layer('input', 'Input', [], ['data', 'label'], input_param=message(
            shape=[message(dim=[batch, 3, 224, 224]), message(dim=[batch])])),
        *_conv_bn('conv1/7x7_s2', 'data', 64, kernel=7, stride=2, pad=3),
        _layer('pool1/3x3_s2', 'Pooling', ['conv1/7x7_s2/bn'], ['pool1/3x3_s2'],
               pooling_param=message(pool=Enum('MAX'), kernel_size=3, stride=2)),
    ]
    bottom = 'pool1/3x3_s2'
    for stage, (blocks, attn_channels) in enumerate(zip(variant.blocks, variant.attn_channels), start=2):
        for index in range(1, blocks + 1):
            layers += _block(stage, index, bottom, attn_channels)
            bottom = f'conv{stage}_{index}'
    layers += [
        _layer('avepool/7x7', 'Pooling', [bottom], ['avepool/7x7'],
               pooling_param=message(pool=Enum('AVE'), kernel_size=7, stride=1)),
        _layer('classifier', 'InnerProduct', ['avepool/7x7'], ['classifier'],
               inner_product_param=message(num_output=1000)),
        _layer('loss', 'SoftmaxWithLoss', ['classifier', 'label'], ['loss']),
        _layer('top-1', 'Accuracy', ['classifier', 'label'], ['top-1']),
        _layer('top-5', 'Accuracy', ['classifier', 'label'], ['top-5'], accuracy_param=message(top_k=5)),
    ]
    return message(name=variant.net_name, layer=layers)


def official_net(key: str, batch: int = 1) -> Message:
    """The authors' network ``'sknet50'`` or ``'sknet101'`` as a parsed prototxt (a fresh copy to change)."""
    if key not in OFFICIAL:
        raise ValueError(f'unknown official network {key!r}; choose one of {sorted(OFFICIAL)}')
    return copy.deepcopy(_official_net(key, batch))


def render_official_prototxt(key: str, batch: int = 1) -> str:
    """The authors' network as prototxt text (``batch`` is the Input layer's first dimension)."""
    return format_prototxt(official_net(key, batch)) + '\n'


# ---------------------------------------------------------------------------------------------------------
# comparing a prototxt with the official networks
# ---------------------------------------------------------------------------------------------------------

class LayerSignature(NamedTuple):
    """What a layer computes: its name, type, inputs, outputs and settings (Caffe's defaults filled in)."""
    name: str
    type: str
    bottom: Tuple[str, ...]
    top: Tuple[str, ...]
    settings: Tuple[Tuple[str, object], ...]


def _hw(param: Message, field: str, default: Optional[int]) -> Tuple[Optional[int], ...]:
    """A spatial setting as (h, w): ``field: k`` (both), ``field: h field: w``, or ``field_h`` / ``field_w``."""
    if f'{field}_h' in param or f'{field}_w' in param:
        return param.get(f'{field}_h', default), param.get(f'{field}_w', default)
    values = param.all(field) or [default]
    return (values[0], values[-1]) if len(values) <= 2 else tuple(values)


def _settings(layer: Message) -> Dict[str, object]:
    """The settings that change what a layer computes, by Caffe's field names and defaults (caffe.proto)."""
    kind = layer.get('type')
    param_field = {
        'Convolution': 'convolution_param', 'Pooling': 'pooling_param', 'Eltwise': 'eltwise_param',
        'Reshape': 'reshape_param', 'Softmax': 'softmax_param', 'Slice': 'slice_param', 'Scale': 'scale_param',
        'InnerProduct': 'inner_product_param', 'ReLU': 'relu_param'}.get(kind)
    p = layer.get(param_field, Message()) if param_field else Message()
    if kind == 'Convolution':
        return dict(num_output=p.get('num_output'), bias_term=p.get('bias_term', True),
                    kernel=_hw(p, 'kernel_size', None), stride=_hw(p, 'stride', 1), pad=_hw(p, 'pad', 0),
                    dilation=_hw(p, 'dilation', 1), group=p.get('group', 1), axis=p.get('axis', 1))
    if kind == 'Pooling':
        is_global = p.get('global_pooling', False)
        return dict(pool=str(p.get('pool', 'MAX')), global_pooling=is_global,
                    kernel=None if is_global else _hw(p, 'kernel_size', None), stride=_hw(p, 'stride', 1),
                    pad=_hw(p, 'pad', 0), round_mode=str(p.get('round_mode', 'CEIL')))
    if kind == 'Eltwise':
        return dict(operation=str(p.get('operation', 'SUM')), coeff=tuple(p.all('coeff')))
    if kind == 'Reshape':
        return dict(dim=tuple(p.get('shape', Message()).all('dim')), axis=p.get('axis', 0),
                    num_axes=p.get('num_axes', -1))
    if kind == 'Slice':
        return dict(axis=p.get('axis', p.get('slice_dim', 1)), slice_point=tuple(p.all('slice_point')))
    if kind == 'Scale':
        return dict(axis=p.get('axis', 1), num_axes=p.get('num_axes', 1), bias_term=p.get('bias_term', False))
    if kind == 'InnerProduct':
        return dict(num_output=p.get('num_output'), bias_term=p.get('bias_term', True), axis=p.get('axis', 1),
                    transpose=p.get('transpose', False))
    if kind == 'Softmax':
        return dict(axis=p.get('axis', 1))
    if kind == 'ReLU':
        return dict(negative_slope=float(p.get('negative_slope', 0.0)))
    return {}


def layer_signature(layer: Message) -> LayerSignature:
    return LayerSignature(
        str(layer.get('name', '')), str(layer.get('type', '')), tuple(layer.all('bottom')), tuple(layer.all('top')),
        tuple(sorted(_settings(layer).items())))


def computing_layers(net: Message) -> List[Message]:
    """The layers that compute the network: not data, loss or metric layers, nor a deploy file's final Softmax."""
    layers = [layer for layer in net.all('layer') if layer.get('type') not in IGNORED_TYPES]
    if layers and layers[-1].get('type') == 'Softmax' and len(layers) > 1 and \
            tuple(layers[-1].all('bottom')) == tuple(layers[-2].all('top')):
        layers = layers[:-1]  # 'prob' of a deploy prototxt: probabilities instead of logits, same network
    return layers


@lru_cache(maxsize=None)
def _official_signatures(key: str) -> Tuple[LayerSignature, ...]:
    return tuple(layer_signature(layer) for layer in computing_layers(_official_net(key, 1)))


def _common_prefix(a: Tuple[LayerSignature, ...], b: Tuple[LayerSignature, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _difference(got: LayerSignature, want: LayerSignature) -> str:
    for field in ('name', 'type', 'bottom', 'top'):
        if getattr(got, field) != getattr(want, field):
            return f'its {field} is {getattr(got, field)!r} where the official one has {getattr(want, field)!r}'
    a, b = dict(got.settings), dict(want.settings)
    key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
    return f'its {key} is {a.get(key)!r} where the official one has {b.get(key)!r}'


def match_official(net: Message, source: str) -> OfficialVariant:
    """Which official network ``net`` is, or a ``CaffeError`` naming the first layer that differs.

    Compared: every computing layer's name, type, bottoms, tops and settings, in order. Not compared:
    data, loss and metric layers, training-only fields (learning rates, fillers, momentum) and BatchNorm's
    eps (the converter reads it).
    """
    if 'layers' in net and 'layer' not in net:
        raise CaffeError(f"{source}: uses Caffe's pre-2015 V1 layer format; upgrade it with Caffe's "
                         'upgrade_net_proto_text tool first')
    got = tuple(layer_signature(layer) for layer in computing_layers(net))
    best, best_prefix = next(iter(OFFICIAL.values())), -1
    for variant in OFFICIAL.values():
        want = _official_signatures(variant.key)
        prefix = _common_prefix(got, want)
        if prefix == len(got) == len(want):
            return variant
        if prefix > best_prefix:
            best, best_prefix = variant, prefix
    want = _official_signatures(best.key)
    if best_prefix == len(got):
        what = (f'ends after {len(got)} computing layers; the official {best.title} goes on with '
                f'{want[best_prefix].name!r}' if got else 'has no computing layers')
    elif best_prefix == len(want):
        what = f'has a layer {got[best_prefix].name!r} after the end of the official {best.title}'
    else:
        what = (f'layer {got[best_prefix].name!r} (computing layer {best_prefix + 1}) differs from the official '
                f'{best.title}: {_difference(got[best_prefix], want[best_prefix])}')
    raise CaffeError(
        f'{source}: not the authors\' SKNet-50 or SKNet-101: {what}. The converter takes their prototxts as '
        f'published ({CAFFE_REPO}, {", ".join(s.prototxt for s in CAFFE_SOURCES.values())}), whose layer names '
        f'it maps to timm.')
