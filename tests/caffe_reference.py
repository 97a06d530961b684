"""Caffe without Caffe, for the tests, and independent of ``timm_sknet.caffe``.

- :func:`caffe_messages`: the caffe.proto messages an SKNet prototxt and caffemodel use, built at run time
  for the real ``protobuf`` library (field names, numbers, types and defaults of Caffe's public caffe.proto,
  BatchNormParameter as the SKNet authors extended it). Prototxts are parsed with protobuf's own text-format
  parser, not the package's.
- :func:`caffemodel_bytes`: a fast encoder of NetParameter weights (numpy ``tobytes`` for the packed floats;
  protobuf's Python API would need minutes for 49 M floats). A test checks protobuf decodes it.
- :func:`random_blobs`: weights for every layer of a parsed net, shaped by running the net on the meta device.
- :func:`caffe_forward`: a float64 interpreter of the layers SKNet uses, written from Caffe's layer
  definitions (Convolution with groups and dilation, CuDNNBatchNorm, ReLU, Pooling with Caffe's output-size
  rounding, Eltwise, Reshape, Softmax, Slice, Scale, Axpy, InnerProduct).
"""
import math
import struct
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

# (field, number, type, label, default); type is a scalar type name, an enum 'enum:Name' or a message name
_O, _R = 'optional', 'repeated'
_SCHEMA = {
    'BlobShape': [('dim', 1, 'int64', _R, None)],
    'BlobProto': [('shape', 7, 'BlobShape', _O, None), ('data', 5, 'float', _R, None),
                  ('double_data', 8, 'double', _R, None), ('num', 1, 'int32', _O, None),
                  ('channels', 2, 'int32', _O, None), ('height', 3, 'int32', _O, None),
                  ('width', 4, 'int32', _O, None)],
    'NetParameter': [('name', 1, 'string', _O, None), ('layer', 100, 'LayerParameter', _R, None)],
    'ParamSpec': [('lr_mult', 3, 'float', _O, None), ('decay_mult', 4, 'float', _O, None)],
    'LayerParameter': [
        ('name', 1, 'string', _O, None), ('type', 2, 'string', _O, None), ('bottom', 3, 'string', _R, None),
        ('top', 4, 'string', _R, None), ('param', 6, 'ParamSpec', _R, None), ('blobs', 7, 'BlobProto', _R, None),
        ('accuracy_param', 102, 'AccuracyParameter', _O, None),
        ('convolution_param', 106, 'ConvolutionParameter', _O, None),
        ('eltwise_param', 110, 'EltwiseParameter', _O, None),
        ('inner_product_param', 117, 'InnerProductParameter', _O, None),
        ('pooling_param', 121, 'PoolingParameter', _O, None), ('relu_param', 123, 'ReLUParameter', _O, None),
        ('softmax_param', 125, 'SoftmaxParameter', _O, None), ('slice_param', 126, 'SliceParameter', _O, None),
        ('reshape_param', 133, 'ReshapeParameter', _O, None),
        ('batch_norm_param', 139, 'BatchNormParameter', _O, None),
        ('scale_param', 142, 'ScaleParameter', _O, None), ('input_param', 143, 'InputParameter', _O, None)],
    'AccuracyParameter': [('top_k', 1, 'uint32', _O, '1')],
    'BatchNormParameter': [('frozen', 1, 'bool', _O, None), ('momentum', 2, 'float', _O, '0.999'),
                           ('eps', 3, 'float', _O, '1e-5')],
    'ConvolutionParameter': [
        ('num_output', 1, 'uint32', _O, None), ('bias_term', 2, 'bool', _O, 'true'), ('pad', 3, 'uint32', _R, None),
        ('kernel_size', 4, 'uint32', _R, None), ('group', 5, 'uint32', _O, '1'), ('stride', 6, 'uint32', _R, None),
        ('dilation', 18, 'uint32', _R, None)],
    'EltwiseParameter': [('operation', 1, 'enum:EltwiseParameter.EltwiseOp', _O, 'SUM'), ('coeff', 2, 'float', _R, None)],
    'InnerProductParameter': [('num_output', 1, 'uint32', _O, None), ('bias_term', 2, 'bool', _O, 'true'),
                              ('axis', 5, 'int32', _O, '1')],
    'PoolingParameter': [
        ('pool', 1, 'enum:PoolingParameter.PoolMethod', _O, 'MAX'), ('kernel_size', 2, 'uint32', _O, None),
        ('stride', 3, 'uint32', _O, '1'), ('pad', 4, 'uint32', _O, '0'), ('engine', 11, 'enum:PoolingParameter.Engine', _O, None),
        ('global_pooling', 12, 'bool', _O, 'false')],
    'ReLUParameter': [('negative_slope', 1, 'float', _O, '0')],
    'SoftmaxParameter': [('axis', 2, 'int32', _O, '1')],
    'SliceParameter': [('axis', 3, 'int32', _O, '1'), ('slice_point', 2, 'uint32', _R, None)],
    'ReshapeParameter': [('shape', 1, 'BlobShape', _O, None), ('axis', 2, 'int32', _O, '0'),
                         ('num_axes', 3, 'int32', _O, '-1')],
    'ScaleParameter': [('axis', 1, 'int32', _O, '1'), ('num_axes', 2, 'int32', _O, '1'),
                       ('bias_term', 4, 'bool', _O, 'false')],
    'InputParameter': [('shape', 1, 'BlobShape', _R, None)],
}
# enums nested in their message, as in caffe.proto (enum values share their parent's scope)
_ENUMS = {'EltwiseParameter.EltwiseOp': ['PROD', 'SUM', 'MAX'],
          'PoolingParameter.PoolMethod': ['MAX', 'AVE', 'STOCHASTIC'],
          'PoolingParameter.Engine': ['DEFAULT', 'CAFFE', 'CUDNN']}
_CACHE: Dict[str, type] = {}


def caffe_messages() -> Dict[str, type]:
    """Message classes by name (``NetParameter``, ``LayerParameter``, ``BlobProto``, ...), made once."""
    if _CACHE:
        return _CACHE
    fd = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name='caffe_subset_for_tests.proto', package='caffe', syntax='proto2')
    for name, fields in _SCHEMA.items():
        msg = file.message_type.add(name=name)
        for enum_name, values in _ENUMS.items():
            if enum_name.startswith(f'{name}.'):
                enum = msg.enum_type.add(name=enum_name.split('.')[1])
                for i, value in enumerate(values):
                    enum.value.add(name=value, number=i)
        for field, number, kind, label, default in fields:
            f = msg.field.add(name=field, number=number,
                              label=fd.LABEL_REPEATED if label == _R else fd.LABEL_OPTIONAL)
            if kind.startswith('enum:'):
                f.type, f.type_name = fd.TYPE_ENUM, f'.caffe.{kind[5:]}'
            elif kind in _SCHEMA:
                f.type, f.type_name = fd.TYPE_MESSAGE, f'.caffe.{kind}'
            else:
                f.type = getattr(fd, f'TYPE_{kind.upper()}')
            if default is not None:
                f.default_value = default
            if label == _R and kind in ('int64', 'float', 'double'):
                f.options.packed = True  # caffe.proto's [packed = true] on dim, data, double_data
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    for name in _SCHEMA:
        _CACHE[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f'caffe.{name}'))
    return _CACHE


def parse_net(text: str):
    """A prototxt parsed by protobuf's text-format parser into a NetParameter."""
    return text_format.Parse(text, caffe_messages()['NetParameter']())


# ---------------------------------------------------------------------------------------------------------
# writing weights
# ---------------------------------------------------------------------------------------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob_bytes(array: np.ndarray) -> bytes:
    dims = b''.join(_varint(d) for d in array.shape)
    shape = _length_delimited(1, dims)
    data = np.ascontiguousarray(array, dtype='<f4').tobytes()
    return _length_delimited(7, shape) + _length_delimited(5, data)


def caffemodel_bytes(layers: Sequence[Tuple[str, str, Sequence[np.ndarray]]], name: str = 'net') -> bytes:
    """A NetParameter with one LayerParameter (name, type, blobs) per entry, as Caffe writes a caffemodel."""
    parts = [_length_delimited(1, name.encode())]
    for layer_name, layer_type, blobs in layers:
        body = _length_delimited(1, layer_name.encode()) + _length_delimited(2, layer_type.encode())
        body += b''.join(_length_delimited(7, _blob_bytes(b)) for b in blobs)
        parts.append(_length_delimited(100, body))
    return b''.join(parts)


assert _varint(300) == b'\xac\x02' and struct.pack('<f', 1.0) == np.float32(1).tobytes()


# ---------------------------------------------------------------------------------------------------------
# the interpreter
# ---------------------------------------------------------------------------------------------------------

def _caffe_pool_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooled size: rounded up, then one less if the last window would start in the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool(layer, x: torch.Tensor) -> torch.Tensor:
    p = layer.pooling_param
    method = caffe_messages()['PoolingParameter'].DESCRIPTOR.fields_by_name['pool'].enum_type.values_by_number[
        p.pool].name
    if p.global_pooling:
        return x.amax((2, 3), keepdim=True) if method == 'MAX' else x.mean((2, 3), keepdim=True)
    k, s, pad = p.kernel_size, p.stride, p.pad
    out_h, out_w = (_caffe_pool_size(d, k, s, pad) for d in x.shape[2:])
    # windows start at i * s - pad; pad past the image so that every window exists, then pool without rounding
    extra_h = max(0, (out_h - 1) * s + k - x.shape[2] - pad)
    extra_w = max(0, (out_w - 1) * s + k - x.shape[3] - pad)
    if method == 'MAX':  # Caffe's max ignores what lies outside the image
        x = F.pad(x, (pad, extra_w, pad, extra_h), value=-math.inf)
        return F.max_pool2d(x, k, s)[:, :, :out_h, :out_w]
    assert pad == 0 and extra_h == extra_w == 0, 'average pooling with overhang is not needed for SKNet'
    return F.avg_pool2d(x, k, s)


def _reshape(layer, x: torch.Tensor) -> torch.Tensor:
    p = layer.reshape_param
    assert p.axis == 0 and p.num_axes == -1
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(p.shape.dim)]
    return x.reshape(dims)


def _scale(layer, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    axis = layer.scale_param.axis
    shape = [1] * axis + list(factor.shape) + [1] * (x.dim() - axis - factor.dim())
    return x * factor.reshape(shape)


def _batchnorm(layer, x: torch.Tensor, blobs: List[torch.Tensor]) -> torch.Tensor:
    scale, bias, mean, var = (b.reshape(1, -1, 1, 1) for b in blobs)
    eps = max(layer.batch_norm_param.eps, 1e-5)  # cuDNN's minimum
    return (x - mean) / torch.sqrt(var + eps) * scale + bias


def _convolution(layer, x: torch.Tensor, blobs: List[torch.Tensor]) -> torch.Tensor:
    p = layer.convolution_param
    one = lambda values, default: values[0] if values else default  # noqa: E731  (square kernels only here)
    return F.conv2d(x, blobs[0], blobs[1] if p.bias_term else None, one(p.stride, 1), one(p.pad, 0),
                    one(p.dilation, 1), p.group)


def _inner_product(layer, x: torch.Tensor, blobs: List[torch.Tensor]) -> torch.Tensor:
    out = x.reshape(x.shape[0], -1) @ blobs[0].reshape(blobs[0].shape[0], -1).T
    return out + blobs[1] if layer.inner_product_param.bias_term else out


_WEIGHTED = {'Convolution': _convolution, 'CuDNNBatchNorm': _batchnorm, 'InnerProduct': _inner_product}
_SKIPPED = {'Input', 'SoftmaxWithLoss', 'Accuracy'}


def _run_layer(layer, bottoms: List[torch.Tensor], blobs: List[torch.Tensor]) -> List[torch.Tensor]:
    kind = layer.type
    if kind in _WEIGHTED:
        return [_WEIGHTED[kind](layer, bottoms[0], blobs)]
    if kind == 'ReLU':
        return [bottoms[0].clamp_min(0) + layer.relu_param.negative_slope * bottoms[0].clamp_max(0)]
    if kind == 'Pooling':
        return [_pool(layer, bottoms[0])]
    if kind == 'Eltwise':
        assert layer.eltwise_param.operation == 1 and not layer.eltwise_param.coeff  # SUM
        return [sum(bottoms[1:], bottoms[0])]
    if kind == 'Reshape':
        return [_reshape(layer, bottoms[0])]
    if kind == 'Softmax':
        return [torch.softmax(bottoms[0], dim=layer.softmax_param.axis)]
    if kind == 'Slice':
        p = layer.slice_param
        points = [0, *p.slice_point, bottoms[0].shape[p.axis]]
        return [bottoms[0].narrow(p.axis, a, b - a) for a, b in zip(points, points[1:])]
    if kind == 'Scale':
        return [_scale(layer, bottoms[0], bottoms[1])]
    if kind == 'Axpy':  # top = a * x + y, a of shape (N, C, 1, 1)
        a, x, y = bottoms
        return [a.reshape(a.shape[0], a.shape[1], 1, 1) * x + y]
    raise NotImplementedError(kind)


def caffe_forward(net, blobs: Dict[str, List[np.ndarray]], data: torch.Tensor,
                  make_blobs: Callable[[object, torch.Tensor], List[np.ndarray]] = None) -> Dict[str, torch.Tensor]:
    """Run ``net`` (a protobuf NetParameter) on ``data`` (the ``data`` blob); return every blob by name.

    Computes in ``data``'s dtype. With ``make_blobs``, a weighted layer that has no blobs yet gets
    ``make_blobs(layer, its input)`` first (so a run can create the weights it uses).
    """
    values = {'data': data}
    for layer in net.layer:
        if layer.type in _SKIPPED:
            continue
        bottoms = [values[b] for b in layer.bottom]
        if layer.type in _WEIGHTED and layer.name not in blobs:
            blobs[layer.name] = make_blobs(layer, bottoms[0])
        weights = [torch.as_tensor(b).to(data.dtype) for b in blobs.get(layer.name, [])]
        for top, value in zip(layer.top, _run_layer(layer, bottoms, weights)):
            values[top] = value
    return values


def _blob_shapes(layer, bottom: torch.Tensor) -> List[Tuple[int, ...]]:
    channels = bottom.shape[1]
    if layer.type == 'Convolution':
        p = layer.convolution_param
        k = p.kernel_size[0]
        return [(p.num_output, channels // p.group, k, k)] + ([(p.num_output,)] if p.bias_term else [])
    p = layer.inner_product_param
    return [(p.num_output, int(np.prod(bottom.shape[1:])))] + ([(p.num_output,)] if p.bias_term else [])


def random_blobs(net, seed: int = 0, input_size: int = 224) -> Dict[str, List[np.ndarray]]:
    """Random weights for every weighted layer, with BatchNorm statistics drawn around the data's.

    Convolutions and InnerProduct: He-normal (biases 0.1-normal; the SK select convolution ``B_fc2`` at 0.3 of
    that, so the attention spreads over 0-1 instead of saturating). BatchNorm: scale 0.5-1.2 (0.2-0.5 at the
    end of a residual branch, so 33 blocks do not add up to huge logits) and bias random;
    mean and variance those of the layer's input on a random image (for the attention's 1x1 maps the
    second moment), perturbed (mean by 0.2 sd, variance by a factor 0.5-2), so that every activation stays of order 1 through 100 layers while every blob still
    matters: a blob mapped to the wrong place shows in the logits.
    """
    rng = np.random.default_rng(seed)

    def make(layer, bottom: torch.Tensor) -> List[np.ndarray]:
        if layer.type == 'CuDNNBatchNorm':
            c = bottom.shape[1]
            mean = bottom.mean((0, 2, 3)).numpy()
            if bottom.shape[2] * bottom.shape[3] > 1:
                var = bottom.var((0, 2, 3), unbiased=False).numpy()
            else:  # the attention's pooled 1x1 maps: one value per channel says nothing about the spread
                var = bottom.square().mean((0, 2, 3)).numpy()
            var = var * rng.uniform(0.5, 2.0, c) + 1e-3
            mean = mean + rng.normal(0, 0.2, c) * np.sqrt(var)
            gain = (0.2, 0.5) if layer.name.endswith('1x1_increase/bn') else (0.5, 1.2)  # end of a residual branch
            parts = [rng.uniform(*gain, c), rng.normal(0, 0.2, c), mean, var]
            return [p.astype(np.float32).reshape(1, c, 1, 1) for p in parts]
        shapes = _blob_shapes(layer, bottom)
        std = math.sqrt(2 / np.prod(shapes[0][1:])) * (0.3 if layer.name.endswith('/B_fc2') else 1.0)
        weight = rng.standard_normal(shapes[0], dtype=np.float32) * np.float32(std)
        return [weight] + [rng.normal(0, 0.1, s).astype(np.float32) for s in shapes[1:]]

    images = torch.as_tensor(rng.uniform(-120, 130, (1, 3, input_size, input_size)), dtype=torch.float32)
    blobs: Dict[str, List[np.ndarray]] = {}
    with torch.no_grad():
        caffe_forward(net, blobs, images, make)
    return blobs


def blob_list(net, blobs: Dict[str, List[np.ndarray]]) -> List[Tuple[str, str, List[np.ndarray]]]:
    """(name, type, blobs) of every layer of ``net`` in order, as a caffemodel lists them (blobless ones too)."""
    return [(layer.name, layer.type, blobs.get(layer.name, [])) for layer in net.layer]
