"""Read the weights of a ``.caffemodel`` without Caffe: the few fields of three messages of caffe.proto.

A caffemodel is a serialised ``NetParameter``. The converter needs only, per layer, its name, its type and
its parameter blobs; every other field (the training parameters, the layer settings, which the prototxt
gives) is skipped. Field numbers, from Caffe's public ``caffe.proto``:

- ``NetParameter``: ``layer`` = 100 (``LayerParameter``), ``layers`` = 2 (the pre-2015 V1
  format, whose enum layer types cannot name CuDNNBatchNorm or Axpy, so no SKNet file uses it).
- ``LayerParameter``: ``name`` = 1, ``type`` = 2, ``blobs`` = 7 (``BlobProto``).
- ``BlobProto``: ``shape`` = 7 (``BlobShape``: ``dim`` = 1, packed int64), ``data`` = 5 (packed float),
  ``double_data`` = 8 (packed double), and the deprecated 4-D ``num`` / ``channels`` / ``height`` /
  ``width`` = 1 / 2 / 3 / 4, used when ``shape`` is absent.
"""
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from . import wire
from .errors import CaffeError

__all__ = ['CaffeLayer', 'parse_caffemodel', 'read_caffemodel']

_NET_V1_LAYERS, _NET_LAYER = 2, 100
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7
_BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8
_SHAPE_DIM = 1


class CaffeLayer(NamedTuple):
    """One layer of a caffemodel: its name, its type and its parameter blobs (float32, in Caffe's shapes)."""
    name: str
    type: str
    blobs: List[np.ndarray]


class _FormatError(Exception):
    """What is wrong and where (byte offset in the file); turned into a ``CaffeError`` naming the file."""

    def __init__(self, message: str, offset: int, layer: Optional[str] = None):
        super().__init__(message)
        self.offset, self.layer = offset, layer


def _text(field: wire.Field, what: str) -> str:
    if field.wire_type != wire.LENGTH_DELIMITED:
        raise _FormatError(f'{what} is not a string', field.offset)
    try:
        return bytes(field.value).decode('utf-8')
    except UnicodeDecodeError:
        raise _FormatError(f'{what} is not UTF-8 text', field.offset) from None


def _blob_shape(items: Dict[int, List[wire.Field]], count: int) -> Tuple[int, ...]:
    if _BLOB_SHAPE in items:
        shape = items[_BLOB_SHAPE][-1]
        return tuple(d for dim in wire.fields(shape.value, shape.payload_offset) if dim.number == _SHAPE_DIM
                     for d in wire.packed_varints(dim))
    if any(n in items for n in _BLOB_LEGACY_DIMS):
        return tuple(items[n][-1].value if n in items else 0 for n in _BLOB_LEGACY_DIMS)
    return (count,)


def _blob(field: wire.Field) -> np.ndarray:
    if field.wire_type != wire.LENGTH_DELIMITED:
        raise _FormatError('a blob is not a message', field.offset)
    items: Dict[int, List[wire.Field]] = {}
    for item in wire.fields(field.value, field.payload_offset):
        items.setdefault(item.number, []).append(item)
    if _BLOB_DATA in items:
        values = wire.repeated_reals(items[_BLOB_DATA], '<f4')
    else:
        values = wire.repeated_reals(items.get(_BLOB_DOUBLE_DATA, []), '<f8').astype(np.float32)
    shape = _blob_shape(items, values.size)
    if int(np.prod(shape, dtype=np.int64)) != values.size:
        raise _FormatError(f'a blob of shape {shape} holds {values.size} values', field.offset)
    return values.reshape(shape)


def _layer(field: wire.Field) -> CaffeLayer:
    if field.wire_type != wire.LENGTH_DELIMITED:
        raise _FormatError('field 100 (layer) is not a message', field.offset)
    name, type_, blobs = None, '', []
    try:
        for item in wire.fields(field.value, field.payload_offset):
            if item.number == _LAYER_NAME:
                name = _text(item, 'a layer name')
            elif item.number == _LAYER_TYPE and item.wire_type == wire.LENGTH_DELIMITED:
                type_ = _text(item, 'a layer type')
            elif item.number == _LAYER_BLOBS:
                blobs.append(_blob(item))
    except wire.WireError as e:
        raise _FormatError(str(e), e.offset, name) from None
    except _FormatError as e:
        e.layer = e.layer or name
        raise
    if name is None:
        raise _FormatError('a layer without a name', field.offset)
    return CaffeLayer(name, type_, blobs)


def parse_caffemodel(data: Union[bytes, memoryview], source: str = '<caffemodel>') -> Dict[str, CaffeLayer]:
    """The layers of a serialised ``NetParameter``, by name, in file order.

    Raises:
        CaffeError: bytes that are not a caffemodel (a truncated download, another file format, the V1 layer
            format, no layers, two layers of one name carrying weights), naming ``source``, the byte offset
            and, where one was being read, the layer.
    """
    layers: Dict[str, CaffeLayer] = {}
    try:
        for field in wire.fields(data):
            if field.number == _NET_V1_LAYERS and field.wire_type == wire.LENGTH_DELIMITED:
                raise _FormatError("uses Caffe's pre-2015 V1 layer format; upgrade it with Caffe's "
                                   'upgrade_net_proto_binary tool first', field.offset)
            if field.number != _NET_LAYER:
                continue
            layer = _layer(field)
            if layer.name in layers and (layer.blobs or layers[layer.name].blobs):
                raise _FormatError('two layers have this name', field.offset, layer.name)
            if layer.name not in layers or layer.blobs:
                layers[layer.name] = layer
    except wire.WireError as e:
        cut = _first_name(e.partial) if e.number == _NET_LAYER else None  # the file ends inside this layer
        raise _caffe_error(source, _FormatError(str(e), e.offset, cut)) from None
    except _FormatError as e:
        raise _caffe_error(source, e) from None
    if not layers:
        raise CaffeError(f'{source}: holds no Caffe layers; it is not a .caffemodel (a serialised NetParameter)')
    return layers


def _first_name(partial: Union[bytes, memoryview]) -> Optional[str]:
    """The name of a layer of which only the first bytes exist, if they hold it."""
    try:
        for field in wire.fields(partial):
            if field.number == _LAYER_NAME:
                return _text(field, 'a layer name')
    except (wire.WireError, _FormatError):
        return None
    return None


def _caffe_error(source: str, e: _FormatError) -> CaffeError:
    where = f'layer {e.layer!r}, ' if e.layer else ''
    return CaffeError(
        f'{source}: not a valid caffemodel ({where}byte {e.offset}: {e}). If it is the authors\' file, the '
        f'download is incomplete: download it again; otherwise pass the .caffemodel, not another file.')


def read_caffemodel(path: Union[str, Path]) -> Dict[str, CaffeLayer]:
    """:func:`parse_caffemodel` of the file at ``path``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CaffeError(f'{path}: no such file; give the path of the .caffemodel') from None
    except OSError as e:
        raise CaffeError(f'{path}: cannot be read ({e.strerror or e})') from None
    return parse_caffemodel(data, str(path))
