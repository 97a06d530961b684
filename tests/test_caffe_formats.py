"""The converter's own readers of Caffe's files agree with the real protobuf library, and fail clearly.

- ``.prototxt``: ``timm_sknet.caffe.prototxt`` against ``google.protobuf.text_format`` on the generated
  SKNet prototxts and on text using every construct of the text format the parser claims.
- ``.caffemodel``: ``timm_sknet.caffe.caffemodel`` against files serialised by protobuf (packed and
  unpacked floats, doubles, legacy 4-D shapes, fields it must skip), and the tests' own fast writer against
  protobuf's parser.
"""
import math
import re
import struct

import numpy as np
import pytest
from caffe_reference import _length_delimited, _varint, caffe_messages, caffemodel_bytes, parse_net

from timm_sknet.caffe import CaffeError, official_net, render_official_prototxt
from timm_sknet.caffe.caffemodel import parse_caffemodel
from timm_sknet.caffe.official import OFFICIAL, match_official
from timm_sknet.caffe.prototxt import Message, format_prototxt, parse_prototxt


def _as_fields(msg) -> dict:
    """A protobuf message as our parser's shape: field name -> list of values (enums by name)."""
    out = {}
    for field, value in msg.ListFields():
        repeated = field.is_repeated if hasattr(field, 'is_repeated') else field.label == field.LABEL_REPEATED
        values = list(value) if repeated else [value]
        if field.type == field.TYPE_MESSAGE:
            values = [_as_fields(v) for v in values]
        elif field.type == field.TYPE_ENUM:
            values = [field.enum_type.values_by_number[v].name for v in values]
        out[field.name] = values
    return out


def _same(ours, theirs) -> bool:
    """Our parsed values equal protobuf's (floats to float32 precision: protobuf stores float fields so)."""
    if isinstance(ours, Message):
        return isinstance(theirs, dict) and ours.fields.keys() == theirs.keys() and all(
            len(ours.fields[k]) == len(theirs[k]) and all(_same(a, b) for a, b in zip(ours.fields[k], theirs[k]))
            for k in theirs)
    if isinstance(ours, bool) or isinstance(theirs, bool):
        return ours is theirs
    if isinstance(ours, float) or isinstance(theirs, float):
        return math.isclose(ours, theirs, rel_tol=1e-6) or (math.isnan(ours) and math.isnan(theirs))
    return ours == theirs


@pytest.mark.parametrize('key', sorted(OFFICIAL))
def test_our_prototxt_parser_reads_the_generated_prototxts_as_protobuf_does(key):
    text = render_official_prototxt(key)
    assert _same(parse_prototxt(text), _as_fields(parse_net(text)))


def test_our_prototxt_parser_reads_every_text_format_construct_as_protobuf_does():
    text = '''# a comment
name: "a \\"quoted\\" name\\n" 'and' " more"   # adjacent strings are one string
layer {
  name: 'conv'  type: "Convolution"; bottom: ["data", 'extra'], top: "conv"
  param < lr_mult: 1 > param: { lr_mult: 2.5e-1 decay_mult: 0 }
  convolution_param: { num_output: 0x10 kernel_size: [3, 3] bias_term: False pad: 1, group: 2 }
  relu_param { negative_slope: -1.5E+0 }
  batch_norm_param { eps: 1e-5f frozen: t momentum: -inf }
  pooling_param { pool: AVE global_pooling: true }
}
layer { name: "second" }
'''
    ours = parse_prototxt(text)
    assert _same(ours, _as_fields(parse_net(text)))
    assert ours.get('name') == 'a "quoted" name\nand more'
    conv = ours.all('layer')[0].get('convolution_param')
    assert conv.all('kernel_size') == [3, 3] and conv.get('num_output') == 16 and conv.get('bias_term') is False


def test_generated_prototxts_round_trip_through_our_writer_and_parser():
    for key in OFFICIAL:
        net = official_net(key)
        assert parse_prototxt(format_prototxt(net)) == net
        assert match_official(parse_prototxt(render_official_prototxt(key)), 'x').key == key


@pytest.mark.parametrize('text, where', [
    ('layer {\n  name: "x"\n', '3:1: expected a field name or \'}\''),
    ('layer {\n  name "x"\n}\n', "2:8: expected ':' or '{'"),
    ('name: }', "1:7: expected a value"),
    ('name: "x" }', "1:11: expected a field name"),
    ('layer { bottom: [1 2] }', "1:20: expected ',' or ']'"),
    ('name: "x" \x01', '1:11: unexpected character'),
])
def test_prototxt_syntax_errors_name_file_line_and_column(text, where):
    with pytest.raises(CaffeError, match=re.escape(f'net.prototxt:{where}')):
        parse_prototxt(text, 'net.prototxt')


# ---------------------------------------------------------------------------------------------------------
# caffemodel
# ---------------------------------------------------------------------------------------------------------

def _protobuf_caffemodel(rng) -> tuple:
    """A NetParameter made with protobuf: shaped, legacy 4-D and double blobs, a blobless layer, fields to skip."""
    m = caffe_messages()
    net = m['NetParameter'](name='net')
    expected = {}
    conv = net.layer.add(name='conv1', type='Convolution', bottom=['data'], top=['conv1'])
    conv.param.add(lr_mult=1.0)
    conv.convolution_param.num_output = 4
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    blob = conv.blobs.add()
    blob.shape.dim.extend(weight.shape)
    blob.data.extend(weight.ravel().tolist())
    expected['conv1'] = ('Convolution', [weight])
    net.layer.add(name='relu', type='ReLU', bottom=['conv1'], top=['conv1'])
    bn = net.layer.add(name='conv1/bn', type='CuDNNBatchNorm')
    bn.batch_norm_param.eps = 1e-3
    stats = [rng.standard_normal((1, 4, 1, 1)).astype(np.float32) for _ in range(4)]
    for array in stats[:2]:  # the old 4-D fields
        legacy = bn.blobs.add(num=1, channels=4, height=1, width=1)
        legacy.data.extend(array.ravel().tolist())
    for array in stats[2:]:  # doubles
        double = bn.blobs.add()
        double.shape.dim.extend(array.shape)
        double.double_data.extend(array.astype(np.float64).ravel().tolist())
    expected['conv1/bn'] = ('CuDNNBatchNorm', stats)
    expected['relu'] = ('ReLU', [])
    return net.SerializeToString(), expected


def _assert_layers(layers, expected):
    assert sorted(layers) == sorted(expected)
    for name, (kind, blobs) in expected.items():
        assert layers[name].type == kind
        assert len(layers[name].blobs) == len(blobs)
        for ours, theirs in zip(layers[name].blobs, blobs):
            assert ours.shape == theirs.shape and ours.dtype == np.float32
            np.testing.assert_array_equal(ours, theirs)


def test_our_caffemodel_reader_reads_what_protobuf_writes():
    data, expected = _protobuf_caffemodel(np.random.default_rng(0))
    _assert_layers(parse_caffemodel(data), expected)


def test_our_caffemodel_reader_takes_unpacked_floats_and_dims():
    values = np.arange(6, dtype=np.float32)
    dims = _length_delimited(7, _varint(1 << 3) + _varint(2) + _varint(1 << 3) + _varint(3))  # dim: 2, dim: 3
    floats = b''.join(_varint(5 << 3 | 5) + struct.pack('<f', v) for v in values)
    layer = _length_delimited(1, b'ip') + _length_delimited(2, b'InnerProduct') + _length_delimited(7, dims + floats)
    layers = parse_caffemodel(_length_delimited(100, layer))
    np.testing.assert_array_equal(layers['ip'].blobs[0], values.reshape(2, 3))


def test_the_tests_caffemodel_writer_is_read_by_protobuf():
    rng = np.random.default_rng(1)
    layers = [('conv', 'Convolution', [rng.standard_normal((8, 2, 3, 3)).astype(np.float32)]),
              ('relu', 'ReLU', []),
              ('fc', 'InnerProduct', [rng.standard_normal((5, 8)).astype(np.float32),
                                      rng.standard_normal(5).astype(np.float32)])]
    net = caffe_messages()['NetParameter'].FromString(caffemodel_bytes(layers, name='n'))
    assert net.name == 'n' and [(x.name, x.type) for x in net.layer] == [(n, t) for n, t, _ in layers]
    for layer, (_, _, blobs) in zip(net.layer, layers):
        for blob, array in zip(layer.blobs, blobs):
            assert tuple(blob.shape.dim) == array.shape
            np.testing.assert_array_equal(np.array(blob.data, np.float32), array.ravel())


@pytest.mark.parametrize('data, message', [
    (b'', 'holds no Caffe layers'),
    (_length_delimited(1, b'only a name'), 'holds no Caffe layers'),
    (_length_delimited(2, _length_delimited(4, b'conv1')), 'V1 layer format.*upgrade_net_proto_binary'),
    (b'\xff' * 11, 'varint longer than 10 bytes'),
    (_varint(100 << 3 | 3), 'wire type 3'),
    (b'\x00\x01', 'field number 0'),
    (_length_delimited(100, _length_delimited(1, b'conv9') + _length_delimited(7, _length_delimited(
        7, _varint(1 << 3) + _varint(5)) + _length_delimited(5, b'\0' * 8))), "layer 'conv9'.*shape \\(5,\\) holds 2"),
    (_length_delimited(100, _length_delimited(1, b'\xff\xfe')), 'not UTF-8'),
    (_length_delimited(100, _length_delimited(1, b'a') + _length_delimited(7, b'')) * 2, "layer 'a'.*two layers"),
    (_length_delimited(100, _length_delimited(1, b'conv1') + _length_delimited(2, b'Convolution')
                       + _length_delimited(7, b'\x0a\x10'))[:-1], "layer 'conv1'.*truncated"),
])
def test_bad_caffemodel_bytes_give_one_clear_error(data, message):
    with pytest.raises(CaffeError, match=f'model.caffemodel: .*{message}'):
        parse_caffemodel(data, 'model.caffemodel')
