"""A reader of protobuf's binary wire format, written from the encoding spec (protobuf.dev, "Encoding").

A message is a sequence of fields, each a varint key ``(field_number << 3) | wire_type`` then a value:
wire type 0 a varint, 1 eight bytes, 2 a varint length then that many bytes (strings, nested messages,
packed repeated scalars), 5 four bytes. Types 3 and 4 (groups) are deprecated and appear in no Caffe file.
Nothing here knows a schema: :func:`fields` yields raw fields and the caller decides what they mean, which is
all a caffemodel reader needs (a few fields of three messages) and skips everything else for free.

Payloads are ``memoryview`` slices of the file's bytes: a 200 MB caffemodel is never copied field by field.
"""
from typing import Any, Iterator, List, NamedTuple, Tuple, Union

import numpy as np

__all__ = ['WireError', 'Field', 'fields', 'packed_varints', 'repeated_reals']

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not a valid protobuf encoding; ``offset`` is where it went wrong.

    When a length-delimited field runs past the end, ``number`` is its field number and ``partial`` the bytes
    of it that exist, so a reader can still say what was cut (a caffemodel names the layer).
    """

    def __init__(self, message: str, offset: int, number: int = 0, partial: Union[bytes, memoryview] = b''):
        super().__init__(message)
        self.offset, self.number, self.partial = offset, number, partial


class Field(NamedTuple):
    number: int
    wire_type: int
    # int for varints, the raw bytes (memoryview) for the other wire types: wire_type says which, which a type
    # checker cannot follow, so readers get Any and check wire_type themselves
    value: Any
    offset: int  # where the field's key starts in the file
    payload_offset: int  # where ``value`` starts in the file: the ``base`` of its own fields


def _varint(data: memoryview, pos: int, base: int = 0) -> Tuple[int, int]:
    """Decode the varint at ``pos``: (value, position after it). At most 10 bytes (64 bits)."""
    result = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise WireError('a varint runs past the end of the data (the file is truncated)', base + pos)
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError('a varint longer than 10 bytes', base + pos)


def fields(data: Union[bytes, memoryview], base: int = 0) -> Iterator[Field]:
    """Every field of the message encoded in ``data``, in order.

    ``base`` is where ``data`` starts in the file (a nested message's ``payload_offset``), so that offsets,
    in fields and in errors, are file offsets.

    Raises:
        WireError: an unknown wire type, a field number of 0, or a value running past the end.
    """
    data = memoryview(data)
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        key, pos = _varint(data, pos, base)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError('field number 0 (not protobuf data)', base + start)
        if wire_type == VARINT:
            value, pos = _varint(data, pos, base)
            yield Field(number, wire_type, value, base + start, base + start)
            continue
        if wire_type == LENGTH_DELIMITED:
            size, pos = _varint(data, pos, base)
        elif wire_type in (FIXED64, FIXED32):
            size = 8 if wire_type == FIXED64 else 4
        else:
            raise WireError(f'wire type {wire_type} in field {number} (not protobuf data, or groups)', base + start)
        if pos + size > end:
            raise WireError(f'field {number} needs {size} bytes but only {end - pos} are left (the file is truncated)',
                            base + start, number, data[pos:end])
        yield Field(number, wire_type, data[pos:pos + size], base + start, base + pos)
        pos += size


def packed_varints(field: Field) -> List[int]:
    """A repeated varint field (int32/int64) as signed 64-bit integers, packed or a single value."""
    if field.wire_type == VARINT:
        return [field.value - (1 << 64) if field.value >= 1 << 63 else field.value]
    if field.wire_type != LENGTH_DELIMITED:
        raise WireError(f'field {field.number} has wire type {field.wire_type}, not integers', field.offset)
    data, values, pos = field.value, [], 0
    while pos < len(data):
        value, pos = _varint(data, pos, field.payload_offset)
        values.append(value - (1 << 64) if value >= 1 << 63 else value)
    return values


def repeated_reals(items: List[Field], dtype: str) -> np.ndarray:
    """The values of a repeated ``float`` (``dtype='<f4'``) or ``double`` (``'<f8'``) field, in order.

    Writers may send the field packed (one length-delimited run) or as single fixed-width values, or both;
    a reader must accept every mix (encoding spec, "Packed Repeated Fields").
    """
    width = np.dtype(dtype).itemsize
    scalar_type = FIXED32 if width == 4 else FIXED64
    chunks = []
    for item in items:
        if item.wire_type not in (LENGTH_DELIMITED, scalar_type):
            raise WireError(f'field {item.number} has wire type {item.wire_type}, not a {dtype} array', item.offset)
        if len(item.value) % width:
            raise WireError(f'field {item.number}: {len(item.value)} bytes is not a whole number of {dtype}',
                            item.offset)
        chunks.append(np.frombuffer(item.value, dtype=dtype))
    if not chunks:
        return np.empty(0, dtype=dtype)
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0].copy()
